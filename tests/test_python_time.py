"""Every CPU-second in a store-less profile: Python time outside guest calls.

A store-less ``sigprof.profile()`` covers the whole program, so CPU time a thread
spends in Python with no guest call in progress -- between guest calls on new stores,
after the last one -- is sampled with its Python frames.  Each thread's sampled CPU
must match its measured CPU time, and the guest and Python parts their measured
shares, in both capture modes (this file runs as is and with SIGPROF_PURE_PYTHON=1).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Dict, Tuple

import wasmtime

import sigprof

from conftest import effective_samples, share_tolerance, unsampled_tail_ns

ROUNDS = 40
# The pure-Python capture charges the time of a guest call after its last sample
# to the Python after it (NOTES.md section 4), so there the guest's share comes out
# low by a bias the binomial bound does not cover: -0.03 to -0.20 over 40 runs of
# this file's new-store-per-call workload.  Allowed, on that side only, with room.
PURE_GUEST_SHARE_BIAS = 0.25 if os.environ.get("SIGPROF_PURE_PYTHON") == "1" else 0.0
GUEST_ITERATIONS = 6_000_000        # twin_a's run(n): ~8 ms of CPU a call here
PYTHON_ITERATIONS = 60_000          # ~10 ms of CPU a round


def python_work(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i
    return x


def new_store_per_call(engine, module, measured: Dict[str, Tuple[int, int]]) -> None:
    """ROUNDS guest calls, each on a new store, with Python work after each: the
    calling thread's (CPU ns, of which in guest calls) into ``measured``."""
    start = time.thread_time_ns()
    in_guest = 0
    for _ in range(ROUNDS):
        store = wasmtime.Store(engine)
        run = wasmtime.Linker(engine).instantiate(store, module).exports(store)["run"]
        before = time.thread_time_ns()
        run(store, GUEST_ITERATIONS)
        in_guest += time.thread_time_ns() - before
        python_work(PYTHON_ITERATIONS)
    measured[threading.current_thread().name] = (time.thread_time_ns() - start, in_guest)


def sampled_by_thread(rec) -> Dict[str, Tuple[int, int, float]]:
    """thread name -> (sampled CPU ns, of which with guest frames, effective samples)."""
    names = [t["name"] for t in rec.meta["threads"]]
    table = rec.sample_table
    per: Dict[str, list] = {}
    for thread, stack, cpu in zip(table.thread, table.stack, table.cpu_ns):
        funcs = [rec.function(f) for f in rec.stack_frames(stack)] if stack >= 0 else []
        # (unknown: a guest call the pure-Python capture charged without its frames)
        in_guest = any(f.kind in ("wasm", "unknown") for f in funcs)
        per.setdefault(names[thread], []).append((cpu, in_guest))
    return {name: (sum(c for c, _ in rows), sum(c for c, g in rows if g),
                   effective_samples([c for c, _ in rows])) for name, rows in per.items()}


def check_thread(rec, name: str, measured: Tuple[int, int], threads: int) -> None:
    cpu, in_guest = measured
    sampled, sampled_guest, n = sampled_by_thread(rec)[name]
    interval_ns = rec.meta["interval_s"] * 1e9
    # The sum: every interval ends at a tick, so only the tail after the thread's last
    # tick is unsampled (conftest.unsampled_tail_ns).  The 5 % the issue asks for is the
    # bound when it is the looser.
    tail_ns = unsampled_tail_ns(interval_ns, threads)
    assert cpu - max(tail_ns, 0.05 * cpu) <= sampled <= cpu + max(interval_ns, 0.05 * cpu), (
        name, sampled, cpu)
    # The shares: the guest's share of the sampled CPU against the measured one, within
    # 2 points, or -- where the sample count cannot promise that -- the binomial bound
    # from the effective number of CPU-weighted samples, two-sided, over every thread
    # checked (Bonferroni).
    p = in_guest / cpu
    tolerance = max(0.02, share_tolerance(n, p, comparisons=threads))
    error = sampled_guest / sampled - p
    assert -tolerance - PURE_GUEST_SHARE_BIAS <= error <= tolerance, (
        name, sampled_guest / sampled, p, n)


