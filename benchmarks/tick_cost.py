"""Where a sample's end-to-end cost goes: signal, epoch callback, capture.

    python benchmarks/tick_cost.py [--depth 10] [--seconds 1.0] [--repeat 5]

The guest of capture_cost.py (recursion to ``--depth``, then a spin loop)
runs for ``--seconds`` of wall time with ITIMER_REAL ticking at 4 kHz, in
four set-ups, interleaved, ``--repeat`` times:

* ``plain``: no timer;
* ``signal``: sigprof's C tick handler installed, bumping no engine (the
  signal's delivery, the handler, and the return from it);
* ``callback``: the handler bumps the engine, and the store's epoch callback
  is sigprof's C callback with sampling off (adds the guest's trip from its
  epoch check into the callback and back);
* ``sigprof``: a whole ``sigprof.profile(clock="wall", interval=0.00025)``.

Cost per tick of each set-up = (its wall time - plain's) / ticks; the
differences between consecutive rows are what each step adds.  Medians, with
min-max.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sigprof  # noqa: E402
from sigprof import _capture, _native, _wasmtime as wt  # noqa: E402
from sigprof._ring import Ring  # noqa: E402
from capture_cost import DEPTH_WAT, _spin_count  # noqa: E402

INTERVAL_S = 0.00025


def one_run(mode: str, engine: wasmtime.Engine, module: wasmtime.Module, depth: int,
            n: int) -> "tuple[float, int]":
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)
    down = wasmtime.Instance(store, module, []).exports(store)["down"]
    if mode == "plain":
        t0 = time.perf_counter()
        down(store, depth, n)
        return time.perf_counter() - t0, 0
    if mode == "sigprof":
        prof = sigprof.profile(store, modules=[("depth", module)], clock="wall",
                               interval=INTERVAL_S)
        with prof:
            t0 = time.perf_counter()
            down(store, depth, n)
            elapsed = time.perf_counter() - t0
        return elapsed, int(prof.meta["ticks"])
    ext = _native.extension()
    capture = None
    if mode == "callback":
        capture = _capture.NativeCapture(store, Ring(16, 1024), python_frames=False)
        capture.attach()
        store.set_epoch_deadline(1)
    ext.install(signal.SIGALRM, wt.INCREMENT_EPOCH_ADDRESS)
    if mode == "callback":
        ext.add_engine(wt.engine_address(engine))
    before = ext.tick_counts()[0]
    signal.setitimer(signal.ITIMER_REAL, INTERVAL_S, INTERVAL_S)
    try:
        t0 = time.perf_counter()
        down(store, depth, n)
        elapsed = time.perf_counter() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        time.sleep(0.01)
        ext.uninstall(True)
        if capture is not None:
            capture.detach()
    return elapsed, int(ext.tick_counts()[0] - before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    if not _native.available():
        sys.exit(f"tick_cost: the native capture is unavailable: {_native.unavailable_reason()}")
    engine = sigprof.engine()
    module = wasmtime.Module(engine, DEPTH_WAT)
    n = _spin_count(engine, module, a.depth, a.seconds)
    modes = ("plain", "signal", "callback", "sigprof")
    runs: Dict[str, List["tuple[float, int]"]] = {m: [] for m in modes}
    for _ in range(a.repeat):
        for mode in modes:
            runs[mode].append(one_run(mode, engine, module, a.depth, n))
    plain = statistics.median(t for t, _ in runs["plain"])
    print(f"µs per tick at 4 kHz wall clock, depth {a.depth}, {a.seconds} s runs, "
          f"median of {a.repeat} (min-max); plain run {plain:.3f} s")
    for mode in modes[1:]:
        per = [(t - plain) * 1e6 / ticks for t, ticks in runs[mode]]
        ticks = statistics.median(k for _, k in runs[mode])
        print(f"  {mode:<9} {statistics.median(per):6.1f}  ({min(per):.1f}-{max(per):.1f})  "
              f"{ticks:.0f} ticks")


if __name__ == "__main__":
    main()
