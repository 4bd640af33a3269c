"""Run a wasm module under the profiler: what ``sigprof record`` does.

A WASI command module runs its ``_start`` with the given argv, preopened
directories, environment and the terminal's stdin/stdout/stderr, like
``wasmtime run``.  With ``invoke``, an exported function is called with
arguments converted to its parameter types instead; a WASI reactor's
``_initialize`` runs first.  Imports WASI does not provide can be stood in for
(``stub_imports``: a call traps naming the import, or returns zeros).  The
entry point and the imports are checked from the binary before it is
compiled, so a module that cannot run fails at once; compiling goes through
wasmtime's compile cache unless ``cache`` is off.  A module's exit code (WASI
``proc_exit``), a trap or Ctrl-C all still produce a recording.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import wasmtime

from . import profiler
from .demangle import display_name
from .recording import Recording
from .wasmfile import WasmFormatError, WasmInfo, read_wasm, wasm_bytes

TRAP_EXIT_CODE = 134          # what `wasmtime run` uses for a trap on Unix (128 + SIGABRT)
INTERRUPT_EXIT_CODE = 130     # 128 + SIGINT


class RunError(ValueError):
    """The module could not be run as asked (the message says why, in one line)."""


@dataclass
class RunResult:
    recording: Recording
    exit_code: int
    outcome: str                  # "ok", "exit", "trap", "interrupted"
    message: str = ""             # what ended it: " in FUNCTION: why" for a trap
    results: Optional[List[object]] = None


def parse_interval(text: str) -> float:
    """``250us``, ``1ms``, ``2s``, ``500ns`` or plain seconds (``0.004``) -> seconds."""
    units = (("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0))
    raw = text.strip().lower()
    scale = 1.0
    for suffix, factor in units:
        if raw.endswith(suffix):
            raw, scale = raw[: -len(suffix)].strip(), factor
            break
    try:
        value = float(raw) * scale
    except ValueError:
        raise RunError(f"invalid interval {text!r}: use a number of seconds or a value with "
                       f"a unit, like 250us, 1ms or 0.004") from None
    if not value > 0 or value != value or value == float("inf"):
        raise RunError(f"invalid interval {text!r}: it must be a positive, finite duration")
    if value < 1e-6 or value > 60:
        raise RunError(f"interval {text!r} is out of range (1us to 60s)")
    return value


def _convert_args(func_type: wasmtime.FuncType, args: Sequence[str], name: str) -> List[object]:
    params = func_type.params
    if len(args) != len(params):
        kinds = ", ".join(str(p) for p in params) or "none"
        raise RunError(f"export {name!r} takes {len(params)} argument(s) ({kinds}), "
                       f"{len(args)} given")
    out: List[object] = []
    for value, ty in zip(args, params):
        kind = str(ty)
        try:
            if kind in ("i32", "i64"):
                out.append(_integer(value, kind))
            elif kind in ("f32", "f64"):
                out.append(float(value))
            else:
                raise RunError(f"export {name!r} takes a {kind} argument, which the command "
                               f"line cannot pass")
        except RunError:
            raise
        except ValueError:
            raise RunError(f"argument {value!r} is not a valid {kind} for export {name!r}") from None
    return out


def _integer(value: str, kind: str) -> int:
    """An i32/i64 argument: signed, or the unsigned spelling of its two's complement."""
    bits = 32 if kind == "i32" else 64
    number = int(value, 0)                      # ValueError: not a number at all
    if not -(1 << (bits - 1)) <= number < 1 << bits:
        raise RunError(f"argument {value!r} is out of range for {kind} (from "
                       f"{-(1 << (bits - 1))} to {(1 << bits) - 1})")
    return number - (1 << bits) if number >= 1 << (bits - 1) else number


WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")
STUB_MODES = ("trap", "zero")


class StubCalled(Exception):
    """A guest called an import that ``--stub-imports trap`` stood in for."""


def read_binary(path: str) -> Tuple[bytes, WasmInfo]:
    """The module's binary (WAT is converted) and what it imports and exports."""
    if not os.path.isfile(path):
        raise RunError(f"{path}: no such file")
    try:
        binary = wasm_bytes(path)
        return binary, read_wasm(binary)
    except WasmFormatError as exc:
        text = str(exc)
        if text.startswith(path + ":"):          # WAT, with its line and column
            raise RunError(text) from None
        raise RunError(f"{path}: cannot compile the module: {text}") from None


def check_runnable(path: str, info: WasmInfo, invoke: Optional[str],
                   stub_imports: Optional[str]) -> None:
    """Before compiling: the entry point exists and every import can be provided."""
    functions = sorted(n for n, (kind, _) in info.exports.items() if kind == "func")
    listing = f"; exported functions: {', '.join(functions)}" if functions else ""
    if invoke is not None and invoke not in functions:
        raise RunError(f"{path}: has no exported function {invoke!r}{listing}")
    if invoke is None and "_start" not in functions:
        if "_initialize" in functions:
            raise RunError(f"{path}: is a WASI reactor (it exports _initialize, not _start): "
                           f"name the function to call with --invoke NAME{listing}")
        raise RunError(f"{path}: has no _start export (it is not a WASI command) -- use "
                       f"--invoke NAME to call one{listing}")
    foreign = [i for i in info.imports if i.module not in WASI_MODULES]
    not_functions = [i for i in foreign if i.kind != "func"]
    if not_functions:
        raise RunError(f"{path}: imports what sigprof record cannot provide: "
                       + ", ".join(f"{i.module}.{i.name} ({i.kind})" for i in not_functions))
    if foreign and stub_imports is None:
        shown = ", ".join(f"{i.module}.{i.name}" for i in foreign[:8])
        more = f" and {len(foreign) - 8} more" if len(foreign) > 8 else ""
        raise RunError(f"{path}: imports functions WASI does not provide: {shown}{more} -- "
                       f"run it with --stub-imports trap (a call fails, naming the import) or "
                       f"--stub-imports zero (a call returns zeros)")


