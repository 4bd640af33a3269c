"""Profile a guest that calls back into Python, from Python.

    python examples/profile_host_calls.py [OUT.json]

The guest (host.wat) alternates wasm work with calls to two Python host
functions: one burns CPU, one sleeps.  With the cpu clock the sleep costs
nothing; the burn shows up as its own frame under the wasm function that
called it.
"""

import sys
import time
from pathlib import Path

import wasmtime

import sigprof


def burn(n):
    x = 0
    for i in range(n):
        x += i * i


def nap(ms):
    time.sleep(ms / 1000)


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "host_calls.json"
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, str(Path(__file__).with_name("host.wat")))
    store = wasmtime.Store(engine)
    linker = wasmtime.Linker(engine)
    ty = wasmtime.FuncType([wasmtime.ValType.i32()], [])
    linker.define_func("env", "burn", ty, burn)
    linker.define_func("env", "nap", ty, nap)
    instance = linker.instantiate(store, module)

    with sigprof.profile(store, modules=[("host.wat", module)]) as prof:
        instance.exports(store)["run"](store, 20, 5_000_000, 100_000, 5)

    prof.save(out)
    print(f"wrote {Path(out).resolve()}: {prof.samples} samples")
    print(prof.report(top=5))


if __name__ == "__main__":
    main()
