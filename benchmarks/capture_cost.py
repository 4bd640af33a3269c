"""Per-sample cost, sigprof vs wasmtime's GuestProfiler: capture alone, end to end, and stop().

    python benchmarks/capture_cost.py [--samples 3000] [--repeat 5] [--depths 10,50,200,3000]
                                      [--seconds 0.5] [--json out.json]

A guest recurses to depth D and then spins in a loop whose header is an epoch
check; each iteration also stores its counter in linear memory.

Capture alone.  An epoch callback with deadline delta 0 is called at *every*
loop header, so each mode takes one sample per iteration on the same stack:

* ``py-empty``: a Python ctypes callback that does nothing;
* ``guestprofiler``: a Python callback calling ``wasmtime_guestprofiler_sample``
  (wasmtime's own stack walk into its own buffer) -- its cost is this minus
  ``py-empty``: the Python callback mechanism is not charged to it;
* ``c-empty``: sigprof's C callback with sampling off;
* ``sigprof``: sigprof's C callback sampling, its tick counter pointed at the
  word the guest stores each iteration, so a sample is due at every check --
  its cost is this minus ``c-empty``.  Without the tick handler's record, each
  sample also reads the thread CPU clock (a system call the real path makes
  in the signal handler instead).

End to end.  The same guest, run for ``--seconds`` of wall time, plain and
under each profiler ticking at 4 kHz on ITIMER_REAL: sigprof
``clock="wall", interval=0.00025``; the GuestProfiler driven by the same
itimer, its signal relayed by the wakeup fd to a thread that bumps the epoch,
and a Python epoch callback that samples.  Cost per sample =
(profiled wall time - plain wall time) / samples.

stop().  The time ``Profiler.stop()`` takes for that end-to-end run, per sample
it resolves (the samples the ring kept).

Every figure is the median over ``--repeat`` runs with the modes interleaved,
so machine noise hits them alike; the spread (min-max) is printed too.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import wasmtime
from wasmtime import _bindings as _b

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sigprof  # noqa: E402
from sigprof import _capture, _native, _wasmtime as wt  # noqa: E402
from sigprof._ring import Ring  # noqa: E402
from sigprof.defaults import DEFAULT_MAX_DEPTH  # noqa: E402
from guestprofiler import NativeGuestProfiler  # noqa: E402

DEPTH_WAT = """
(module $depth
  (memory (export "memory") 1)
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
      (i64.store (i32.const 0) (i64.extend_i32_u (local.get $i)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $acc)))
