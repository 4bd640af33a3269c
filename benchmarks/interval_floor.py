"""The finest interval each tick source sustains: where the time a profile reports
stops being the time the guest took.

    python benchmarks/interval_floor.py [--cpu-ms 150] [--repeat 5] [--json out.json]

A wasm loop (``tests/guests/twin_a.wat``, ~``--cpu-ms`` of CPU) is run
unprofiled and then profiled, interleaved, at decreasing intervals, by each
tick source that can go below the kernel tick:

* ``perf`` -- per-thread perf task-clock events, ``clock="cpu"``;
* ``itimer`` -- ITIMER_REAL, ``clock="wall"`` (the CPU itimers are rounded up
  to whole kernel ticks, so they never go finer than 4 ms at HZ=250).

Per interval, the median over ``--repeat`` runs (with min-max), each against
the CPU time of an unprofiled run just before it (``time.thread_time_ns``: CPU,
so the other processes sharing the machine do not move it the way they move
wall time):

* ``cpu``: the profiled run's CPU time over the unprofiled run's -- what ticking
  costs the guest's thread, and so how much more time the profile reports than
  the guest needs;
* ``reported``: the time the profile reports (its samples' weights: CPU for
  perf, wall for the wall clock) over the unprofiled CPU time;
* ``accounted``: the reported time over the same clock measured around the
  profiled run (1: the samples account for the run; below 1: time lost, a ring
  that dropped samples);
* ``per tick``: the extra CPU per tick, (profiled - unprofiled) / ticks;
* ``dropped``: samples a full ring lost.

The floor is the finest interval whose median ``accounted`` is within
``--tolerance`` (5 %) of 1 and whose median ``cpu`` is at most
``--max-overhead`` (1.25x), as is every coarser interval's.  (With
``--max-overhead 1.05`` -- the guest's own CPU within 5 % -- it is 1 ms on the
2-core VM measured.)  The descent stops once a cell's median ``cpu`` passes
10x.  sigprof's own floor (``_timer.INTERVAL_FLOOR_S``) is
switched off while this runs, so the intervals asked for are the ones armed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import wasmtime  # noqa: E402

import sigprof  # noqa: E402
from sigprof import _timer  # noqa: E402

INTERVALS_US = (4000, 2000, 1000, 500, 250, 100, 50, 20, 10, 5, 2, 1)
GIVE_UP_OVERHEAD = 10.0          # a cell this slow ends the descent: finer ones only get worse
SOURCES = (("perf", "cpu"), ("itimer", "wall"))


def _clocks_ns() -> Tuple[int, int]:
    return time.thread_time_ns(), time.perf_counter_ns()


class Guest:
    def __init__(self) -> None:
        self.engine = sigprof.engine()
        self.module = wasmtime.Module.from_file(self.engine,
                                                str(ROOT / "tests" / "guests" / "twin_a.wat"))

    def instance(self) -> Any:
        store = wasmtime.Store(self.engine)
        store.set_epoch_deadline(sigprof.FAR_DEADLINE)
        run = wasmtime.Linker(self.engine).instantiate(store, self.module).exports(store)["run"]
        return store, run

    def plain_cpu_ns(self, iterations: int) -> int:
        store, run = self.instance()
        start = time.thread_time_ns()
        run(store, iterations)
        return time.thread_time_ns() - start

    def profiled(self, iterations: int, source: str, clock: str,
                 interval_s: float) -> Dict[str, float]:
        store, run = self.instance()
        with sigprof.profile(store, modules=[("twin_a", self.module)], clock=clock,
                             interval=interval_s, source=source,
                             python_frames=False) as prof:
            cpu0, wall0 = _clocks_ns()
            run(store, iterations)
            cpu1, wall1 = _clocks_ns()
        rec = prof.recording
        assert rec is not None and rec.meta["tick_source"] == source, rec.meta["tick_source"]
        armed = rec.meta["interval_s"]
        assert abs(armed - interval_s) < 1e-9, f"asked for {interval_s}, armed {armed}"
        return {"reported_ns": sum(rec.weights_ns()), "cpu_ns": cpu1 - cpu0,
                "measured_ns": cpu1 - cpu0 if clock == "cpu" else wall1 - wall0,
                "dropped": rec.dropped, "ticks": rec.meta["ticks"]}


def _cell(values: List[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-ms", type=float, default=150.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--max-overhead", type=float, default=1.25)
    parser.add_argument("--json")
    a = parser.parse_args()
    _timer.INTERVAL_FLOOR_S.clear()            # measure the sources themselves
    guest = Guest()
    probe = 20_000_000
    per_ms = probe / (guest.plain_cpu_ns(probe) / 1e6)
    iterations = int(per_ms * a.cpu_ms)
    print(f"guest: {iterations} iterations, ~{a.cpu_ms:g} ms CPU; {a.repeat} runs per cell; "
          f"kernel tick {_timer.kernel_tick() * 1e3:g} ms")
    results: Dict[str, Dict[int, Dict[str, List[float]]]] = {}
    for source, clock in SOURCES:
        results[source] = {}
        print(f"\n{source} (clock={clock}):")
        floor_us = None
        broken = False
        for interval_us in INTERVALS_US:
            cell: Dict[str, List[float]] = {"reported": [], "accounted": [], "cpu": [],
                                            "tick_cost_us": [], "dropped": []}
            for _ in range(a.repeat):
                true_ns = guest.plain_cpu_ns(iterations)
                got = guest.profiled(iterations, source, clock, interval_us * 1e-6)
                cell["reported"].append(got["reported_ns"] / true_ns)
                cell["accounted"].append(got["reported_ns"] / got["measured_ns"])
                cell["cpu"].append(got["cpu_ns"] / true_ns)
                cell["tick_cost_us"].append((got["cpu_ns"] - true_ns) / max(got["ticks"], 1)
                                            / 1e3)
                cell["dropped"].append(got["dropped"])
            results[source][interval_us] = cell
            within = (abs(statistics.median(cell["accounted"]) - 1) <= a.tolerance
                      and statistics.median(cell["cpu"]) <= a.max_overhead)
            broken = broken or not within
            if not broken:
                floor_us = interval_us
            print(f"{interval_us:>7} us  reported {_cell(cell['reported'], '.3f'):<20}"
                  f"accounted {_cell(cell['accounted'], '.3f'):<20}"
                  f"cpu {_cell(cell['cpu'], '.2f'):<18}"
                  f"per tick {_cell(cell['tick_cost_us'], '.0f')} us  "
                  f"dropped {_cell(cell['dropped'], '.0f')}"
                  f"{'' if within else '  <- beyond tolerance'}", flush=True)
            if statistics.median(cell["cpu"]) > GIVE_UP_OVERHEAD:
                break
        print(f"  floor for {source}: {floor_us} us (the finest interval whose medians, and "
              f"every coarser one's, account within {a.tolerance:.0%} and cost at most "
              f"{a.max_overhead:g}x the CPU)")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
