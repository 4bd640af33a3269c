"""The C extension (``_csigprof.c``) and whether this process may use it.

The native path is the tick signal handler and the epoch-callback capture that
walks guest frames by frame pointer from wasmtime's ``VMStoreContext``.  It is
used when all of these hold, checked once per process:

* the extension was built (``pip install .`` compiles it; where it cannot,
  the install still succeeds without it);
* ``SIGPROF_PURE_PYTHON`` is not set (the switch the tests use to force the
  pure-Python path);
* Linux on x86-64 or aarch64 (the handler reads the interrupted PC from the
  ucontext, and the frame layout ``[fp] = older fp, [fp+8] = return address``
  is these two architectures');
* a probe on a throwaway store finds ``VMStoreContext`` where wasmtime 50 puts
  it and its exit/entry fields hold what wasmtime's own stack walk expects.

Otherwise ``unavailable_reason()`` says why in one line, and sigprof runs the
pure-Python path: a wakeup-fd relay thread, a Python epoch callback and glibc
``backtrace()``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from types import ModuleType
from typing import Dict, Optional

import wasmtime

from . import _wasmtime as wt

_csigprof: Optional[ModuleType]
try:
    from . import _csigprof
    _IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover - the build always has it in CI
    _csigprof = None
    _IMPORT_ERROR = f"the C extension is not built ({exc})"

_SUPPORTED_MACHINES = ("x86_64", "AMD64", "aarch64", "arm64")
_reason: Optional[str] = None


def unavailable_reason() -> str:
    """Why the native path cannot be used here, or ``""`` if it can."""
    global _reason
    if os.environ.get("SIGPROF_PURE_PYTHON"):
        return "SIGPROF_PURE_PYTHON is set"
    if _reason is None:
        if _csigprof is None:
            _reason = _IMPORT_ERROR
        elif not sys.platform.startswith("linux") or platform.machine() not in _SUPPORTED_MACHINES:
            _reason = f"no native capture for {sys.platform}/{platform.machine()}"
        else:
            _reason = _probe_store_layout()
    return _reason


def available() -> bool:
    return unavailable_reason() == ""


def extension() -> ModuleType:
    """The extension module; only call when ``available()``."""
    assert _csigprof is not None
    return _csigprof


_PROBE_WAT = """
(module
  (import "probe" "look" (func $look))
  (func $inner (call $look))
  (func (export "run") (call $inner)))
"""


def _probe_store_layout() -> str:
    """Check, on a throwaway store, that the exit/entry fields are where the walk reads them.

    From inside a host function called by ``inner`` (called by ``run``): the exit
    PC lies in the module's code, and the frame chain from the exit trampoline's
    frame reaches the entry trampoline's frame in exactly two wasm frames.
    """
    config = wasmtime.Config()
    config.epoch_interruption = True
    engine = wasmtime.Engine(config)
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(wt.FAR_DEADLINE)
    try:
        vm = wt.vm_store_context(store)
    except wt.StoreLayoutError as exc:
        return str(exc)
    module = wasmtime.Module(engine, _PROBE_WAT)
    image_start, image_end = wt.module_image_range(module)
    seen: Dict[str, object] = {}

    ext = extension()

    def look() -> None:
        words = (ctypes.c_uint64 * (ext.VM_ENTRY_FP + 1)).from_address(vm)
        exit_fp = words[ext.VM_EXIT_TRAMPOLINE_FP]
        exit_pc, entry_fp = words[ext.VM_EXIT_PC], words[ext.VM_ENTRY_FP]
        seen["pc_in_module"] = image_start <= exit_pc < image_end
        depth, fp = 0, exit_fp
        if 0 < exit_fp < entry_fp and entry_fp - exit_fp < 1 << 20 and not exit_fp & 7:
            fp = ctypes.c_uint64.from_address(exit_fp).value        # inner's frame
            while exit_fp < fp < entry_fp and depth < 4:
                depth += 1
                fp = ctypes.c_uint64.from_address(fp).value
        seen["wasm_frames"] = depth if fp == entry_fp else -1

    linker = wasmtime.Linker(engine)
    linker.define_func("probe", "look", wasmtime.FuncType([], []), look)
    run = linker.instantiate(store, module).exports(store)["run"]
    assert isinstance(run, wasmtime.Func)
    run(store)
    if seen.get("pc_in_module") and seen.get("wasm_frames") == 2:
        return ""
    return ("wasmtime's store layout is not the one sigprof's native capture knows "
            f"(probe saw {seen}); using the pure-Python capture")
