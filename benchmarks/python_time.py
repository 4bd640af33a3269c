"""Python time in a store-less profile: a QuickJS embedding with a new store per script.

Each round runs a small script in QuickJS (SIGPROF_QJS: quickjs.wasm) on a new store,
then does Python work with its output; the whole run is under ``sigprof.profile()``.
Prints the sampled CPU against the thread's measured CPU and the Python share sampled
against measured.  Usage: python3 benchmarks/python_time.py [ROUNDS]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import wasmtime

import sigprof

SCRIPT = "let s = 0; for (let i = 0; i < 20000; i++) s += i % 7; console.log(JSON.stringify({s}));"


def python_work(text: str) -> int:
    total = 0
    for i in range(3000):
        total += len(json.dumps({"round": i, "out": text.strip()}))
    return total


def main() -> int:
    path = os.environ.get("SIGPROF_QJS", "")
    if not os.path.exists(path):
        print("python_time: set SIGPROF_QJS to quickjs.wasm", file=sys.stderr)
        return 2
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, path)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        in_guest = 0
        with sigprof.profile() as prof:
            start = time.thread_time_ns()
            for _ in range(rounds):
                store = wasmtime.Store(engine)
                wasi = wasmtime.WasiConfig()
                wasi.argv = ["qjs", "-e", SCRIPT]
                wasi.stdout_file = out
                store.set_wasi(wasi)
                instance = linker.instantiate(store, module)
                before = time.thread_time_ns()
                instance.exports(store)["_start"](store)
                in_guest += time.thread_time_ns() - before
                with open(out) as f:
                    python_work(f.read())
            used = time.thread_time_ns() - start
    rec = prof.recording
    # Python time: samples with no guest frame, nor the guest's unknown frames (a pure-
    # Python capture's guest call that returned before its tick was sampled)
    python_ns = sum(w for funcs, w in rec.iter_stacks()
                    if not any(f.kind in ("wasm", "unknown") for f in funcs))
    sampled = rec.total_cpu_ns
    print(f"sampled {sampled / 1e6:.0f} ms of {used / 1e6:.0f} ms used; Python "
          f"{100 * python_ns / max(sampled, 1):.0f} % sampled, "
          f"{100 * (used - in_guest) / used:.0f} % measured; {rec.samples} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
