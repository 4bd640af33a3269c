"""The C extension (``sigprof._csigprof``, built from ``_native_src/``) and whether
this process may use it.

The native path is the tick signal handler and the epoch-callback capture that
walks guest frames by frame pointer from wasmtime's ``VMStoreContext``.  It is
used when all of these hold, checked once per process:

* this is CPython 3.11 or newer (the frame API the extension uses);
* the extension was built for this interpreter (``pip install .`` compiles
  it; where it cannot, the install still succeeds without it) and imports;
* ``SIGPROF_PURE_PYTHON`` is not set (the switch the tests use to force the
  pure-Python path);
* Linux on x86-64 or aarch64 (the handler reads the interrupted PC from the
  ucontext, and the frame layout ``[fp] = older fp, [fp+8] = return address``
  is these two architectures');
* the ring layout the extension was compiled with (``ring_layout()``) is the
  one ``_ring.py`` reads (``_ring.check_layout``);
* a probe on a throwaway store finds ``VMStoreContext``, and its exit/entry
  fields at the words ``_wasmtime.RELEASE`` names for this wasmtime-py (handed
  to the extension here) hold what wasmtime's own stack walk expects.

Otherwise ``unavailable_reason()`` says why in one line, and sigprof runs the
pure-Python path: a wakeup-fd relay thread, a Python epoch callback and glibc
``backtrace()``.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import os
import platform
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Optional, Tuple

import wasmtime

from . import _ring, _wasmtime as wt

MIN_PYTHON = (3, 11)
EXTENSION_NAME = f"{__package__}._csigprof"
BUILD_HINT = "build it: pip install -e . / python3 setup.py build_ext --inplace"


def _other_builds() -> str:
    """The interpreters the package directory holds a build for, if not this one."""
    tags = sorted(p.name[len("_csigprof."):-len(".so")]
                  for p in Path(__file__).parent.glob("_csigprof.*.so"))
    return f"; found builds for {', '.join(tags)} only" if tags else ""


def _load_extension() -> Tuple[Optional[ModuleType], str]:
    """The extension module, or None and why not in one line.

    Imported by full name: ``from . import _csigprof`` inside the package's own
    import reports a missing file as "cannot import name ... from partially
    initialized module (most likely due to a circular import)".
    """
    version = sys.version_info
    if version < MIN_PYTHON:
        return None, (f"Python too old for the C extension: it needs CPython "
                      f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer, this is "
                      f"{version.major}.{version.minor}.{version.micro}")
    try:
        return importlib.import_module(EXTENSION_NAME), ""
    except ModuleNotFoundError as exc:
        if exc.name != EXTENSION_NAME:
            return None, f"the C extension failed to import: {type(exc).__name__}: {exc}"
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        return None, (f"the C extension is not built for this Python (no _csigprof{suffix}"
                      f"{_other_builds()}); {BUILD_HINT}")
    except Exception as exc:    # its init may raise anything, not only ImportError
        return None, f"the C extension failed to import: {type(exc).__name__}: {exc}"


_csigprof, _IMPORT_ERROR = _load_extension()

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
            _reason = _ring_layout_mismatch() or _probe_store_layout()
    return _reason


def available() -> bool:
    return unavailable_reason() == ""


def extension() -> ModuleType:
    """The extension module; only call when ``available()``."""
    assert _csigprof is not None
    return _csigprof


def _ring_layout_mismatch() -> str:
    """Why the extension's ring records would not read back here, or ``""``."""
    try:
        _ring.check_layout(extension().ring_layout())
    except _ring.RingLayoutError as exc:
        return f"{exc}; using the pure-Python capture"
    return ""


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

    release = wt.RELEASE
    extension().set_store_layout(release.exit_trampoline_fp_word, release.exit_pc_word,
                                 release.entry_fp_word)

    def look() -> None:
        words = (ctypes.c_uint64 * (release.entry_fp_word + 1)).from_address(vm)
        exit_fp = words[release.exit_trampoline_fp_word]
        exit_pc, entry_fp = words[release.exit_pc_word], words[release.entry_fp_word]
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


def require_for_background_profiles(caller: str) -> None:
    """Refuse ``caller`` (``"sigprof.serve"``...) at once where the native capture is
    not in use: its profiles start on a thread of its own, and without the native
    tick handler only the main thread may install their signal handler."""
    if not available():
        raise RuntimeError(f"{caller} needs the native capture, which is not in use "
                           f"({unavailable_reason()}): its profiles start on a thread of its "
                           f"own, and without it only the main thread may install their "
                           f"signal handler")
