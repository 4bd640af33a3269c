"""Per-sample capture cost, sigprof vs wasmtime's GuestProfiler, and guest slowdown.

    python benchmarks/capture_cost.py [--samples 3000] [--repeat 5] [--json out.json]

Capture cost.  A guest recurses to depth D (10, 50, 200) and then runs a loop
whose header is an epoch check.  An epoch callback that returns a deadline
delta of 0 is called at *every* check, so each mode takes exactly N samples
on the same stack:

* ``empty``: the callback does nothing (the cost of the callback mechanism:
  wasmtime -> ctypes -> Python and back);
* ``sigprof``: the callback runs sigprof's capture (the tick check, reading
  the tick record, both clocks twice, ``backtrace()`` straight into the ring,
  the header record) -- plus two ctypes increments standing in for the signal
  handler's writes;
* ``guestprofiler``: the callback calls ``wasmtime_guestprofiler_sample``
  (wasmtime's own native stack walk into its own buffer).

Cost per sample = (time of the mode - time of ``empty``) / N: the capture
itself, the callback mechanism excluded for both.  Each figure is the median
of ``--repeat`` runs, modes interleaved, so machine noise hits them alike;
the comparison is the ratio sigprof / GuestProfiler from the same run.

Slowdown.  The reference demo guest's ``run`` takes its CPU time with and
without ``sigprof.profile`` at the default interval (1 ms of CPU time,
ITIMER_VIRTUAL); ratio of medians.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from pathlib import Path

import wasmtime
from wasmtime import _bindings as _b

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sigprof  # noqa: E402
from sigprof import _capture, _native, _wasmtime as wt  # noqa: E402
from sigprof._ring import Ring  # noqa: E402

DEPTH_WAT = """
(module $depth
  (func $down (export "down") (param $d i32) (param $n i32) (result i32)
    (if (result i32) (i32.eqz (local.get $d))
      (then (call $spin (local.get $n)))
      (else (i32.add (i32.const 1)
        (call $down (i32.sub (local.get $d) (i32.const 1)) (local.get $n))))))
  (func $spin (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $acc)))
"""

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.wat"


def _callback(fn):
    def cb(ctx, data, next_delta, kind):
        next_delta[0] = 0       # call again at the very next epoch check
        kind[0] = 0
        fn()
        return 0
    return wt.EPOCH_CALLBACK_T(cb)


def capture_cost(depth: int, samples: int, repeat: int) -> dict:
    engine = sigprof.engine()
    module = wasmtime.Module(engine, DEPTH_WAT)
    results = {"empty": [], "sigprof": [], "guestprofiler": []}
    native_frames = set()
    for _ in range(repeat):
        for mode in ("empty", "sigprof", "guestprofiler"):
            store = wasmtime.Store(engine)
            down = wasmtime.Instance(store, module, []).exports(store)["down"]
            keep = []
            if mode == "empty":
                cb = _callback(lambda: None)
            elif mode == "sigprof":
                ring = Ring(samples + 8, 1024, pcs_per_sample=depth + 96)
                capture = _capture.Capture(store, ring)
                # The tick record the native handler writes, written here instead.
                state = _native.TickState()
                word = ctypes.c_uint64.from_address(ctypes.addressof(state))
                capture.begin(word, state)
                on_epoch = capture.on_epoch

                def sample(state=state, on_epoch=on_epoch):
                    state.begin += 1     # a tick is due at every check
                    state.count += 1
                    on_epoch()
                cb = _callback(sample)
                keep.append(capture)
            else:
                gp = wt.NativeGuestProfiler(engine, "bench", [("depth", module)])
                sample_fn = gp.sample_function(store)
                cb = _callback(lambda: sample_fn(0))
                keep.append(gp)
            _b.wasmtime_store_epoch_deadline_callback(store.ptr(), cb, None, wt.NOOP_FINALIZER)
            store.set_epoch_deadline(1)
            engine.increment_epoch()          # the first check fires; delta 0 keeps it firing
            t0 = time.perf_counter_ns()
            down(store, depth, samples)
            elapsed = time.perf_counter_ns() - t0
            results[mode].append(elapsed)
            if mode == "sigprof":
                assert ring.count >= samples, ring.count
                native_frames.update(len(s.pcs) for s in list(ring.read())[-3:])
            wt.restore_epoch_behaviour(store)
            keep.clear()
    med = {m: statistics.median(v) for m, v in results.items()}
    sig = (med["sigprof"] - med["empty"]) / samples / 1000
    gp = (med["guestprofiler"] - med["empty"]) / samples / 1000
    return {"depth": depth, "samples": samples, "callback_us": med["empty"] / samples / 1000,
            "sigprof_us": sig, "guestprofiler_us": gp, "ratio": sig / gp if gp > 0 else None,
            "native_frames_per_sample": sorted(native_frames)}


def slowdown(repeat: int, rounds: int = 6) -> dict:
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, str(DEMO))
    plain, profiled, samples = [], [], []
    for _ in range(repeat):
        for mode in ("plain", "profiled"):
            store = wasmtime.Store(engine)
            store.set_epoch_deadline(sigprof.FAR_DEADLINE)
            run = wasmtime.Instance(store, module, []).exports(store)["run"]
            if mode == "plain":
                t0 = time.thread_time_ns()
                run(store, rounds)
                plain.append(time.thread_time_ns() - t0)
            else:
                with sigprof.profile(store, modules=[("demo", module)]) as prof:
                    t0 = time.thread_time_ns()
                    run(store, rounds)
                    profiled.append(time.thread_time_ns() - t0)
                samples.append(prof.samples)
    p, q = statistics.median(plain), statistics.median(profiled)
    return {"plain_cpu_ms": p / 1e6, "profiled_cpu_ms": q / 1e6, "slowdown": q / p,
            "samples_per_cpu_second": statistics.median(samples) / (q / 1e9)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    rows = [capture_cost(d, a.samples, a.repeat) for d in (10, 50, 200)]
    print(f"per-sample capture cost, median of {a.repeat} runs x {a.samples} samples "
          f"(callback mechanism subtracted)")
    print(f"{'depth':>6} {'native frames':>14} {'callback µs':>12} {'sigprof µs':>11} "
          f"{'GuestProfiler µs':>17} {'ratio':>6}")
    for r in rows:
        print(f"{r['depth']:>6} {str(r['native_frames_per_sample']):>14} {r['callback_us']:>12.2f} "
              f"{r['sigprof_us']:>11.2f} {r['guestprofiler_us']:>17.2f} {r['ratio']:>6.2f}")
    s = slowdown(a.repeat)
    print(f"\nguest slowdown at the default interval (1 ms CPU, ITIMER_VIRTUAL): "
          f"{s['plain_cpu_ms']:.1f} ms -> {s['profiled_cpu_ms']:.1f} ms CPU, "
          f"x{s['slowdown']:.3f} ({s['samples_per_cpu_second']:.0f} samples per CPU-second)")
    if a.json:
        Path(a.json).write_text(json.dumps({"capture": rows, "slowdown": s}, indent=2))


if __name__ == "__main__":
    main()
