"""CPU time on the process's threads that run no Python: what no tick can sample.

wasmtime compiles on threads of its own (a pool started at the first compile; an
application that compiles a module per request spends much of its CPU there), and
native libraries start others.  No Python thread runs on them, so no sample can
carry their stacks; a store-less profile reads each one's CPU clock as it starts and
as it stops, and the recording says how much CPU they took (``meta
["native_threads_cpu_ns"]``), so every CPU-second of the process is accounted for.
A thread that starts and ends between the two readings is not seen.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Dict, Tuple

_TASKS = "/proc/self/task"


def _cpu_clock(tid: int) -> int:
    """Linux's CPU clock id of thread ``tid`` of this process (the kernel's
    MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED): user and system time, in ns)."""
    return ((~tid) << 3) | 4 | 2


def native_threads_cpu_ns() -> Dict[int, int]:
    """Kernel thread id -> CPU ns so far, for each thread of this process that is not
    a Python thread."""
    python = {t.native_id for t in threading.enumerate()}
    try:
        tids = [int(name) for name in os.listdir(_TASKS)]
    except OSError:             # no /proc: nothing to say
        return {}
    found: Dict[int, int] = {}
    for tid in tids:
        if tid not in python:
            try:
                found[tid] = time.clock_gettime_ns(_cpu_clock(tid))
            except OSError:     # it ended meanwhile
                pass
    return found


def spent_since(at_start: Dict[int, int]) -> Tuple[int, int]:
    """(CPU ns, threads): what threads without Python spent since ``at_start`` was
    read (a thread born since then from zero)."""
    spent, threads = 0, 0
    for tid, cpu_ns in native_threads_cpu_ns().items():
        delta = cpu_ns - at_start.get(tid, 0)
        if delta > 0:
            spent += delta
            threads += 1
    return spent, threads
