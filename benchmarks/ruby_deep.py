"""Ruby 3.4 on WASI recursing through C, profiled: whole deep stacks, a quick report.

    npm pack @ruby/3.4-wasm-wasi && tar xzf ruby-3.4-wasm-wasi-*.tgz
    python benchmarks/ruby_deep.py package/dist/ruby.debug+stdlib.wasm [--levels 250] [-o ruby.sigprof]

The npm build is a reactor with a component-style ABI (`ruby-init`,
`rb-eval-string-protect`, strings passed through `cabi_realloc`) and
JavaScript-side imports; those are stubbed as `sigprof record --stub-imports
zero` does (each returns zeros). The Ruby program recurses ``--levels`` times through
``Array#each`` so that every level re-enters the VM from C (a plain Ruby call
does not grow the wasm stack), then spins. Prints the stack depths seen and
writes the raw recording, for `sigprof report` to be timed on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sigprof  # noqa: E402
from sigprof.runner import define_stubs  # noqa: E402

PROGRAM = ("def spin(n) = n == 0 ? (i = 0; i += 1 while i < 5_000_000; i) "
           ": [n].each { |k| return spin(k - 1) }; spin(LEVELS)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wasm")
    ap.add_argument("--levels", type=int, default=250)
    ap.add_argument("-o", "--output", default="ruby.sigprof")
    a = ap.parse_args()
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, a.wasm)
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)   # the engine interrupts on epochs
    store.set_wasi(wasmtime.WasiConfig())
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    define_stubs(linker, module, "zero")
    instance = linker.instantiate(store, module)
    exports = instance.exports(store)
    # Export names carry their signature ("ruby-init: func(...)"): look up by prefix.
    by_prefix = {e.name.split(":")[0]: exports[e.name] for e in module.exports}
    memory, realloc = by_prefix["memory"], by_prefix["cabi_realloc"]

    def c_string(text: str) -> tuple[int, int]:
        data = text.encode()
        ptr = realloc(store, 0, 0, 1, len(data) + 1)
        memory.write(store, data + b"\0", ptr)      # ruby reads them as C strings
        return ptr, len(data)

    args = [c_string(s) for s in ("ruby.wasm", "-e_=0")]
    array = realloc(store, 0, 0, 4, 8 * len(args))
    for i, (ptr, size) in enumerate(args):
        memory.write(store, ptr.to_bytes(4, "little") + size.to_bytes(4, "little"), array + 8 * i)
    by_prefix["_initialize"](store)
    by_prefix["ruby-init"](store, array, len(args))
    by_prefix["ruby-init-loadpath"](store)
    code = c_string(PROGRAM.replace("LEVELS", str(a.levels)))
    with sigprof.profile(store, modules=[(Path(a.wasm).name, module)]) as prof:
        result = by_prefix["rb-eval-string-protect"](store, *code)
    status = int.from_bytes(memory.read(store, result + 4, result + 8), "little", signed=True)
    if status:
        sys.exit(f"ruby_deep: the Ruby program raised (status {status})")
    prof.save(a.output)
    depths = sorted(len(frames) for frames, _ in prof.recording.iter_stacks())
    print(f"{prof.samples} samples; guest stack depth min {depths[0]}, median "
          f"{depths[len(depths) // 2]}, max {depths[-1]}; truncated "
          f"{prof.recording.truncated}; wrote {a.output}")


if __name__ == "__main__":
    main()
