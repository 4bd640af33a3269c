"""Run a wasm module under the profiler: what ``sigprof record`` does.

A WASI command module runs its ``_start`` with the given argv, preopened
directories, environment and the terminal's stdin/stdout/stderr, like
``wasmtime run``.  With ``invoke``, an exported function is called with
arguments converted to its parameter types instead; a WASI reactor's
``_initialize`` runs first.  Imports WASI does not provide can be stood in for
(``stub_imports``: a call traps naming the import, or returns zeros).  The
entry point, its parameter and result types, the arguments and the imports
are checked from the binary before it is compiled, so a module that cannot run
fails at once; compiling goes through wasmtime's compile cache unless ``cache``
is off, and one that takes longer than ``compile_note_after_s`` is announced
through ``say``; ``when_stopped`` is called as soon as the guest call has ended.
A module's exit code (WASI ``proc_exit``), a trap or Ctrl-C
during the call all still produce a recording; a start function runs while
the module is instantiated, before recording begins, so its trap or exit
raises ``StoppedBeforeRecording``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import wasmtime

from . import _wasmtime as wt, profiler
from .defaults import INTERRUPT_EXIT_CODE, TRAP_EXIT_CODE
from .demangle import display_name
from .frames import unnamed_function
from .recording import Recording
from .wasmfile import FuncSignature, WasmFormatError, WasmInfo, read_wasm, wasm_bytes


class RunError(ValueError):
    """The module could not be run as asked (the message says why, in one line)."""


class StoppedBeforeRecording(Exception):
    """The guest trapped or exited in its start function, before anything was recorded."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


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
    if value != value or value in (float("inf"), float("-inf")):
        raise RunError(f"invalid interval {text!r}: it must be a finite duration")
    if not value > 0:
        raise RunError(f"invalid interval {text!r}: interval must be positive")
    if value < 1e-6 or value > 60:
        raise RunError(f"interval {text!r} is out of range (1us to 60s)")
    return value


CLI_TYPES = ("i32", "i64", "f32", "f64")      # what a command-line argument can be


def signature_of(func_type: wasmtime.FuncType) -> FuncSignature:
    """wasmtime's view of a signature (reading a v128 in it aborts the process: see
    ``WasmInfo.signature``, which reads the binary instead)."""
    return FuncSignature(tuple(str(t) for t in func_type.params),
                         tuple(str(t) for t in func_type.results))


def convert_args(signature: FuncSignature, args: Sequence[str], name: str) -> List[object]:
    """The command line's arguments as the export's parameter types, or a RunError."""
    for kind in signature.params:
        if kind not in CLI_TYPES:
            raise RunError(f"export {name!r} takes a parameter of type {kind}, which the "
                           f"command line cannot pass (it passes {', '.join(CLI_TYPES)})")
    for kind in signature.results:
        if kind not in CLI_TYPES:
            raise RunError(f"export {name!r} returns a value of type {kind}, which the "
                           f"command line cannot show (it shows {', '.join(CLI_TYPES)})")
    params = signature.params
    if len(args) != len(params):
        kinds = ", ".join(params) or "none"
        raise RunError(f"export {name!r} takes {len(params)} argument(s) ({kinds}), "
                       f"{len(args)} given")
    out: List[object] = []
    for value, kind in zip(args, params):
        try:
            out.append(_integer(value, kind) if kind in ("i32", "i64") else float(value))
        except RunError:                        # out of range: already says so
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


class StubCalled(Exception):
    """A guest called an import that ``--stub-imports trap`` stood in for."""


def _names_source(path: str, binary: bytes) -> Union[str, bytes]:
    """What ``profile(names=)`` is given for the module run: the wasm file's path,
    so a split debug file beside it is found (``dwarf.with_external_dwarf``); WAT
    as the binary it was turned into."""
    try:
        with open(path, "rb") as file:
            is_wasm = file.read(4) == binary[:4]
    except OSError:
        is_wasm = False
    return path if is_wasm else binary


def read_binary(path: str) -> Tuple[bytes, WasmInfo]:
    """The module's binary (WAT is converted) and what it imports and exports."""
    if os.path.isdir(path):
        raise RunError(f"{path}: is a directory, not a module file")
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
    function_imports = [i for i in info.imports if i.kind == "func"]
    for imported, signature in zip(function_imports, info.function_types):
        if imported in foreign and "v128" in signature.params + signature.results:
            raise RunError(f"{path}: cannot stand in for {imported.module}.{imported.name}: "
                           f"its type uses v128, which wasmtime-py cannot pass")


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
        wt.set_max_wasm_stack(config, max_wasm_stack)
    return profiler.engine(config)


COMPILE_NOTE_AFTER_S = 1.0     # a compile still running this long is announced


def compile_module(engine: wasmtime.Engine, path: str, binary: bytes,
                   say: Optional[Callable[[str], None]] = None,
                   note_after_s: float = COMPILE_NOTE_AFTER_S,
                   cached: bool = False) -> wasmtime.Module:
    """Compile on a worker thread while this one waits, so that a signal's handler runs
    at once (Python runs handlers only between bytecodes, never during a foreign call)
    and a slow compile can be announced.  Daemonic: an interrupted compile is abandoned."""
    compiled: List[object] = []

    def work() -> None:
        try:
            compiled.append(wasmtime.Module(engine, binary))
        except wasmtime.WasmtimeError as exc:
            compiled.append(exc)
    worker = threading.Thread(target=work, name="sigprof-compile", daemon=True)
    worker.start()
    worker.join(note_after_s)
    if worker.is_alive() and say is not None:
        size_mb = len(binary) / 1e6
        shown = f"{size_mb:.0f} MB" if size_mb >= 10 else f"{size_mb:.1f} MB"
        say(f"compiling {os.path.basename(path)} ({shown} of wasm)..."
            + (" wasmtime's compile cache keeps the result for the next run" if cached else ""))
    worker.join()
    module = compiled[0]
    if isinstance(module, wasmtime.WasmtimeError):
        raise RunError(f"{path}: cannot compile the module: {_first_line(module)}") from None
    assert isinstance(module, wasmtime.Module)
    return module


