"""What the per-thread hooks CPython 3.11 offers cost Python code (why the callees of
host functions on worker threads are not sampled with them).

    python benchmarks/profile_hook_cost.py [--repeat 5]

Two pure-Python workloads -- a loop calling a small function per iteration,
and recursive fib -- run plain, then with, in turn:

* ``profile``: a profile function installed by ``PyEval_SetProfile`` that is C
  and returns at once -- the cheapest hook a host call could arm (for its own
  thread) to catch a tick inside its Python callees;
* ``eval-frame``: a PEP 523 frame-evaluation function (interpreter-wide) that
  checks a thread-local flag and calls the default evaluator -- what would
  catch the tick at the thread's next Python call.

Both are compiled here with the system's C compiler.  Slowdown = hooked /
plain CPU time; median (min-max) of ``--repeat``, interleaved.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

HOOKS_C = """
#include <Python.h>
struct _PyInterpreterFrame;
typedef PyObject *(*evalfn)(PyThreadState *, struct _PyInterpreterFrame *, int);
extern PyObject *_PyEval_EvalFrameDefault(PyThreadState *, struct _PyInterpreterFrame *, int);
extern void _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState *, evalfn);
static __thread volatile int pending;
int sigprof_noop(void *obj, void *frame, int what, void *arg) { return 0; }
static PyObject *checking(PyThreadState *ts, struct _PyInterpreterFrame *f, int t) {
    if (pending) pending = 0;
    return _PyEval_EvalFrameDefault(ts, f, t);
}
void sigprof_eval_hook(int on) {
    _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(),
                                         on ? checking : _PyEval_EvalFrameDefault);
}
"""


def work(n: int) -> int:
    def step(i: int) -> int:
        return i * i
    x = 0
    for i in range(n):
        x += step(i) + i * 3
    return x


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def timed(workload: str) -> int:
    t0 = time.thread_time_ns()
    if workload == "call per iteration":
        work(2_000_000)
    else:
        fib(25)
    return time.thread_time_ns() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, lib_path = Path(tmp) / "hooks.c", Path(tmp) / "hooks.so"
        src.write_text(HOOKS_C)
        include = sysconfig.get_paths()["include"]
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", f"-I{include}", "-o", str(lib_path),
                        str(src)], check=True)
        lib = ctypes.PyDLL(str(lib_path))
        set_profile = ctypes.pythonapi.PyEval_SetProfile
        set_profile.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        noop = ctypes.cast(lib.sigprof_noop, ctypes.c_void_p).value
        hooks = {"profile": (lambda: set_profile(noop, None), lambda: set_profile(None, None)),
                 "eval-frame": (lambda: lib.sigprof_eval_hook(1),
                                lambda: lib.sigprof_eval_hook(0))}
        print(f"hooked / plain CPU time, median (min-max) of {a.repeat}")
        for workload in ("call per iteration", "fib(25)"):
            for name, (on, off) in hooks.items():
                ratios = []
                for _ in range(a.repeat):
                    plain = timed(workload)
                    on()
                    try:
                        hooked = timed(workload)
                    finally:
                        off()
                    ratios.append(hooked / plain)
                print(f"  {workload:20s} {name:11s} {statistics.median(ratios):.2f} "
                      f"({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
