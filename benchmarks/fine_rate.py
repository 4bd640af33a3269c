"""Finer CPU-time sampling: the itimer vs per-thread perf events at 4, 1 and 0.25 ms.

    python benchmarks/fine_rate.py [--rounds 36] [--trials 5] [--repeat 5] [--json out.json]

The mixed guest of ``accuracy.py`` (two wasm loops, a 60-deep chain, a Python
host function that burns CPU, one that sleeps; ~1 s per run at the default
36 rounds), profiled with ``clock="cpu"`` by each tick source at each interval:

* delivered rate: ticks per CPU-second of the run (the itimer is capped at the
  kernel tick, so it is asked for 1 and 0.25 ms and raises them to 4 ms);
* overhead: the run's wall time over the same run unprofiled, interleaved;
* worst error: the largest |share - CPU truth share| over the parts, in
  percentage points (truth as in ``accuracy.py``).

Each cell is the median of ``--trials`` runs (modes interleaved) with the
spread (min-max).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sigprof  # noqa: E402  (accuracy puts the checkout first on sys.path)
from accuracy import (Guest, PARTS, arguments, ground_truth, inclusive, shares,  # noqa: E402
                      worst)

MODES = [(source, interval) for interval in (0.004, 0.001, 0.00025)
         for source in ("itimer", "perf")]


def run(guest: Guest, rounds: int, source: str, interval: float) -> Dict[str, float]:
    store, exports = guest.instance()
    args = guest.run_args(rounds)
    if source == "plain":
        w0 = time.perf_counter_ns()
        exports["run"](store, *args)
        return {"wall_ns": time.perf_counter_ns() - w0}
    with sigprof.profile(store, modules=[("accuracy", guest.module)], clock="cpu",
                         interval=interval, source=source) as prof:
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        exports["run"](store, *args)
        wall_ns, cpu_ns = time.perf_counter_ns() - w0, time.thread_time_ns() - c0
    rec = prof.recording
    assert rec is not None and rec.meta["tick_source"] == source
    stacks = [([f.name for f in funcs], w) for funcs, w in rec.iter_stacks()]
    return {"wall_ns": wall_ns, "rate": rec.meta["ticks"] / (cpu_ns / 1e9),
            "shares": shares(inclusive(stacks)), "samples": rec.samples}


def _cell(values: List[float], fmt: str = ".1f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    a = arguments(__doc__, rounds=36, trials=5)
    guest = Guest()
    truth = shares(ground_truth(guest, a.repeat)["cpu_ns"])
    results: Dict[str, List[Dict[str, float]]] = {f"{s} {i}": [] for s, i in MODES}
    plain: List[float] = []
    for _ in range(a.trials):
        plain.append(run(guest, a.rounds, "plain", 0)["wall_ns"])
        for source, interval in MODES:
            results[f"{source} {interval}"].append(run(guest, a.rounds, source, interval))
    base = statistics.median(plain)
    print(f"mixed guest, clock cpu, {a.rounds} rounds (~{base / 1e9:.2f} s): median (min-max) "
          f"of {a.trials} trials")
    print(f"{'source':<8}{'interval':>9}{'ticks per CPU-s':>22}{'overhead %':>20}"
          f"{'worst error pp':>20}{'samples':>9}")
    table = {}
    for source, interval in MODES:
        trials = results[f"{source} {interval}"]
        rate = [t["rate"] for t in trials]
        overhead = [100 * (t["wall_ns"] - p) / p for t, p in zip(trials, plain)]
        errors = [worst(t["shares"], truth) for t in trials]
        table[f"{source} {interval}"] = {"rate": rate, "overhead_pct": overhead,
                                         "worst_pp": errors,
                                         "shares": [t["shares"] for t in trials]}
        print(f"{source:<8}{interval * 1e3:>7g}ms{_cell(rate, '.0f'):>22}{_cell(overhead):>20}"
              f"{_cell(errors, '.2f'):>20}{statistics.median(t['samples'] for t in trials):>9.0f}")
    print("truth, % of CPU: " + ", ".join(f"{p} {truth[p]:.1f}" for p in PARTS))
    if a.json:
        Path(a.json).write_text(json.dumps({"truth": truth, "plain_wall_ns": plain,
                                            "modes": table}, indent=1))


if __name__ == "__main__":
    main()
