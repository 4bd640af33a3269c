"""What source lines cost on a big module: resolve time and memory for 10,000 distinct PCs.

    python benchmarks/lines_cost.py [--functions 2500] [--pcs 10000] [--repeat 5]

A C program of ``--functions`` functions, each with a loop and an inlined helper,
is built ``-g -O2`` for wasm32-wasi (Debian clang; the binary's size is printed:
the default is ~3 MB). The module is compiled, and ``--pcs`` distinct
addresses spread over its functions' code become synthetic samples, one each,
which ``_resolve.resolve_recording`` -- what ``stop()`` runs -- resolves with the
binary given (so every one is looked up in its DWARF: file, line, inlined
frames). Three figures, each the median of ``--repeat`` runs with its spread:

* cold: a fresh resolve, the DWARF read from the binary (line tables, the
  inlined-subroutine trees of the subprograms the addresses fall in);
* cached: the same resolve again, as the next profile of the module does (its
  DWARF kept by its digest, ``_resolve.module_dwarf``);
* without lines: the same resolve with no binary (the symbols alone), so the
  difference is what lines cost;
* peak memory the cold resolve allocates (``tracemalloc``: Python objects,
  pyelftools' included).

No profile runs: the samples are made up, so the figure is the resolver's alone,
not the capture's.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from array import array
from pathlib import Path

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sigprof  # noqa: E402
from sigprof import _resolve, _wasmtime as wt  # noqa: E402
from sigprof._ring import ORIGIN_GUEST, RawSample  # noqa: E402
from sigprof._wasmtime import image  # noqa: E402
from sigprof.frames import ROLE_WASM  # noqa: E402
from sigprof.wasmfile import read_wasm  # noqa: E402


def program(functions: int) -> str:
    parts = ["#include <stdlib.h>"]
    for i in range(functions):
        parts.append(f"""
static inline int helper_{i}(int x) {{ return x * {i + 3} + (x >> {i % 7 + 1}); }}
__attribute__((noinline)) int func_{i}(int *a, int n) {{
    int s = 0;
    for (int j = 0; j < n; j++) {{
        s += helper_{i}(a[j]);
        if (s > {1000 + i}) s -= a[(j + {i}) % n];
    }}
    return s;
}}""")
    parts.append("int (*table[])(int *, int) = {" + ", ".join(f"func_{i}" for i in range(functions))
                 + "};")
    parts.append("""
int main(int argc, char **argv) {
    int a[64];
    for (int i = 0; i < 64; i++) a[i] = i * argc;
    int s = 0;
    for (unsigned i = 0; i < sizeof table / sizeof table[0]; i++) s += table[i](a, 64);
    return s & 1;
}""")
    return "\n".join(parts)


def build(functions: int, directory: Path) -> bytes:
    source = directory / "big.c"
    source.write_text(program(functions))
    out = directory / "big.wasm"
    subprocess.run(["clang", "--target=wasm32-wasi", "-g", "-O2", "-o", str(out), str(source)],
                   check=True)
    return out.read_bytes()


def samples_for(module: wasmtime.Module, pcs: int):
    """``pcs`` distinct return addresses spread over the guest functions' code."""
    start, end = wt.module_image_range(module)
    table = image.image_from_memory(start, end, "big", True, wt.read_memory)
    functions = [f for f in map(table.symbols.function_at, range(len(table.symbols)))
                 if f.role == ROLE_WASM and f.size > 8]
    chosen = set()
    step = 0
    while len(chosen) < pcs and step < 10_000:
        for f in functions:
            offset = 1 + (step * 7919 + f.start * 31) % (f.size - 1)   # spread over the body
            chosen.add(f.start + offset)
            if len(chosen) == pcs:
                break
        step += 1
    out = []
    for k, offset in enumerate(sorted(chosen)):
        pc = table.text_start + offset
        out.append(RawSample(time_ns=k, cpu_ns=1000, wall_ns=1000, origin=ORIGIN_GUEST, ticks=1,
                             pcs=memoryview(array("Q", [pc])), stack_hash=pc,
                             depth_limited=True))
    return (start, end), out


def resolve(image_range, samples, binary):
    ref = _resolve.ModuleRef("big", *image_range, read_wasm(binary) if binary else None, binary)
    return _resolve.resolve_recording(samples, modules=[ref], discover_allowed=False,
                                      host_callables=[], meta={})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--functions", type=int, default=2500)
    ap.add_argument("--pcs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(a.functions, Path(tmp))
    module = wasmtime.Module(sigprof.engine(), binary)
    image_range, samples = samples_for(module, a.pcs)
    cold, cached, plain, peaks = [], [], [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        resolve(image_range, samples, None)
        plain.append(time.perf_counter() - t0)
        _resolve._dwarf_cache.clear()
        t0 = time.perf_counter()
        rec = resolve(image_range, samples, binary)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        resolve(image_range, samples, binary)     # the next profile of the same module
        cached.append(time.perf_counter() - t0)
        _resolve._dwarf_cache.clear()
        tracemalloc.start()                  # apart: it slows what it watches
        resolve(image_range, samples, binary)
        peaks.append(tracemalloc.get_traced_memory()[1] / 1e6)
        tracemalloc.stop()
    with_lines = sum(1 for _, frames in rec.modules[0].lines if frames)
    print(f"module: {len(binary) / 1e6:.2f} MB -g -O2, {a.functions} C functions; "
          f"{len(samples)} distinct PCs, {with_lines} with source lines; median of {a.repeat}")

    def row(label, values, unit):
        print(f"  {label:<22} {statistics.median(values):8.3f} {unit} "
              f"({min(values):.3f}-{max(values):.3f})")
    row("resolve with lines", cold, "s")
    row("again (DWARF cached)", cached, "s")
    row("resolve without lines", plain, "s")
    row("peak allocated (lines)", peaks, "MB")


if __name__ == "__main__":
    main()