def _trap_place(trap: wasmtime.Trap) -> Tuple[Optional[str], str]:
    """The function the guest trapped in (if known), and why it trapped."""
    why = _reason(trap) or "trap"
    frames = trap.frames
    if not frames:
        return None, why
    top = frames[0]
    name = display_name(top.func_name) if top.func_name else unnamed_function(top.func_index)
    return name, why


def _trap_message(trap: wasmtime.Trap) -> str:
    """`` in FUNCTION: wasm trap: ...`` -- where the guest trapped, and why."""
    name, why = _trap_place(trap)
    return f" in {name}: {why}" if name else f": {why}"


def _reason(exc: BaseException) -> str:
    """wasmtime's cause: the last line of ``... wasm backtrace: ... Caused by: WHY``."""
    lines = [line.strip() for line in wt.error_text(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _first_line(exc: BaseException) -> str:
    text = wt.error_text(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _instantiate(linker: wasmtime.Linker, store: wasmtime.Store, module: wasmtime.Module,
                 path: str) -> wasmtime.Instance:
    """Link and run the start function, if any: a trap or exit there stops the run."""
    before = "nothing was recorded (a start function runs before recording begins)"
    try:
        return linker.instantiate(store, module)
    except wasmtime.ExitTrap as exc:
        raise StoppedBeforeRecording(exc.code, f"guest exited with code {exc.code} in its "
                                               f"start function; {before}") from None
    except wasmtime.Trap as exc:
        name, why = _trap_place(exc)
        where = f"in {name}, its start function" if name else "in its start function"
        raise StoppedBeforeRecording(TRAP_EXIT_CODE,
                                     f"guest trapped {where}: {why}; {before}") from None
    except StubCalled as exc:
        raise StoppedBeforeRecording(TRAP_EXIT_CODE, f"guest trapped in its start "
                                                     f"function: {exc}; {before}") from None
    except wasmtime.WasmtimeError as exc:
        if "wasm backtrace" in str(exc):          # the start function ran and failed
            raise StoppedBeforeRecording(TRAP_EXIT_CODE, f"guest trapped in its start "
                                                         f"function: {_reason(exc)}; "
                                                         f"{before}") from None
        raise RunError(f"{path}: cannot instantiate the module: {_reason(exc)}") from None


def run(path: str, args: Sequence[str] = (), invoke: Optional[str] = None,
        invoke_args: Sequence[str] = (), dirs: Sequence[Tuple[str, str]] = (),
        env: Sequence[Tuple[str, str]] = (), name: Optional[str] = None,
        names: Optional[str] = None, stub_imports: Optional[str] = None, cache: bool = True,
        max_wasm_stack: Optional[int] = None, say: Optional[Callable[[str], None]] = None,
        compile_note_after_s: float = COMPILE_NOTE_AFTER_S,
        when_stopped: Optional[Callable[[], None]] = None,
        **profile_options: Any) -> RunResult:
    """Check, compile, link and run ``path`` under ``sigprof.profile``; see the module doc."""
    binary, info = read_binary(path)
    engine = engine_for_record(cache, max_wasm_stack)
    try:
        wasmtime.Module.validate(engine, binary)      # milliseconds: no code generated
    except wasmtime.WasmtimeError as exc:
        raise RunError(f"{path}: cannot compile the module: {_first_line(exc)}") from None
    check_runnable(path, info, invoke, stub_imports)
    entry = invoke or "_start"
    signature = info.signature(entry)
    call_args = convert_args(signature, invoke_args, entry) if signature else None
    if names is not None:
        read_binary(names)               # a bad names file fails now, not after the run
    module = compile_module(engine, path, binary, say, compile_note_after_s, cached=cache)
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
    instance = _instantiate(linker, store, module, path)
    exports = instance.exports(store)
    func = exports[entry]
    assert isinstance(func, wasmtime.Func)     # check_runnable saw it exported as a function
    initialize = exports["_initialize"] if invoke and "_initialize" in info.exports else None
    if call_args is None:                # types the binary reader did not know: ask wasmtime
        call_args = convert_args(signature_of(func.type(store)), invoke_args, entry)

    memories = [m for m in exports.values() if isinstance(m, wasmtime.Memory)][:16]
    # The Python that calls this guest is sigprof's own runner: no Python frames.
    prof = profiler.profile(store, modules=[(module_name, module)], name=module_name,
                            names=names if names is not None else _names_source(path, binary),
                            memories=memories, python_frames=False, **profile_options)
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
            finally:
                if when_stopped is not None:
                    when_stopped()       # before the profile is built: nothing may stop that
    except KeyboardInterrupt:
        exit_code, outcome, message = INTERRUPT_EXIT_CODE, "interrupted", "interrupted (Ctrl-C)"
    assert prof.recording is not None
    if results is not None and not isinstance(results, list):
        results = [results]
    return RunResult(prof.recording, exit_code, outcome, message, results)
