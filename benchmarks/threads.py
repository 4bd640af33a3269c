"""Embedding applications: per-thread CPU accounting, and what Python frames cost.

    python benchmarks/threads.py [--repeat 5] [--json out.json]

CPU accounting.  A store-less ``sigprof.profile()`` (CPU clock, default
interval) over 1, 2 and 4 threads, each running its own store's guest (a loop
of ~0.5 s of CPU).  Each thread measures its own CPU time around its guest
call (``time.thread_time_ns``); the profile's samples of that thread should add
up to it.  Error per thread = (sampled - measured) / measured.  Also printed:
the ticks delivered per CPU-second of the process.

Python frames.  A guest called 20 000 times, ~40 µs each, from a Python call
chain 20 frames deep, at ``clock="wall", interval=0.00025`` (so most calls hold
a sample), with ``python_frames`` on and off, and unprofiled:

* capture: µs per guest call over the unprofiled run (the hooks on every
  call, the samples, and -- on -- reading the Python frames at the exit of
  each sampled call);
* conversion: ``stop()`` and ``to_firefox()``, µs per sample.

Host-function callees.  A guest calling a Python host function that spends its
time in a Python callee, ~1 s, at the same 4 kHz, ``python_frames`` on and off:
on, each tick that lands in the host function on the main thread is sampled
by a Python-level handler that reads the callee frames.  Cost per sample =
(profiled - plain wall time) / samples.

Every figure is the median over ``--repeat`` runs, the modes interleaved so
machine noise hits them alike, with the spread (min-max).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sigprof  # noqa: E402

LOOP_WAT = """
(module
  (func (export "spin") (param $n i32) (result i32)
    (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 3)) (local.get $n)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (local.get $n)))
    (local.get $acc)))
"""


def _spread(values: List[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def cpu_accounting(engine: wasmtime.Engine, module: wasmtime.Module, busy: int,
                   iterations: int) -> Dict[str, float]:
    measured: Dict[str, int] = {}

    def worker(i: int) -> None:
        store = wasmtime.Store(engine)
        spin = wasmtime.Instance(store, module, []).exports(store)["spin"]
        assert isinstance(spin, wasmtime.Func)
        start = time.thread_time_ns()
        spin(store, iterations)
        measured[f"busy-{i}"] = time.thread_time_ns() - start
    with sigprof.profile() as prof:
        threads = [threading.Thread(target=worker, args=(i,), name=f"busy-{i}")
                   for i in range(busy)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rec = prof.recording
    assert rec is not None
    sampled = rec.cpu_ns_by_thread()
    errors = [100 * (sampled[n] - measured[n]) / measured[n] for n in measured]
    return {"worst_error_pct": max(errors, key=abs), "median_error_pct": statistics.median(errors),
            "ticks_per_cpu_s": rec.meta["ticks"] / (sum(measured.values()) / 1e9)}


def python_frames_run(engine: wasmtime.Engine, module: wasmtime.Module, mode: str, calls: int,
                      spin_n: int) -> Dict[str, float]:
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)
    spin = wasmtime.Instance(store, module, []).exports(store)["spin"]
    assert isinstance(spin, wasmtime.Func)

    def chain(depth: int) -> None:          # the Python stack each call is made from
        if depth:
            chain(depth - 1)
            return
        for _ in range(calls):
            spin(store, spin_n)
    if mode == "plain":
        t0 = time.perf_counter_ns()
        chain(20)
        return {"run_ns": time.perf_counter_ns() - t0}
    prof = sigprof.profile(store, clock="wall", interval=0.00025,
                           python_frames=(mode == "on"))
    with prof:
        t0 = time.perf_counter_ns()
        chain(20)
        run_ns = time.perf_counter_ns() - t0
        t1 = time.perf_counter_ns()
    stop_ns = time.perf_counter_ns() - t1
    rec = prof.recording
    assert rec is not None
    t2 = time.perf_counter_ns()
    rec.to_firefox()
    firefox_ns = time.perf_counter_ns() - t2
    return {"run_ns": run_ns, "samples": rec.samples, "stop_us": stop_ns / 1e3 / rec.samples,
            "firefox_us": firefox_ns / 1e3 / rec.samples,
            "py_frames": sum(1 for f in rec.frames if f.type == 6)}


HOST_WAT = """
(module
  (import "env" "work" (func $work (param i32)))
  (func (export "run") (param $n i32)
    (loop $l
      (call $work (i32.const 2000))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (local.get $n)))))
