"""The loop-free-leaf bias of epoch sampling, measured against timing truth.

    python benchmarks/leaf_bias.py [--repeat 5] [--runs 5] [--json out.json]

bias.wat has two loops that call a loop-free leaf (no loop -> its only epoch
check is at its entry):

* hot: each iteration is mostly the leaf (12 multiply-adds);
* cold: each iteration is mostly the caller's own work; the leaf is light.

Truth: the leaf's share of the loop's CPU time = (T - T_base) / T, where
T_base times the same loop without the call (median of ``--repeat``).

Measured: the leaf's self share in a profile of the loop, by
* sigprof with ``use_tick_pc=False`` -- plain epoch attribution (a sample is
  charged where the first epoch check after the tick happened);
* sigprof with ``use_tick_pc=True`` (the default) -- re-attributed to the
  function the tick landed in;
* the same on perf events at 0.25 ms (``source="perf"``): 16 times the
  samples, each at the exact PC where the thread's CPU timer expired;
* wasmtime's GuestProfiler (wall-clock 1 ms epoch thread, sample counts).

Each profiler runs ``--runs`` times (interleaved); the table shows the median
and the spread (min-max), so a figure can be checked by running it again.
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
CASES = {"hot": ("leaf_hot", 12_000_000), "cold": ("leaf_light", 12_000_000)}


def _instance(engine, module):
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)
    return store, wasmtime.Instance(store, module, []).exports(store)


def truth(engine, module, case: str, n: int, repeat: int) -> float:
    t, base = [], []
    for _ in range(repeat):
        for name, out in ((case, t), (case + "_base", base)):
            store, ex = _instance(engine, module)
            c0 = time.thread_time_ns()
            ex[name](store, n)
            out.append(time.thread_time_ns() - c0)
    return 100.0 * (statistics.median(t) - statistics.median(base)) / statistics.median(t)


def leaf_share_sigprof(engine, module, case: str, leaf: str, n: int, use_tick_pc: bool,
                       **options):
    store, ex = _instance(engine, module)
    with sigprof.profile(store, modules=[("bias", module)], use_tick_pc=use_tick_pc,
                         **options) as prof:
        ex[case](store, n)
    total = leaf_w = 0
    for funcs, w in prof.recording.iter_stacks():
        if any(f.kind == "wasm" for f in funcs):
            total += w
            if funcs[-1].name == leaf:
                leaf_w += w
    return 100.0 * leaf_w / total, prof.samples


def leaf_share_guestprofiler(engine, module, case: str, leaf: str, n: int):
    store, ex = _instance(engine, module)
    gp = NativeGuestProfiler(engine, "bias", [("bias", module)])
    gp.run(store, lambda: ex[case](store, n))
    t0 = json.loads(gp.finish())["threads"][0]
    strings, st, fr, fn = t0["stringArray"], t0["stackTable"], t0["frameTable"], t0["funcTable"]
    leaf_count = sum(1 for s in t0["samples"]["stack"]
                     if s is not None and strings[fn["name"][fr["func"][st["frame"][s]]]] == leaf)
    return 100.0 * leaf_count / max(1, t0["samples"]["length"]), t0["samples"]["length"]


MODES = {
    "epoch check": lambda e, m, c, leaf, n: leaf_share_sigprof(e, m, c, leaf, n, False),
    "tick PC": lambda e, m, c, leaf, n: leaf_share_sigprof(e, m, c, leaf, n, True),
    "perf 0.25 ms": lambda e, m, c, leaf, n: leaf_share_sigprof(
        e, m, c, leaf, n, True, interval=0.00025, source="perf"),
    "GuestProfiler": leaf_share_guestprofiler,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="truth batches")
    ap.add_argument("--runs", type=int, default=5, help="profiles per profiler")
    ap.add_argument("--json")
    a = ap.parse_args()
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, str(HERE / "bias.wat"))
    rows = {}
    for case, (leaf, n) in CASES.items():
        true_share = truth(engine, module, case, n, a.repeat)
        runs = {mode: [] for mode in MODES}
        for _ in range(a.runs):
            for mode, measure in MODES.items():
                runs[mode].append(measure(engine, module, case, leaf, n))
        rows[case] = {"leaf": leaf, "truth": true_share,
                      "shares": {m: [share for share, _ in r] for m, r in runs.items()},
                      "samples": {m: statistics.median(k for _, k in r) for m, r in runs.items()}}
    print(f"self share of the loop-free leaf, %: median (min-max) of {a.runs} profiles each")
    print(f"{'case':<6}{'leaf':<12}{'truth':>7}" + "".join(f"{m:>20}" for m in MODES))
    for case, r in rows.items():
        cells = [f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
                 for v in r["shares"].values()]
        print(f"{case:<6}{r['leaf']:<12}{r['truth']:>7.1f}" + "".join(f"{c:>20}" for c in cells))
    print(f"{'samples per profile (median)':<25}" + "".join(
        f"{rows['hot']['samples'][m]:>20.0f}" for m in MODES))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
