"""Finer CPU-time sampling: the itimer vs per-thread perf events at 4, 1 and 0.25 ms.

    python benchmarks/fine_rate.py [--rounds 36] [--trials 5] [--json out.json]

The parts of ``accuracy.py``'s mixed guest (two wasm loops, a 60-deep chain, a
Python host function that burns CPU, one that sleeps, short host calls in a
loop; ~1 s per run at the default 36 rounds), each round calling each part's
export from Python with its thread CPU time measured around the call, profiled
with ``clock="cpu"`` by each tick source at each interval:

* delivered rate: ticks per CPU-second of the run (the itimer is capped at the
  kernel tick, so it is asked for 1 and 0.25 ms and raises them to 4 ms);
* overhead: the run's wall time over the same run unprofiled, interleaved;
* worst error: the largest |share - CPU truth share| over the parts, in
  percentage points, the truth being each part's CPU measured around its own
  calls in the same run (so what the profiler's own hooks add to a part, short
  host calls above all, is in the truth too).

Beside them, ``perf record -e task-clock -c PERIOD --call-graph fp`` at the same
intervals: the same run in a child process under perf's own sampler, its wall
time over the same child's unprofiled (the reference issue 20 measures against;
perf's rate and accuracy are not read back).

Each cell is the median of ``--trials`` runs (modes interleaved) with the
spread (min-max).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sigprof  # noqa: E402  (accuracy puts the checkout first on sys.path)
from accuracy import (Guest, PARAMS, PARTS, arguments, inclusive, shares,  # noqa: E402
                      worst)

MODES = [(source, interval) for interval in (0.004, 0.001, 0.00025)
         for source in ("itimer", "perf")]


def drive(store, exports, rounds: int) -> Dict[str, int]:
    """``rounds`` rounds of every part; each part's thread CPU ns around its calls."""
    cpu = dict.fromkeys(PARTS, 0)
    calls = [(part, exports[part], PARAMS[part]) for part in PARTS]
    for _ in range(rounds):
        for part, export, param in calls:
            c0 = time.thread_time_ns()
            export(store, param)
            cpu[part] += time.thread_time_ns() - c0
    return cpu


def run(guest: Guest, rounds: int, source: str, interval: float) -> Dict[str, float]:
    store, exports = guest.instance()
    if source == "plain":
        w0 = time.perf_counter_ns()
        drive(store, exports, rounds)
        return {"wall_ns": time.perf_counter_ns() - w0}
    with sigprof.profile(store, modules=[("accuracy", guest.module)], clock="cpu",
                         interval=interval, source=source) as prof:
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        part_cpu = drive(store, exports, rounds)
        wall_ns, cpu_ns = time.perf_counter_ns() - w0, time.thread_time_ns() - c0
    rec = prof.recording
    assert rec is not None and rec.meta["tick_source"] == source
    stacks = [([f.name for f in funcs], w) for funcs, w in rec.iter_stacks()]
    return {"wall_ns": wall_ns, "rate": rec.meta["ticks"] / (cpu_ns / 1e9),
            "shares": shares(inclusive(stacks)), "truth": shares(part_cpu),
            "samples": rec.samples}


def child_wall_ns(rounds: int, interval: float, scratch: str) -> float:
    """The run's wall time in a child process, under ``perf record`` at ``interval``
    (0: unprofiled)."""
    child = [sys.executable, __file__, "--child", str(rounds)]
    if interval:
        child = ["perf", "record", "-q", "-e", "task-clock", "-c", str(round(interval * 1e9)),
                 "--call-graph", "fp", "-o", f"{scratch}/perf.data", "--", *child]
    proc = subprocess.run(child, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"fine_rate: {' '.join(child)}: {proc.stderr[-500:]}")
    return float(proc.stdout.split()[-1])


def _cell(values: List[float], fmt: str = ".1f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    if sys.argv[1:2] == ["--child"]:                 # the run, for perf record's rows
        print(run(Guest(), int(sys.argv[2]), "plain", 0)["wall_ns"])
        return
    a = arguments(__doc__, rounds=36, trials=5)
    guest = Guest()
    results: Dict[str, List[Dict[str, float]]] = {f"{s} {i}": [] for s, i in MODES}
    plain: List[float] = []
    child_plain: List[float] = []
    perf_record: Dict[float, List[float]] = {interval: [] for _, interval in MODES}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(a.trials):
            plain.append(run(guest, a.rounds, "plain", 0)["wall_ns"])
            for source, interval in MODES:
                results[f"{source} {interval}"].append(run(guest, a.rounds, source, interval))
            child_plain.append(child_wall_ns(a.rounds, 0, scratch))
            for interval in perf_record:
                perf_record[interval].append(child_wall_ns(a.rounds, interval, scratch))
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
        errors = [worst(t["shares"], t["truth"]) for t in trials]
        table[f"{source} {interval}"] = {"rate": rate, "overhead_pct": overhead,
                                         "worst_pp": errors,
                                         "shares": [t["shares"] for t in trials],
                                         "truth": [t["truth"] for t in trials]}
        print(f"{source:<8}{interval * 1e3:>7g}ms{_cell(rate, '.0f'):>22}{_cell(overhead):>20}"
              f"{_cell(errors, '.2f'):>20}{statistics.median(t['samples'] for t in trials):>9.0f}")
    for interval, walls in perf_record.items():
        overhead = [100 * (w - p) / p for w, p in zip(walls, child_plain)]
        table[f"perf-record {interval}"] = {"overhead_pct": overhead}
        print(f"{'perf rec':<8}{interval * 1e3:>7g}ms{'':>22}{_cell(overhead):>20}")
    truth = results[f"perf {MODES[-1][1]}"][-1]["truth"]
    print(f"truth (the last perf {MODES[-1][1] * 1e3:g} ms run), % of CPU: "
          + ", ".join(f"{p} {truth[p]:.1f}" for p in PARTS))
    if a.json:
        Path(a.json).write_text(json.dumps({"plain_wall_ns": plain, "modes": table}, indent=1))


if __name__ == "__main__":
    main()
