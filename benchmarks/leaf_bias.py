"""The loop-free-leaf bias of epoch sampling, measured against timing truth.

    python benchmarks/leaf_bias.py [--repeat 5] [--json out.json]

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
* wasmtime's GuestProfiler (wall-clock 1 ms epoch thread, sample counts).
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
from sigprof import _wasmtime as wt  # noqa: E402
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


def leaf_share_sigprof(engine, module, case: str, leaf: str, n: int, use_tick_pc: bool):
    store, ex = _instance(engine, module)
    with sigprof.profile(store, modules=[("bias", module)], use_tick_pc=use_tick_pc) as prof:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, str(HERE / "bias.wat"))
    rows = {}
    for case, (leaf, n) in CASES.items():
        true_share = truth(engine, module, case, n, a.repeat)
        raw = [leaf_share_sigprof(engine, module, case, leaf, n, False) for _ in range(3)]
        fixed = [leaf_share_sigprof(engine, module, case, leaf, n, True) for _ in range(3)]
        gp = leaf_share_guestprofiler(engine, module, case, leaf, n)
        rows[case] = {"leaf": leaf, "truth": true_share,
                      "epoch_check": statistics.mean(s for s, _ in raw),
                      "tick_pc": statistics.mean(s for s, _ in fixed),
                      "guestprofiler": gp[0],
                      "samples": {"epoch_check": raw[0][1], "tick_pc": fixed[0][1],
                                  "guestprofiler": gp[1]}}
    print("self share of the loop-free leaf, % (sigprof: mean of 3 profiles)")
    print(f"{'case':<6}{'leaf':<12}{'truth':>7}{'epoch check':>13}{'tick PC':>9}"
          f"{'GuestProfiler':>15}")
    for case, r in rows.items():
        print(f"{case:<6}{r['leaf']:<12}{r['truth']:>7.1f}{r['epoch_check']:>13.1f}"
              f"{r['tick_pc']:>9.1f}{r['guestprofiler']:>15.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