"""


def _callee(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i
    return x


def _work(n: int) -> None:          # the host function: its time is in its callee
    _callee(n)


def host_callees_run(engine: wasmtime.Engine, module: wasmtime.Module, mode: str,
                     calls: int) -> Dict[str, float]:
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)
    linker = wasmtime.Linker(engine)
    linker.define_func("env", "work", wasmtime.FuncType([wasmtime.ValType.i32()], []),
                       _work)
    run = linker.instantiate(store, module).exports(store)["run"]
    assert isinstance(run, wasmtime.Func)
    if mode == "plain":
        t0 = time.perf_counter_ns()
        run(store, calls)
        return {"run_ns": time.perf_counter_ns() - t0}
    with sigprof.profile(store, clock="wall", interval=0.00025,
                         python_frames=(mode == "on")) as prof:
        t0 = time.perf_counter_ns()
        run(store, calls)
        run_ns = time.perf_counter_ns() - t0
    assert prof.recording is not None
    return {"run_ns": run_ns, "samples": prof.recording.samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    engine = sigprof.engine()
    module = wasmtime.Module(engine, LOOP_WAT)
    out: Dict[str, object] = {}

    print("CPU accounting per thread, store-less profile, clock cpu (median (min-max) over "
          f"{a.repeat} runs)")
    print(" threads  worst error %     median error %   ticks per CPU-s")
    accounting = {}
    for busy in (1, 2, 4):
        runs = [cpu_accounting(engine, module, busy, 900_000_000) for _ in range(a.repeat)]
        row = {k: [r[k] for r in runs] for k in runs[0]}
        accounting[busy] = row
        print(f" {busy:7d}  {_spread(row['worst_error_pct']):18s} "
              f"{_spread(row['median_error_pct']):18s} {_spread(row['ticks_per_cpu_s'])}")
    out["cpu_accounting"] = accounting

    spin_n = 60_000                          # ~40 µs per call on this machine
    runs: Dict[str, List[Dict[str, float]]] = {"plain": [], "off": [], "on": []}
    for _ in range(a.repeat):
        for mode in runs:
            runs[mode].append(python_frames_run(engine, module, mode, a.calls, spin_n))
    plain = [r["run_ns"] for r in runs["plain"]]
    print(f"\nPython frames: {a.calls} guest calls from 20 Python frames, 4 kHz wall clock "
          f"(median (min-max) over {a.repeat} runs)")
    print(" mode  samples  µs per call over plain   stop() µs/sample   to_firefox µs/sample")
    for mode in ("off", "on"):
        rs = runs[mode]
        per_call = [(r["run_ns"] - p) / 1e3 / a.calls for r, p in zip(rs, plain)]
        print(f" {mode:4s}  {statistics.median(r['samples'] for r in rs):7.0f}  "
              f"{_spread(per_call):23s}  {_spread([r['stop_us'] for r in rs]):17s}  "
              f"{_spread([r['firefox_us'] for r in rs])}")
    out["python_frames"] = runs

    host_module = wasmtime.Module(engine, HOST_WAT)
    host_runs: Dict[str, List[Dict[str, float]]] = {"plain": [], "off": [], "on": []}
    for _ in range(a.repeat):
        for mode in host_runs:
            host_runs[mode].append(host_callees_run(engine, host_module, mode, 6000))
    plain = [r["run_ns"] for r in host_runs["plain"]]
    print(f"\nHost-function callees: a host function spending its time in a Python callee, "
          f"~{statistics.median(plain) / 1e9:.1f} s, 4 kHz wall clock "
          f"(median (min-max) over {a.repeat} runs)")
    print(" mode  samples  µs per sample over plain")
    for mode in ("off", "on"):
        rs = host_runs[mode]
        per_sample = [(r["run_ns"] - p) / 1e3 / r["samples"] for r, p in zip(rs, plain)]
        print(f" {mode:4s}  {statistics.median(r['samples'] for r in rs):7.0f}  "
              f"{_spread(per_sample)}")
    out["host_callees"] = host_runs
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
