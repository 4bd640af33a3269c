"""What keeping timeline markers costs a host call and a guest call, inside a profile.

    python benchmarks/marker_cost.py [--repeat 5] [--calls 200000]

A guest calls a host function that returns at once ``--calls`` times in one
guest call (the host-call case), and Python calls a guest export that returns at
once ``--calls / 10`` times (the guest-call case), each under a store profile,
with the profile's marker log in place (the default) and taken away (its
captures' ``markers`` set to None), interleaved in one process.  Each such call
is far below ``MARKER_MIN_NS``: what is measured is the timing every call pays,
not a marker kept.  Prints, per case, the median (min-max) over the repeats of
the extra CPU ns per call and of that cost over a call's own with no markers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import wasmtime

import sigprof
from sigprof import _wasmtime as wt

WAT = """(module
  (import "env" "nothing" (func $nothing))
  (func (export "host_calls") (param $n i32) (local $i i32)
    (loop (call $nothing)
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (local.get $n)))))
  (func (export "empty")))"""


def per_call_ns(exports, store, case: str, calls: int, markers: bool) -> float:
    with sigprof.profile(store, interval=0.004) as prof:
        if not markers:
            for capture in prof._captures:
                capture.markers = None
        start = time.process_time_ns()
        if case == "host":
            exports["host_calls"](store, calls)
        else:
            empty = exports["empty"]
            for _ in range(calls):
                empty(store)
        spent = time.process_time_ns() - start
    return spent / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200_000)
    a = parser.parse_args()
    engine = sigprof.engine()
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(wt.FAR_DEADLINE)
    linker = wasmtime.Linker(engine)
    linker.define_func("env", "nothing", wasmtime.FuncType([], []), lambda: None)
    exports = linker.instantiate(store, wasmtime.Module(engine, WAT)).exports(store)
    for case, calls in (("host", a.calls), ("guest", a.calls // 10)):
        extra, ratio = [], []
        for _ in range(a.repeat):
            without = per_call_ns(exports, store, case, calls, markers=False)
            with_markers = per_call_ns(exports, store, case, calls, markers=True)
            extra.append(with_markers - without)
            ratio.append(with_markers / without)
        print(f"{case} call: markers add {statistics.median(extra):.0f} ns per call "
              f"({min(extra):.0f}-{max(extra):.0f}); with / without "
              f"{statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f}), "
              f"{calls} calls, {a.repeat} repeats")


if __name__ == "__main__":
    main()
