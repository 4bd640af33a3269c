"""What ``sigprof.instrument()`` costs an application while no profile runs: a loop
creating a store, instantiating a small module in it and calling one export, as an
application making a store per request does.

    python benchmarks/instrument_cost.py [--repeat 7] [--stores 2000]

Each repeat runs the loop in two fresh processes, one plain and one after
``instrument()``, interleaved; the ratio is instrumented / plain CPU time.
Prints the median ratio and its spread (min-max) over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOP = """
import sys, time
sys.path.insert(0, {root!r})
if {instrumented}:
    import sigprof
    sigprof.instrument()
import wasmtime
engine = wasmtime.Engine(wasmtime.Config())
module = wasmtime.Module(engine, '(module (func (export "f") (result i32) i32.const 7))')
start = time.process_time_ns()
for _ in range({stores}):
    store = wasmtime.Store(engine)
    wasmtime.Instance(store, module, []).exports(store)["f"](store)
print(time.process_time_ns() - start)
"""


def cpu_ns(instrumented: bool, stores: int) -> int:
    code = LOOP.format(root=str(ROOT), instrumented=instrumented, stores=stores)
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--stores", type=int, default=2000)
    a = parser.parse_args()
    ratios = []
    for _ in range(a.repeat):
        plain = cpu_ns(False, a.stores)
        hooked = cpu_ns(True, a.stores)
        ratios.append(hooked / plain)
    print(f"instrumented / plain CPU, {a.stores} stores: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {a.repeat} repeats)")


if __name__ == "__main__":
    main()
