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
time in a Python callee -- 6 000 short calls (~70 µs) or 30 long ones (~15 ms),
~0.4 s either way -- at 4 kHz of CPU time (perf events: a CPU tick
lands on the thread that used the CPU), ``python_frames`` on and off, on the
main thread and on a worker: on, each tick that lands in the host
function is sampled with the callee frames -- on the main thread by the
signal's Python-level handler, elsewhere by the sampler thread once it holds
the GIL.  Cost per sample = (profiled - plain wall time) / samples; also the
share of the host function's time that shows its callee (truth: ~all of it).

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
  (func (export "run") (param $n i32) (param $size i32)
    (loop $l
      (call $work (local.get $size))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (local.get $n)))))
"""
HOST_CALLS = {"short": (6000, 2000), "long": (30, 400_000)}   # calls, callee loop size


def _callee(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i
    return x


def _work(n: int) -> None:          # the host function: its time is in its callee
    _callee(n)


def host_callees_run(engine: wasmtime.Engine, module: wasmtime.Module, mode: str,
                     calls: str, worker: bool = False) -> Dict[str, float]:
    if worker:                                  # the same, on a thread of its own
        out: Dict[str, float] = {}
        t = threading.Thread(target=lambda: out.update(
            host_callees_run(engine, module, mode, calls)))
        t.start()
        t.join()
        return out
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)
    linker = wasmtime.Linker(engine)
    linker.define_func("env", "work", wasmtime.FuncType([wasmtime.ValType.i32()], []),
                       _work)
    run = linker.instantiate(store, module).exports(store)["run"]
    assert isinstance(run, wasmtime.Func)
    n, size = HOST_CALLS[calls]
    if mode == "plain":
        t0 = time.perf_counter_ns()
        run(store, n, size)
        return {"run_ns": time.perf_counter_ns() - t0}
    with sigprof.profile(store, clock="cpu", interval=0.00025,
                         python_frames=(mode == "on")) as prof:
        t0 = time.perf_counter_ns()
        run(store, n, size)
        run_ns = time.perf_counter_ns() - t0
    rec = prof.recording
    assert rec is not None
    host = callee = 0
    for funcs, weight in rec.iter_stacks():
        names = [f.name for f in funcs]
        if any(n.startswith("_work") for n in names):
            host += weight
            callee += weight if names[-1] == "_callee" else 0
    return {"run_ns": run_ns, "samples": rec.samples,
            "callee_share": 100 * callee / host if host else 0.0}


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
    print(f"\nHost-function callees: a host function spending its time in a Python callee, "
          f"4 kHz of CPU time (median (min-max) over {a.repeat} runs)")
    print(" calls       thread  mode  samples  overhead %                "
          "% of host time under the callee")
    host_out = {}
    for calls in HOST_CALLS:
        for where in ("main", "worker"):
            host_runs: Dict[str, List[Dict[str, float]]] = {"plain": [], "off": [], "on": []}
            for _ in range(a.repeat):
                for mode in host_runs:
                    host_runs[mode].append(host_callees_run(engine, host_module, mode, calls,
                                                            worker=where == "worker"))
            plain = [r["run_ns"] for r in host_runs["plain"]]
            for mode in ("off", "on"):
                rs = host_runs[mode]
                overhead = [100 * (r["run_ns"] - p) / p for r, p in zip(rs, plain)]
                label = f"{calls} ({HOST_CALLS[calls][0]})"
                print(f" {label:11s} {where:6s}  {mode:4s}  "
                      f"{statistics.median(r['samples'] for r in rs):7.0f}  "
                      f"{_spread(overhead):24s}  {_spread([r['callee_share'] for r in rs])}")
            host_out[f"{calls} {where}"] = host_runs
    out["host_callees"] = host_out
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
