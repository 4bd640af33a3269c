"""How far a store-less profile's guest share is from the truth on a mixed workload.

    python benchmarks/python_time_bias.py [--runs 20]     (SIGPROF_PURE_PYTHON=1: the pure path)

The workload is ``tests/test_python_time.py``'s: guest calls of ~8 ms on a new
store each, with ~10 ms of Python after each, 40 rounds, profiled store-less at
the default interval.  Truth is the thread's CPU time measured around the guest
calls.  Prints each run's error (sampled guest share minus the measured one),
sorted: its spread is chance, its centre a bias.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import sigprof  # noqa: E402
import test_python_time as workload  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    engine = sigprof.engine()
    module = workload.module_of(engine)
    errors = []
    for _ in range(a.runs):
        measured: dict = {}
        with sigprof.profile() as prof:
            workload.new_store_per_call(engine, module, measured)
        cpu, in_guest = measured["MainThread"]
        sampled, sampled_guest, _ = workload.sampled_by_thread(prof.recording)["MainThread"]
        errors.append(sampled_guest / sampled - in_guest / cpu)
    print(f"capture {prof.meta['capture']}: guest share error over {a.runs} runs, sorted:")
    print(" ".join(f"{e:+.3f}" for e in sorted(errors)))


if __name__ == "__main__":
    main()