"""


def _py_callback(fn: Callable[[], None]):
    def cb(ctx, data, next_delta, kind):
        next_delta[0] = 0       # call again at the very next epoch check
        kind[0] = 0
        fn()
        return 0
    return wt.EPOCH_CALLBACK_T(cb)


def _spread(values: List[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def capture_alone(engine, module, depth: int, samples: int, repeat: int) -> dict:
    times: Dict[str, List[int]] = {m: [] for m in ("py-empty", "guestprofiler", "c-empty", "sigprof")}
    frames = set()
    for _ in range(repeat):
        for mode in times:
            store = wasmtime.Store(engine)
            exports = wasmtime.Instance(store, module, []).exports(store)
            down = exports["down"]
            keep = []
            if mode in ("c-empty", "sigprof"):
                ring = Ring(samples + 8, DEFAULT_MAX_DEPTH, pcs_per_sample=depth + 8)
                capture = _capture.NativeCapture(store, ring, python_frames=False)
                capture._c.deadline_delta = 0
                capture.attach()
                if mode == "sigprof":
                    memory = exports["memory"]
                    word = ctypes.c_uint64.from_address(
                        ctypes.addressof(memory.data_ptr(store).contents))
                    capture.begin(word, None, time.monotonic_ns())
                keep.append(capture)
            elif mode == "py-empty":
                cb = _py_callback(lambda: None)
                _b.wasmtime_store_epoch_deadline_callback(store.ptr(), cb, None, wt.NOOP_FINALIZER)
                keep.append(cb)
            else:
                gp = NativeGuestProfiler(engine, "bench", [("depth", module)])
                sample_fn = gp.sample_function(store)
                cb = _py_callback(lambda: sample_fn(0))
                _b.wasmtime_store_epoch_deadline_callback(store.ptr(), cb, None, wt.NOOP_FINALIZER)
                keep += [gp, cb]
            # sigprof's own deadline: Store.set_epoch_deadline is the application's
            # (``_app_epochs``), whose passing a capture turns into the trap it asked for
            wt.set_store_deadline(store, 1)
            engine.increment_epoch()          # the first check fires; delta 0 keeps it firing
            t0 = time.perf_counter_ns()
            down(store, depth, samples)
            times[mode].append(time.perf_counter_ns() - t0)
            if mode == "sigprof":
                keep[0].finish()
                assert ring.count >= samples, ring.count
                frames.update(len(s.pcs) for s in list(ring.read())[-4:] if s.origin == 0)
            wt.restore_epoch_behaviour(store)
            keep.clear()
    med = {m: statistics.median(v) / samples / 1000 for m, v in times.items()}
    per_run_ratio = [((s - ce) / (g - pe)) for s, ce, g, pe in zip(
        times["sigprof"], times["c-empty"], times["guestprofiler"], times["py-empty"])]
    sig = med["sigprof"] - med["c-empty"]
    gp = med["guestprofiler"] - med["py-empty"]
    return {"depth": depth, "samples": samples, "frames_walked": sorted(frames),
            "py_callback_us": med["py-empty"], "c_callback_us": med["c-empty"],
            "sigprof_us": sig, "guestprofiler_us": gp, "ratio": sig / gp,
            "ratio_spread": _spread(per_run_ratio),
            "sigprof_with_mechanism_us": med["sigprof"], "guestprofiler_with_mechanism_us":
            med["guestprofiler"]}


def _spin_count(engine, module, depth: int, seconds: float) -> int:
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)
    down = wasmtime.Instance(store, module, []).exports(store)["down"]
    n = 1_000_000
    t0 = time.perf_counter()
    down(store, depth, n)
    return max(1, min(2**31 - 1, int(n * seconds / (time.perf_counter() - t0))))


def end_to_end(engine, module, depth: int, seconds: float, repeat: int,
               python_frames: bool = True) -> dict:
    n = _spin_count(engine, module, depth, seconds)
    runs: Dict[str, List[float]] = {"plain": [], "sigprof": [], "guestprofiler": []}
    counts: Dict[str, List[int]] = {"sigprof": [], "guestprofiler": []}
    stop_us: List[float] = []
    for _ in range(repeat):
        for mode in runs:
            store = wasmtime.Store(engine)
            store.set_epoch_deadline(sigprof.FAR_DEADLINE)
            down = wasmtime.Instance(store, module, []).exports(store)["down"]
            if mode == "plain":
                t0 = time.perf_counter_ns()
                down(store, depth, n)
                runs[mode].append(time.perf_counter_ns() - t0)
            elif mode == "sigprof":
                prof = sigprof.profile(store, modules=[("depth", module)], clock="wall",
                                       interval=0.00025, python_frames=python_frames)
                with prof:
                    t0 = time.perf_counter_ns()
                    down(store, depth, n)
                    runs[mode].append(time.perf_counter_ns() - t0)
                    t1 = time.perf_counter_ns()
                stop_ns = time.perf_counter_ns() - t1
                counts[mode].append(prof.meta["samples_taken"])       # the cost was paid for each
                stop_us.append(stop_ns / 1000 / max(1, prof.samples))  # stop() resolves these
                assert prof.recording is not None and prof.recording.truncated == 0
            else:
                gp = NativeGuestProfiler(engine, "bench", [("depth", module)])
                t0 = time.perf_counter_ns()
                gp.run(store, lambda: down(store, depth, n), interval_s=0.00025, ticker="itimer")
                runs[mode].append(time.perf_counter_ns() - t0)
                counts[mode].append(gp.samples)
                gp.finish()
    plain = statistics.median(runs["plain"])
    per_sample = {m: [(t - plain) / 1000 / c for t, c in zip(runs[m], counts[m])]
                  for m in ("sigprof", "guestprofiler")}
    sig, gp_us = (statistics.median(per_sample[m]) for m in ("sigprof", "guestprofiler"))
    return {"depth": depth, "plain_ms": plain / 1e6,
            "sigprof_samples": statistics.median(counts["sigprof"]),
            "guestprofiler_samples": statistics.median(counts["guestprofiler"]),
            "sigprof_us": sig, "sigprof_spread": _spread(per_sample["sigprof"]),
            "guestprofiler_us": gp_us, "guestprofiler_spread": _spread(per_sample["guestprofiler"]),
            "ratio": sig / gp_us, "stop_us_per_sample": statistics.median(stop_us),
            "stop_spread": _spread(stop_us)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--depths", default="10,50,200,3000")
    ap.add_argument("--seconds", type=float, default=0.5,
                    help="end-to-end run length (0: the capture alone only)")
    ap.add_argument("--no-python-frames", action="store_true",
                    help="end to end with python_frames=False")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    if not _native.available():
        sys.exit(f"capture_cost: the native capture is unavailable: {_native.unavailable_reason()}")
    depths = [int(d) for d in a.depths.split(",")]
    engine = sigprof.engine()
    module = wasmtime.Module(engine, DEPTH_WAT)
    alone = [capture_alone(engine, module, d, a.samples, a.repeat) for d in depths]
    print(f"capture alone: µs per sample, median of {a.repeat} runs x {a.samples} samples, "
          f"each profiler's empty-callback cost subtracted")
    print(f"{'depth':>6} {'frames':>7} {'sigprof':>8} {'GuestProfiler':>14} {'ratio':>6} "
          f"{'ratio spread':>13}   (with callback: sigprof / GuestProfiler)")
    for r in alone:
        print(f"{r['depth']:>6} {str(r['frames_walked']):>7} {r['sigprof_us']:>8.2f} "
              f"{r['guestprofiler_us']:>14.2f} {r['ratio']:>6.2f} {r['ratio_spread']:>13}   "
              f"({r['sigprof_with_mechanism_us']:.2f} / {r['guestprofiler_with_mechanism_us']:.2f})")
    e2e = [end_to_end(engine, module, d, a.seconds, a.repeat, not a.no_python_frames)
           for d in depths] if a.seconds else []
    if e2e:
        print(f"\nend to end at 4 kHz (ITIMER_REAL, 0.25 ms), {a.seconds} s runs, Python frames "
              f"{'off' if a.no_python_frames else 'on'}: µs per sample from the slowdown, "
              f"median of {a.repeat} (spread); stop() µs per sample")
        print(f"{'depth':>6} {'samples':>8} {'sigprof':>16} {'GuestProfiler':>18} {'ratio':>6} "
              f"{'stop()':>16}")
    for r in e2e:
        print(f"{r['depth']:>6} {r['sigprof_samples']:>8.0f} {r['sigprof_us']:>6.1f} "
              f"({r['sigprof_spread']:>8}) {r['guestprofiler_us']:>6.1f} "
              f"({r['guestprofiler_spread']:>9}) {r['ratio']:>6.2f} "
              f"{r['stop_us_per_sample']:>6.2f} ({r['stop_spread']})")
    if a.json:
        Path(a.json).write_text(json.dumps({"capture_alone": alone, "end_to_end": e2e}, indent=2))


if __name__ == "__main__":
    main()
