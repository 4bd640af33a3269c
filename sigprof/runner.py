"""Run a wasm module under the profiler: what ``sigprof record`` does.

A WASI command module runs its ``_start`` with the given argv, preopened
directories, environment and the terminal's stdin/stdout/stderr, like
``wasmtime run``.  With ``invoke``, an exported function is called with
arguments converted to its parameter types instead.  A module's exit code
(WASI ``proc_exit``), a trap or Ctrl-C all still produce a recording.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import wasmtime

from . import profiler
from .recording import Recording

TRAP_EXIT_CODE = 134          # what `wasmtime run` uses for a trap on Unix (128 + SIGABRT)
INTERRUPT_EXIT_CODE = 130     # 128 + SIGINT


class RunError(ValueError):
    """The module could not be run as asked (the message says why, in one line)."""


@dataclass
class RunResult:
    recording: Recording
    exit_code: int
    outcome: str                  # "ok", "exit", "trap", "interrupted"
    message: str = ""             # the trap's message, first line
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
                out.append(int(value, 0))
            elif kind in ("f32", "f64"):
                out.append(float(value))
            else:
                raise RunError(f"export {name!r} takes a {kind} argument, which the command "
                               f"line cannot pass")
        except ValueError:
            raise RunError(f"argument {value!r} is not a valid {kind} for export {name!r}") from None
    return out


def load_module(engine: wasmtime.Engine, path: str) -> wasmtime.Module:
    if not os.path.isfile(path):
        raise RunError(f"{path}: no such file")
    try:
        return wasmtime.Module.from_file(engine, path)
    except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path}: cannot compile the module: {first}") from None


def run(path: str, args: Sequence[str] = (), invoke: Optional[str] = None,
        invoke_args: Sequence[str] = (), dirs: Sequence[Tuple[str, str]] = (),
        env: Sequence[Tuple[str, str]] = (), name: Optional[str] = None,
        **profile_options: Any) -> RunResult:
    """Compile, link and run ``path`` under ``sigprof.profile``; see the module doc."""
    engine = profiler.engine()
    module = load_module(engine, path)
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
    store.set_epoch_deadline(profiler.FAR_DEADLINE)   # instantiation may run a start function
    try:
        instance = linker.instantiate(store, module)
    except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
        first = str(exc).strip().splitlines()[0]
        raise RunError(f"{path}: cannot instantiate the module: {first}") from None
    exports = instance.exports(store)
    entry = invoke or "_start"
    names = list(exports)
    func = exports[entry] if entry in names else None
    if not isinstance(func, wasmtime.Func):
        available = sorted(n for n in names if isinstance(exports[n], wasmtime.Func))
        what = f"export {entry!r}" if invoke else "_start export (it is not a WASI command)"
        hint = f"; exported functions: {', '.join(available)}" if available else ""
        use = "" if invoke else " -- use --invoke NAME to call one"
        raise RunError(f"{path}: has no {what}{hint}{use}")
    call_args = _convert_args(func.type(store), invoke_args, entry)

    prof = profiler.profile(store, modules=[(module_name, module)], name=module_name,
                            **profile_options)
    exit_code, outcome, message, results = 0, "ok", "", None
    try:
        with prof:
            try:
                results = func(store, *call_args)
            except wasmtime.ExitTrap as exc:
                exit_code, outcome = exc.code, "exit"
            except wasmtime.Trap as exc:
                exit_code, outcome = TRAP_EXIT_CODE, "trap"
                message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "trap"
            except wasmtime.WasmtimeError as exc:
                exit_code, outcome = TRAP_EXIT_CODE, "trap"
                message = str(exc).strip().splitlines()[0]
    except KeyboardInterrupt:
        exit_code, outcome, message = INTERRUPT_EXIT_CODE, "interrupted", "interrupted (Ctrl-C)"
    assert prof.recording is not None
    if results is not None and not isinstance(results, list):
        results = [results]
    return RunResult(prof.recording, exit_code, outcome, message, results)

