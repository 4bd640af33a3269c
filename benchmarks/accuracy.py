"""Accuracy against ground truth: sigprof (cpu, wall) vs wasmtime's GuestProfiler.

    python benchmarks/accuracy.py [--rounds 200] [--trials 3] [--repeat 5] [--json out.json]

The guest (accuracy.wat) runs, per round: two wasm loops of different size
(part_small, part_large), a 60-deep call chain ending in a loop (part_deep),
a Python host function that burns CPU (part_host_burn) and one that sleeps
(part_host_sleep).  Each part sits under its own wasm wrapper, so its share in
any profile is the inclusive time under that wrapper.

Ground truth: each part's export called on its own, unprofiled, in a fresh
store: thread CPU time (and wall time) per call, median of ``--repeat``
batches.  Truth share = part time / sum of parts (CPU shares for the cpu
clock and GuestProfiler, wall shares for the wall clock).

Profilers, all on the same ``run(rounds)`` in one process run:

* sigprof, clock="cpu" (ITIMER_VIRTUAL, 1 ms): CPU-weighted inclusive shares;
* sigprof, clock="wall" (ITIMER_REAL, 1 ms): wall-weighted, against wall truth;
* wasmtime's GuestProfiler driven as ``wasmtime run --profile=guest`` drives
  it: a thread bumps the epoch every 1 ms of wall time and the epoch callback
  calls ``wasmtime_guestprofiler_sample`` with the thread's CPU delta.  Its
  shares are read from the profile it writes, as the Firefox Profiler shows
  them (sample counts), and also weighted by its CPU deltas.

The worst error is the largest |profile share - truth share| over the parts,
in percentage points.  Each profiler runs ``--trials`` times, interleaved;
the table shows mean shares, and the worst error both of the mean and of the
worst single trial.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sigprof  # noqa: E402
from guestprofiler import NativeGuestProfiler  # noqa: E402

HERE = Path(__file__).resolve().parent
PARTS = ["part_small", "part_large", "part_deep", "part_host_burn", "part_host_sleep",
         "part_host_short"]
PARAMS = {"part_small": 3_000_000, "part_large": 12_000_000, "part_deep": 6_000_000,
          "part_host_burn": 60_000, "part_host_sleep": 3, "part_host_short": 400}


def burn_py(n: int) -> None:
    x = 0
    for i in range(n):
        x += i * i


def sleep_py(ms: int) -> None:
    time.sleep(ms / 1000)


def nop_py() -> None:
    pass


class Guest:
    def __init__(self):
        self.engine = sigprof.engine()
        self.module = wasmtime.Module.from_file(self.engine, str(HERE / "accuracy.wat"))

    def instance(self):
        store = wasmtime.Store(self.engine)
        store.set_epoch_deadline(sigprof.FAR_DEADLINE)
        linker = wasmtime.Linker(self.engine)
        i32 = wasmtime.ValType.i32()
        linker.define_func("env", "burn_py", wasmtime.FuncType([i32], []), burn_py)
        linker.define_func("env", "sleep_py", wasmtime.FuncType([i32], []), sleep_py)
        linker.define_func("env", "nop_py", wasmtime.FuncType([], []), nop_py)
        return store, linker.instantiate(store, self.module).exports(store)

    def run_args(self, rounds: int):
        return [rounds] + [PARAMS[p] for p in PARTS]


def ground_truth(guest: Guest, repeat: int, calls: int = 10) -> dict:
    cpu = {p: [] for p in PARTS}
    wall = {p: [] for p in PARTS}
    for _ in range(repeat):
        for part in PARTS:
            store, exports = guest.instance()
            fn = exports[part]
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            for _ in range(calls):
                fn(store, PARAMS[part])
            cpu[part].append((time.thread_time_ns() - c0) / calls)
            wall[part].append((time.perf_counter_ns() - w0) / calls)
    return {"cpu_ns": {p: statistics.median(v) for p, v in cpu.items()},
            "wall_ns": {p: statistics.median(v) for p, v in wall.items()}}


def shares(totals: dict) -> dict:
    whole = sum(totals.get(p, 0) for p in PARTS)
    return {p: 100.0 * totals.get(p, 0) / whole if whole else 0.0 for p in PARTS}


def inclusive(stacks) -> dict:
    """{part: weight} from (function names root first, weight) pairs."""
    out = {}
    for names, weight in stacks:
        for p in set(names) & set(PARTS):
            out[p] = out.get(p, 0) + weight
    return out


def run_sigprof(guest: Guest, rounds: int, clock: str) -> dict:
    store, exports = guest.instance()
    with sigprof.profile(store, modules=[("accuracy", guest.module)], clock=clock) as prof:
        exports["run"](store, *guest.run_args(rounds))
    stacks = [([f.name for f in funcs], w) for funcs, w in prof.recording.iter_stacks()]
    return {"shares": shares(inclusive(stacks)), "samples": prof.samples}


def run_guestprofiler(guest: Guest, rounds: int) -> dict:
    store, exports = guest.instance()
    gp = NativeGuestProfiler(guest.engine, "accuracy", [("accuracy", guest.module)])
    gp.run(store, lambda: exports["run"](store, *guest.run_args(rounds)))
    profile = json.loads(gp.finish())
    counts, cpu = {}, {}
    thread0 = profile["threads"][0]
    strings = thread0["stringArray"]
    st, fr, fn = thread0["stackTable"], thread0["frameTable"], thread0["funcTable"]
    samples = thread0["samples"]
    for stack, delta in zip(samples["stack"], samples["threadCPUDelta"]):
        names = []
        while stack is not None:
            names.append(strings[fn["name"][fr["func"][st["frame"][stack]]]])
            stack = st["prefix"][stack]
        for p in set(names) & set(PARTS):
            counts[p] = counts.get(p, 0) + 1
            cpu[p] = cpu.get(p, 0) + (delta or 0)
    return {"shares": shares(counts), "cpu_weighted_shares": shares(cpu),
            "samples": samples["length"]}


def worst(measured: dict, truth: dict) -> float:
    return max(abs(measured[p] - truth[p]) for p in PARTS)


def arguments(doc: str, rounds: int = 200, trials: int = 3) -> argparse.Namespace:
    """The options of this benchmark and of those that run its guest."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--trials", type=int, default=trials)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    return ap.parse_args()