def module_of(engine) -> wasmtime.Module:
    from conftest import GUESTS
    return wasmtime.Module.from_file(engine, str(GUESTS / "twin_a.wat"))


def test_python_work_between_guest_calls_on_new_stores_is_sampled_on_the_main_thread(engine):
    module = module_of(engine)
    measured: Dict[str, Tuple[int, int]] = {}
    with sigprof.profile() as prof:
        new_store_per_call(engine, module, measured)
    rec = prof.recording
    check_thread(rec, "MainThread", measured["MainThread"], threads=1)
    # The Python part is the thread's own frames, function and file.
    names = {f.name for funcs, _ in rec.iter_stacks() for f in funcs if f.kind == "py"}
    assert "python_work" in names, names


def test_python_work_between_guest_calls_on_new_stores_is_sampled_on_a_worker(engine):
    module = module_of(engine)
    measured: Dict[str, Tuple[int, int]] = {}
    with sigprof.profile() as prof:
        worker = threading.Thread(target=new_store_per_call, args=(engine, module, measured),
                                  name="python-time-worker")
        worker.start()
        new_store_per_call(engine, module, measured)
        worker.join()
    rec = prof.recording
    for name in ("MainThread", "python-time-worker"):
        check_thread(rec, name, measured[name], threads=2)


def test_python_work_after_the_last_guest_call_is_sampled(engine):
    module = module_of(engine)
    store = wasmtime.Store(engine)
    run = wasmtime.Linker(engine).instantiate(store, module).exports(store)["run"]
    with sigprof.profile() as prof:
        start = time.thread_time_ns()
        before = time.thread_time_ns()
        run(store, GUEST_ITERATIONS * 20)
        in_guest = time.thread_time_ns() - before
        python_work(PYTHON_ITERATIONS * 60)
        measured = (time.thread_time_ns() - start, in_guest)
    check_thread(prof.recording, "MainThread", measured, threads=1)


def test_a_store_profile_keeps_its_own_samples_only(engine):
    """profile(store) is unchanged: no Python-time samples of its own (the Python time
    between its guest calls is counted, as before, at the next guest entry)."""
    module = module_of(engine)
    store = wasmtime.Store(engine)
    run = wasmtime.Linker(engine).instantiate(store, module).exports(store)["run"]
    with sigprof.profile(store) as prof:
        for _ in range(5):
            run(store, GUEST_ITERATIONS)
            python_work(PYTHON_ITERATIONS)
    assert "python_time_samples" not in prof.meta


def test_cpu_on_threads_without_python_is_counted_and_said(engine):
    # wasmtime compiles on a pool of its own threads, which run no Python: no sample can
    # carry them, so the recording says what they took.  The readings bracket the
    # profile's, so what they report is at most the process's CPU less the main
    # thread's, and at least 0.8 of it (the rest: sigprof's own sampler thread, a few
    # ms).  Within a slack: the process clock leaves out the slice in progress of a
    # thread running on another CPU (up to a kernel tick, 10 ms at HZ=100, each), which
    # that thread's own clock includes.
    body = "".join(f'(func (export "f{i}") (param i32) (result i32) local.get 0 '
                   f'i32.const {i} i32.add i32.const 7 i32.mul local.get 0 i32.xor)'
                   for i in range(2000))
    wasmtime.Module(engine, "(module)")         # the pool started before the profile
    process_ns, main_ns = time.process_time_ns(), time.thread_time_ns()
    with sigprof.profile() as prof:
        wasmtime.Module(engine, f"(module {body})")
    elsewhere = (time.process_time_ns() - process_ns) - (time.thread_time_ns() - main_ns)
    counted, threads = prof.meta["native_threads_cpu_ns"], prof.meta["native_threads"]
    slack_ns = 10_000_000 * (threads + 1)
    assert 0.8 * elsewhere - slack_ns <= counted <= elsewhere + slack_ns, (counted, elsewhere)
    assert threads >= 1
    assert any("threads that run no Python" in w for w in prof.meta["warnings"])
    assert "threads without Python (not sampled)" in prof.report()
