"""What ``sys.monitoring`` (CPython 3.12+) costs Python code while its call events are on
(why host functions' callees on worker threads are not sampled with it).

    python3.12 benchmarks/monitoring_cost.py [--repeat 5]

The route it would offer: when a tick lands on a worker thread inside a Python host
function, turn on ``PY_START`` events; the callback, run on that thread at its next
Python call, records the stack and turns them off.  Two facts decide it: the events are
the interpreter's, not a thread's (every thread pays while they are on), and turning
them on is a Python call that needs the GIL -- the same wait the sampler thread has
today.  This measures the first: the two workloads of ``profile_hook_cost.py`` (a loop
calling a small function, and recursive fib), plain and with ``PY_START`` on and a
callback that checks the thread and returns -- the cheapest that could work.
Slowdown = hooked / plain CPU time; median (min-max) of ``--repeat``, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time


def _small(x: int) -> int:
    return x + 1


def loop_calls(n: int = 2_000_000) -> None:
    total = 0
    for i in range(n):
        total = _small(total)


def fib(n: int = 27) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def _cpu_s(work) -> float:
    start = time.thread_time()
    work()
    return time.thread_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if sys.version_info < (3, 12):
        print("sys.monitoring needs CPython 3.12 or newer", file=sys.stderr)
        return 2
    mon = sys.monitoring
    tool = mon.PROFILER_ID
    mon.use_tool_id(tool, "sigprof-benchmark")
    wanted = {-1}                       # no thread: every callback only checks and returns
    get_ident = threading.get_ident

    def on_start(code: object, offset: int) -> None:
        if get_ident() in wanted:
            pass

    mon.register_callback(tool, mon.events.PY_START, on_start)
    print(f"CPython {sys.version.split()[0]}: slowdown with PY_START on, "
          f"median (min-max) of {args.repeat}")
    for name, work in (("loop with a call", loop_calls), ("recursive fib", fib)):
        ratios = []
        for _ in range(args.repeat):
            plain = _cpu_s(work)
            mon.set_events(tool, mon.events.PY_START)
            hooked = _cpu_s(work)
            mon.set_events(tool, 0)
            ratios.append(hooked / plain)
        print(f"  {name:18} {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f})")
    mon.free_tool_id(tool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
