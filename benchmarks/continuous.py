"""Continuous profiling to files and the live endpoint: flat memory, and what they cost.

    python benchmarks/continuous.py [--periods 60] [--period 1] [--repeat 3]

A thread runs the demo guest on a store-less-profiled engine while
``sigprof.continuous`` writes one pprof file per period into a scratch
directory (cap: 5 files).  Reported: resident memory (psutil) after the
first 5 periods and after the last, and the guest's work rate (calls of
``run`` per CPU-second of the process) with the writer running, as a ratio
to the same loop with no profiler, measured alternately in the same run; the
same ratio while a client scrapes ``/debug/pprof/profile?seconds=3`` from
``sigprof.serve``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sigprof  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def calls_per_cpu_s(engine: wasmtime.Engine, module: wasmtime.Module, seconds: float) -> float:
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)
    run = wasmtime.Linker(engine).instantiate(store, module).exports(store)["run"]
    calls, cpu0 = 0, time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run(store, 3)
        calls += 1
    return calls / (time.process_time() - cpu0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--periods", type=int, default=60)
    ap.add_argument("--period", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3, help="rate comparisons (each 2 x 3 s)")
    args = ap.parse_args()
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, str(ROOT / "examples" / "demo.wat"))
    proc = psutil.Process()

    ratios = []
    for _ in range(args.repeat):
        bare = calls_per_cpu_s(engine, module, 3.0)
        with tempfile.TemporaryDirectory() as out, sigprof.continuous(out, period_s=1):
            profiled = calls_per_cpu_s(engine, module, 3.0)
        ratios.append(profiled / bare)
    endpoint = []
    with sigprof.serve("127.0.0.1:0") as server:
        for _ in range(args.repeat):
            bare = calls_per_cpu_s(engine, module, 3.0)
            scrape = threading.Thread(target=lambda: urllib.request.urlopen(
                server.url + "profile?seconds=3", timeout=60).read())
            scrape.start()
            profiled = calls_per_cpu_s(engine, module, 3.0)
            scrape.join()
            endpoint.append(profiled / bare)
    print(f"work rate while scraped / not: median {statistics.median(endpoint):.3f} "
          f"(min {min(endpoint):.3f}, max {max(endpoint):.3f}, n={len(endpoint)})")
    print(f"work rate with the writer / without: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}, n={len(ratios)})")

    stop = threading.Event()

    def guest() -> None:
        while not stop.is_set():
            calls_per_cpu_s(engine, module, 0.5)
    thread = threading.Thread(target=guest)
    thread.start()
    rss_mb = {}
    with tempfile.TemporaryDirectory() as out:
        with sigprof.continuous(out, period_s=args.period, max_files=5) as writer:
            while len(writer.written) < args.periods:
                if len(writer.written) == 5 and 5 not in rss_mb:
                    rss_mb[5] = proc.memory_info().rss / 2**20
                time.sleep(0.05)
            rss_mb[args.periods] = proc.memory_info().rss / 2**20
            kept = len(os.listdir(out))
    stop.set()
    thread.join()
    print(f"resident memory after 5 periods {rss_mb[5]:.1f} MB, after {args.periods} "
          f"{rss_mb[args.periods]:.1f} MB; files kept {kept} (cap 5)")


if __name__ == "__main__":
    main()