def _zero(ty: wasmtime.ValType) -> object:
    kind = str(ty)
    return 0 if kind in ("i32", "i64") else 0.0 if kind in ("f32", "f64") else None


def define_stubs(linker: wasmtime.Linker, module: wasmtime.Module, mode: str) -> None:
    """A stand-in for every function import WASI does not provide."""
    for imported in module.imports:
        ty = imported.type
        if imported.module in WASI_MODULES or not isinstance(ty, wasmtime.FuncType):
            continue
        where = f"{imported.module}.{imported.name}"
        zeros = [_zero(r) for r in ty.results]

        def stub(*args: object, where: str = where, zeros: List[object] = zeros) -> object:
            if mode == "trap":
                raise StubCalled(f"{where} was called, but sigprof record stands in for it "
                                 f"(--stub-imports trap)")
            return None if not zeros else zeros[0] if len(zeros) == 1 else zeros
        linker.define_func(imported.module, imported.name or "", ty, stub)


def engine_for_record(cache: bool, max_wasm_stack: Optional[int]) -> wasmtime.Engine:
    config = wasmtime.Config()
    if cache:
        config.cache = True              # wasmtime's own compile cache (~/.cache/wasmtime)
    if max_wasm_stack is not None:
        config.max_wasm_stack = max_wasm_stack
    return profiler.engine(config)


def compile_module(engine: wasmtime.Engine, path: str, binary: bytes) -> wasmtime.Module:
    try:
        return wasmtime.Module(engine, binary)
    except wasmtime.WasmtimeError as exc:
        raise RunError(f"{path}: cannot compile the module: {_first_line(exc)}") from None


def _trap_message(trap: wasmtime.Trap) -> str:
    """`` in FUNCTION: wasm trap: ...`` -- where the guest trapped, and why."""
    lines = [line.strip() for line in str(trap).strip().splitlines() if line.strip()]
    why = lines[-1] if lines else "trap"
    frames = trap.frames
    if not frames:
        return f": {why}"
    top = frames[0]
    name = display_name(top.func_name) if top.func_name else f"wasm-function[{top.func_index}]"
    return f" in {name}: {why}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run(path: str, args: Sequence[str] = (), invoke: Optional[str] = None,
        invoke_args: Sequence[str] = (), dirs: Sequence[Tuple[str, str]] = (),
        env: Sequence[Tuple[str, str]] = (), name: Optional[str] = None,
        names: Optional[str] = None, stub_imports: Optional[str] = None, cache: bool = True,
        max_wasm_stack: Optional[int] = None, **profile_options: Any) -> RunResult:
    """Check, compile, link and run ``path`` under ``sigprof.profile``; see the module doc."""
    binary, info = read_binary(path)
    engine = engine_for_record(cache, max_wasm_stack)
    try:
        wasmtime.Module.validate(engine, binary)      # milliseconds: no code generated
    except wasmtime.WasmtimeError as exc:
        raise RunError(f"{path}: cannot compile the module: {_first_line(exc)}") from None
    check_runnable(path, info, invoke, stub_imports)
    if names is not None:
        read_binary(names)               # a bad names file fails now, not after the run
    module = compile_module(engine, path, binary)
    module_name = name or os.path.basename(path)
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = [module_name, *args]
    wasi.env = [(k, v) for k, v in env]
    for host, guest in dirs:
        if not os.path.isdir(host):
            raise RunError(f"--dir {host}::{guest}: {host} is not a directory")
        wasi.preopen_dir(host, guest)
    wasi.inherit_stdin()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    if stub_imports is not None:
        define_stubs(linker, module, stub_imports)
    store.set_epoch_deadline(profiler.FAR_DEADLINE)   # instantiation may run a start function
    try:
        instance = linker.instantiate(store, module)
    except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
        first = str(exc).strip().splitlines()[0]
        raise RunError(f"{path}: cannot instantiate the module: {first}") from None
    exports = instance.exports(store)
    entry = invoke or "_start"
    func = exports[entry]
    assert isinstance(func, wasmtime.Func)     # check_runnable saw it exported as a function
    initialize = exports["_initialize"] if invoke and "_initialize" in info.exports else None
    call_args = _convert_args(func.type(store), invoke_args, entry)

    memories = [m for m in exports.values() if isinstance(m, wasmtime.Memory)][:16]
    # The Python that calls this guest is sigprof's own runner: no Python frames.
    prof = profiler.profile(store, modules=[(module_name, module)], name=module_name,
                            names=names if names is not None else binary, memories=memories,
                            python_frames=False, **profile_options)
    exit_code, outcome, message, results = 0, "ok", "", None
    try:
        with prof:
            try:
                if isinstance(initialize, wasmtime.Func):
                    initialize(store)    # a reactor: its constructors first
                results = func(store, *call_args)
            except wasmtime.ExitTrap as exc:
                exit_code, outcome = exc.code, "exit"
            except wasmtime.Trap as exc:
                exit_code, outcome, message = TRAP_EXIT_CODE, "trap", _trap_message(exc)
            except (wasmtime.WasmtimeError, StubCalled) as exc:
                exit_code, outcome = TRAP_EXIT_CODE, "trap"
                message = f": {_first_line(exc)}"
    except KeyboardInterrupt:
        exit_code, outcome, message = INTERRUPT_EXIT_CODE, "interrupted", "interrupted (Ctrl-C)"
    assert prof.recording is not None
    if results is not None and not isinstance(results, list):
        results = [results]
    return RunResult(prof.recording, exit_code, outcome, message, results)
