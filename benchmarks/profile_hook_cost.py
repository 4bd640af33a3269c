"""What a C-level profile function costs Python code (why host-function callees are not
sampled that way).

    python benchmarks/profile_hook_cost.py [--repeat 5]

A pure-Python workload (the test suite's ``busy_python``: a loop of
multiply-adds, plus a small function called per iteration) runs plain, then
with a profile function installed by ``PyEval_SetProfile`` that is C and
returns at once -- the cheapest hook a host call could arm to catch a tick
inside its Python callees.  The function is compiled here with the system's C
compiler.  Slowdown = hooked / plain CPU time; median (min-max) of
``--repeat``, interleaved.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

NOOP_C = "int sigprof_noop(void *obj, void *frame, int what, void *arg) { return 0; }\n"


def work(n: int) -> int:
    def step(i: int) -> int:
        return i * i
    x = 0
    for i in range(n):
        x += step(i) + i * 3
    return x


def timed(n: int) -> int:
    t0 = time.thread_time_ns()
    work(n)
    return time.thread_time_ns() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--n", type=int, default=2_000_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, lib = Path(tmp) / "noop.c", Path(tmp) / "noop.so"
        src.write_text(NOOP_C)
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
        noop = ctypes.CDLL(str(lib)).sigprof_noop
        set_profile = ctypes.pythonapi.PyEval_SetProfile
        set_profile.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        address = ctypes.cast(noop, ctypes.c_void_p).value
        ratios = []
        for _ in range(a.repeat):
            plain = timed(a.n)
            set_profile(address, None)
            try:
                hooked = timed(a.n)
            finally:
                set_profile(None, None)
            ratios.append(hooked / plain)
    print(f"Python loop with a call per iteration, {a.n} iterations: hooked / plain CPU time "
          f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}), "
          f"median (min-max) of {a.repeat}")


if __name__ == "__main__":
    main()
