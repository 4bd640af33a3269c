"""Capture cost per sample as a ratio to wasmtime's GuestProfiler, on each wasmtime-py
release and CPython: ``capture_cost.py`` (the capture alone) run by each interpreter.

    python benchmarks/across_releases.py PYTHON... [--depths 10,200] [--repeat 5]

Each PYTHON is an interpreter with wasmtime-py and sigprof installed (``.ci/wasmtimes``
and ``.ci/pythons`` make such venvs).  The runs are one after another, so only the
ratios (sigprof against the GuestProfiler, both measured in the same run) compare
across lines; each is the median over ``--repeat`` with its spread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS = ("import sys; from importlib.metadata import version; import sigprof._native as n; "
            "print(version('wasmtime'), '%d.%d' % sys.version_info[:2], "
            "'native' if n.available() else 'pure')")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pythons", nargs="+")
    ap.add_argument("--depths", default="10,200")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--samples", type=int, default=3000)
    a = ap.parse_args()
    print(f"{'wasmtime-py':>11} {'CPython':>7} {'capture':>7} {'depth':>5} {'sigprof µs':>10} "
          f"{'GuestProfiler µs':>16} {'ratio':>6} {'spread':>10}")
    for python in a.pythons:
        wasmtime_version, python_version, capture = subprocess.run(
            [python, "-c", VERSIONS], check=True, capture_output=True, text=True).stdout.split()
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run([python, str(HERE / "capture_cost.py"), "--depths", a.depths,
                            "--repeat", str(a.repeat), "--samples", str(a.samples),
                            "--seconds", "0", "--json", out.name],
                           check=True, stdout=subprocess.DEVNULL)
            figures = json.loads(Path(out.name).read_text())["capture_alone"]
        for r in figures:
            print(f"{wasmtime_version:>11} {python_version:>7} {capture:>7} {r['depth']:>5} "
                  f"{r['sigprof_us']:>10.2f} {r['guestprofiler_us']:>16.2f} {r['ratio']:>6.2f} "
                  f"{r['ratio_spread']:>10}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
