"""Whole-profile cost on a real program: start, run, stop, memory -- sigprof and GuestProfiler.

    python benchmarks/whole_profile.py MODULE.wasm [--js SCRIPT.js] [--invoke NAME]
        [--stub-imports trap|zero] [--dir HOST::GUEST]... [--repeat 5] [--json out.json]
        [-- ARGS...]

The program is loaded the way ``sigprof record`` loads it (``runner``: a WASI
command's ``_start``, or ``--invoke`` after a reactor's ``_initialize``, with
``--stub-imports`` for imports WASI lacks).  Without ARGS it is QuickJS-NG's
``qjs`` running a ~1 s fib workload (``--js`` for another script).

Compile: once without wasmtime's cache, then from the cache.  Then, ``--repeat``
times with the modes interleaved, the program runs in a fresh store:

* ``plain``: no profiler;
* ``sigprof``: ``sigprof.profile(store, modules=[...])`` at default settings, the
  time taken from just before ``start()`` to just after ``stop()``;
* ``guestprofiler``: wasmtime's GuestProfiler as ``wasmtime run --profile=guest``
  drives it (a 1 ms wall-clock epoch thread), from ``new`` to ``finish``.

Overhead = median profiled time / median plain time - 1.  Start and stop are
timed on their own.  Extra peak RSS: each mode once more in a process of its
own (compile from the cache, reset the high-water mark, run), peak RSS
(``VmHWM``) minus plain's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import wasmtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import sigprof  # noqa: E402
from sigprof import runner  # noqa: E402
from sigprof.defaults import STUB_MODES  # noqa: E402
from guestprofiler import NativeGuestProfiler  # noqa: E402

DEFAULT_JS = """
function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
let total = 0;
for (let i = 0; i < ROUNDS; i++) total += fib(20);
console.log(total);
"""


class Program:
    def __init__(self, path: str, argv: List[str], dirs: List[List[str]],
                 invoke: Optional[str], stub_imports: Optional[str], cache: bool = True):
        self.path, self.argv, self.dirs = path, argv, dirs
        self.invoke, self.stub_imports = invoke, stub_imports
        self.binary, self.info = runner.read_binary(path)
        runner.check_runnable(path, self.info, invoke, stub_imports)
        self.engine = runner.engine_for_record(cache, None)
        t0 = time.perf_counter()
        self.module = runner.compile_module(self.engine, path, self.binary)
        self.compile_s = time.perf_counter() - t0
        self.name = os.path.basename(path)

    def instance(self) -> "tuple[wasmtime.Store, List[wasmtime.Func]]":
        store = wasmtime.Store(self.engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = [self.name, *self.argv]
        for host, guest in self.dirs:
            wasi.preopen_dir(host, guest)
        wasi.stdout_file = os.devnull
        store.set_wasi(wasi)
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        if self.stub_imports:
            runner.define_stubs(linker, self.module, self.stub_imports)
        store.set_epoch_deadline(sigprof.FAR_DEADLINE)
        exports = linker.instantiate(store, self.module).exports(store)
        calls = [exports["_initialize"]] if self.invoke and "_initialize" in self.info.exports else []
        calls.append(exports[self.invoke or "_start"])
        return store, [c for c in calls if isinstance(c, wasmtime.Func)]

    def run(self, mode: str) -> Dict[str, float]:
        store, calls = self.instance()

        def body() -> None:
            for call in calls:
                try:
                    call(store)
                except wasmtime.ExitTrap as exc:
                    if exc.code:
                        raise
        if mode == "plain":
            t0 = time.perf_counter()
            body()
            return {"total_s": time.perf_counter() - t0}
        if mode == "sigprof":
            prof = sigprof.profile(store, modules=[(self.name, self.module)])
            t0 = time.perf_counter()
            prof.start()
            t1 = time.perf_counter()
            body()
            t2 = time.perf_counter()
            prof.stop()
            t3 = time.perf_counter()
            return {"total_s": t3 - t0, "start_s": t1 - t0, "stop_s": t3 - t2,
                    "samples": float(prof.samples)}
        t0 = time.perf_counter()
        gp = NativeGuestProfiler(self.engine, self.name, [(self.name, self.module)])
        t1 = time.perf_counter()
        gp.run(store, body)
        t2 = time.perf_counter()
        gp.finish()
        t3 = time.perf_counter()
        return {"total_s": t3 - t0, "start_s": t1 - t0, "stop_s": t3 - t2,
                "samples": float(gp.samples)}


def _peak_rss_mb(args: List[str], mode: str) -> float:
    """Peak RSS of one run in a process of its own, counted from after the compile
    (loading a big module's code peaks higher than anything the run does; Linux's
    clear_refs resets the high-water mark)."""
    code = ("import sys; sys.argv = sys.argv[:1] + sys.argv[2:]; "
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import whole_profile as w; "
            "p = w.program_from_args(w.parser().parse_args()); "
            "open('/proc/self/clear_refs', 'w').write('5'); "
            f"p.run({mode!r}); "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code, "x", *args], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("module")
    ap.add_argument("--js", help="a JavaScript file for qjs (default: a fib workload)")
    ap.add_argument("--rounds", type=int, default=1000, help="ROUNDS in the default workload")
    ap.add_argument("--invoke")
    ap.add_argument("--stub-imports", choices=STUB_MODES)
    ap.add_argument("--dir", action="append", default=[], metavar="HOST::GUEST")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("args", nargs="*")
    return ap


def program_from_args(a: argparse.Namespace, cache: bool = True) -> Program:
    dirs = [d.split("::", 1) for d in a.dir]
    if a.args:
        return Program(a.module, a.args, dirs, a.invoke, a.stub_imports, cache)
    work = tempfile.mkdtemp(prefix="sigprof-bench-")
    script = Path(a.js).read_text() if a.js else DEFAULT_JS.replace("ROUNDS", str(a.rounds))
    Path(work, "bench.js").write_text(script)
    return Program(a.module, ["/work/bench.js"], dirs + [[work, "/work"]], a.invoke,
                   a.stub_imports, cache)


def main() -> None:
    a = parser().parse_args()
    t0 = time.perf_counter()
    uncached = program_from_args(a, cache=False)
    uncached_s = uncached.compile_s
    del uncached
    program_from_args(a)                       # fills the cache if it was empty
    program = program_from_args(a)             # compiled from the cache
    modes = ("plain", "sigprof", "guestprofiler")
    runs: Dict[str, List[Dict[str, float]]] = {m: [] for m in modes}
    program.run("plain")                       # warm up
    for _ in range(a.repeat):
        for mode in modes:
            runs[mode].append(program.run(mode))
    plain = statistics.median(r["total_s"] for r in runs["plain"])
    argv = sys.argv[1:]
    rss = {mode: _peak_rss_mb(argv, mode) for mode in modes}
    result: Dict[str, Any] = {"module": program.name, "compile_s": uncached_s,
                              "compile_cached_s": program.compile_s, "plain_s": plain,
                              "peak_rss_mb": rss}
    print(f"{program.name}: compile {uncached_s:.2f} s, from the cache {program.compile_s:.3f} s; "
          f"plain run {plain:.3f} s; median of {a.repeat}, peak RSS plain {rss['plain']:.0f} MB")
    for mode in modes[1:]:
        totals = [r["total_s"] for r in runs[mode]]
        ratios = [p / q["total_s"] - 1 for p, q in zip(totals, runs["plain"])]

        def med(key: str) -> float:
            return statistics.median(r[key] for r in runs[mode])
        row = {"overhead": statistics.median(totals) / plain - 1,
               "overhead_spread": [min(ratios), max(ratios)], "samples": med("samples"),
               "start_ms": med("start_s") * 1000,
               "start_ms_spread": [min(r["start_s"] for r in runs[mode]) * 1000,
                                   max(r["start_s"] for r in runs[mode]) * 1000],
               "stop_ms": med("stop_s") * 1000,
               "stop_ms_spread": [min(r["stop_s"] for r in runs[mode]) * 1000,
                                  max(r["stop_s"] for r in runs[mode]) * 1000],
               "extra_peak_rss_mb": rss[mode] - rss["plain"]}
        result[mode] = row
        print(f"  {mode:<14} overhead {100 * row['overhead']:+.2f}% "
              f"({100 * min(ratios):+.2f}% to {100 * max(ratios):+.2f}%), "
              f"{row['samples']:.0f} samples; start {row['start_ms']:.2f} ms, "
              f"stop {row['stop_ms']:.2f} ms; peak RSS {row['extra_peak_rss_mb']:+.0f} MB")
    result["wall_s"] = time.perf_counter() - t0
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
