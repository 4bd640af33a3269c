"""How far a store-less profile's guest share is from the truth on a mixed workload.

    python benchmarks/python_time_bias.py [--runs 20] [--worker]
                                          (SIGPROF_PURE_PYTHON=1: the pure path)

The workload is ``tests/test_python_time.py``'s: guest calls of ~8 ms on a new
store each, with ~10 ms of Python after each, 40 rounds, profiled store-less at
the default interval.  Truth is the thread's CPU time measured around the guest
calls.  Prints each run's error (sampled guest share minus the measured one),
sorted: its spread is chance, its centre a bias.  ``--worker`` runs the workload on
a worker thread beside the main thread's and prints, per run, the worker's sampled
CPU as a fraction of its measured CPU instead.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import sigprof  # noqa: E402
import test_python_time as workload  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--worker", action="store_true")
    a = ap.parse_args()
    engine = sigprof.engine()
    module = workload.module_of(engine)
    values = []
    for _ in range(a.runs):
        measured: dict = {}
        with sigprof.profile() as prof:
            worker = threading.Thread(target=workload.new_store_per_call,
                                      args=(engine, module, measured), name="worker")
            if a.worker:
                worker.start()
            workload.new_store_per_call(engine, module, measured)
            if a.worker:
                worker.join()
        by_thread = workload.sampled_by_thread(prof.recording)
        if a.worker:
            values.append(by_thread["worker"][0] / measured["worker"][0])
        else:
            cpu, in_guest = measured["MainThread"]
            sampled, sampled_guest, _ = by_thread["MainThread"]
            values.append(sampled_guest / sampled - in_guest / cpu)
    what = "worker's sampled / measured CPU" if a.worker else "guest share error"
    print(f"capture {prof.meta['capture']}: {what} over {a.runs} runs, sorted:")
    print(" ".join(f"{v:+.3f}" for v in sorted(values)))

if __name__ == "__main__":
    main()