def main() -> None:
    a = arguments(__doc__)
    guest = Guest()
    truth = ground_truth(guest, a.repeat)
    truth_cpu, truth_wall = shares(truth["cpu_ns"]), shares(truth["wall_ns"])
    runs = {"cpu": [], "wall": [], "gp": []}
    for _ in range(a.trials):
        runs["cpu"].append(run_sigprof(guest, a.rounds, "cpu"))
        runs["wall"].append(run_sigprof(guest, a.rounds, "wall"))
        runs["gp"].append(run_guestprofiler(guest, a.rounds))

    def mean(trials, key="shares"):
        return {p: statistics.mean(t[key][p] for t in trials) for p in PARTS}

    def samples(trials):
        return round(statistics.mean(t["samples"] for t in trials))

    rows = [("sigprof cpu", mean(runs["cpu"]), truth_cpu, samples(runs["cpu"]),
             [t["shares"] for t in runs["cpu"]]),
            ("sigprof wall (vs wall truth)", mean(runs["wall"]), truth_wall,
             samples(runs["wall"]), [t["shares"] for t in runs["wall"]]),
            ("GuestProfiler (sample counts)", mean(runs["gp"]), truth_cpu, samples(runs["gp"]),
             [t["shares"] for t in runs["gp"]]),
            ("GuestProfiler (CPU-delta weighted)", mean(runs["gp"], "cpu_weighted_shares"),
             truth_cpu, samples(runs["gp"]), [t["cpu_weighted_shares"] for t in runs["gp"]])]
    head = f"{'part':<18}{'truth cpu%':>11}{'truth wall%':>12}"
    print(f"share of each part, % (rounds={a.rounds}, mean of {a.trials} trials; "
          f"truth: median of {a.repeat} batches)")
    print(head + "".join(f"{name.split(' (')[0][:14]:>16}" for name, *_ in rows))
    print(" " * len(head) + "".join(f"{('(' + name.split(' (')[1]) if ' (' in name else '':>16}"[:16]
                                    for name, *_ in rows))
    for p in PARTS:
        print(f"{p:<18}{truth_cpu[p]:>11.1f}{truth_wall[p]:>12.1f}"
              + "".join(f"{r[1][p]:>16.1f}" for r in rows))
    print(f"{'worst error of the mean (pp)':<41}"
          + "".join(f"{worst(r[1], r[2]):>16.1f}" for r in rows))
    print(f"{'worst error, worst trial (pp)':<41}"
          + "".join(f"{max(worst(t, r[2]) for t in r[4]):>16.1f}" for r in rows))
    print(f"{'samples per trial':<41}" + "".join(f"{r[3]:>16}" for r in rows))
    if a.json:
        Path(a.json).write_text(json.dumps({
            "truth": {"cpu": truth_cpu, "wall": truth_wall, "ns": truth},
            "profiles": {name: {"shares": s, "worst_pp": worst(s, t), "samples": n,
                                "worst_trial_pp": max(worst(x, t) for x in trials)}
                         for name, s, t, n, trials in rows}}, indent=2))


if __name__ == "__main__":
    main()
