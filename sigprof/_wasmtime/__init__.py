"""The one module that touches wasmtime-py's private parts and the C API by ctypes.

Everything here is a thin handle on wasmtime as its Python bindings expose it,
for every wasmtime-py release from 38 to 50: the epoch-deadline callback,
module image ranges, the store's ``VMStoreContext`` (where wasmtime records the
last wasm exit and entry), the hooks sigprof puts on wasmtime-py (its
host-function slab and ``enter_wasm``), and glibc ``backtrace`` for the
pure-Python capture.  What differs between those releases is in ``RELEASE``
(one ``Release`` per range of majors); importing this module works on any
wasmtime-py, and ``check_supported()`` -- called when a profile starts -- refuses
one outside the range in one line.

Lifetimes: a store keeps calling its epoch callback while a deadline is set
and calls the finalizer when it is deleted, so every callback object a store
can reach is a module-level constant that lives as long as the interpreter;
per-profile state is reached through the callback's data word.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
from array import array
from dataclasses import dataclass
import threading
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

import wasmtime
import wasmtime._func as _wt_func
import wasmtime._instance as _wt_instance
from wasmtime import _bindings as _b

from . import component
from ..defaults import WASMTIME_MAJORS, WASMTIME_REQUIREMENT
from .image import ImageFinder

WASMTIME_VERSION = importlib.metadata.version("wasmtime")


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


WASMTIME_MAJOR = _major(WASMTIME_VERSION)


class UnsupportedWasmtime(RuntimeError):
    pass


def check_supported() -> None:
    """Refuse a wasmtime-py whose private layout this module has not been checked against."""
    if WASMTIME_MAJOR not in WASMTIME_MAJORS:
        raise UnsupportedWasmtime(
            f"sigprof supports wasmtime-py {WASMTIME_MAJORS[0]} to {WASMTIME_MAJORS[-1]} (it binds "
            f"to their store layout and private parts); this is wasmtime {WASMTIME_VERSION}: "
            f"pip install '{WASMTIME_REQUIREMENT}'")


@dataclass(frozen=True)
class Release:
    """The facts sigprof relies on that differ between wasmtime-py releases.

    Read from wasmtime's and wasmtime-py's sources per release, and checked at
    run time where they can be (the store layout by ``_native``'s probe).
    """

    # VMStoreContext words after ``epoch_deadline`` that the native walk reads: the
    # last exit's trampoline frame pointer and PC, and the entry trampoline's frame
    # pointer.  wasmtime 43 added a word (the execution version) before them.
    exit_trampoline_fp_word: int
    exit_pc_word: int
    entry_fp_word: int
    # Before 48, wasmtime frees a thread's alternate signal stack while the thread
    # can still take signals, so a handler run on it (SA_ONSTACK) can fault at
    # thread exit; from 48 it lives until the thread is gone.
    tick_handler_on_alt_stack: bool
    # wasmtime 40's ``wasmtime_module_image_range`` gives the range of the code
    # alone, not of the whole image (before and after, the image's).
    image_range_is_text: bool = False


def _release(major: int) -> Release:
    if major <= 42:
        return Release(4, 5, 7, tick_handler_on_alt_stack=False,
                       image_range_is_text=major == 40)
    return Release(5, 6, 8, tick_handler_on_alt_stack=major >= 48)


RELEASE = _release(WASMTIME_MAJOR)


def _optional_module(name: str) -> Optional[ModuleType]:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# --- the epoch-deadline callback --------------------------------------------

_CONTEXT_P = ctypes.POINTER(_b.wasmtime_context_t)
EPOCH_CALLBACK_T = ctypes.CFUNCTYPE(
    ctypes.c_size_t,                      # wasmtime_error_t* (0 = continue)
    _CONTEXT_P,                           # the store's context
    ctypes.c_void_p,                      # our data: a small integer handle
    ctypes.POINTER(ctypes.c_uint64),      # out: next deadline delta
    ctypes.POINTER(ctypes.c_uint8),       # out: update kind (0 = continue)
)
FINALIZER_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

# A fresh function pointer (not the cached one the bindings configured) that
# returns the error as a plain integer, so the callback's error path makes no
# Python-level call that could be interrupted by a pending signal handler.
_dll: ctypes.CDLL = getattr(_b, "dll")      # not in the bindings' __all__
error_new = _dll["wasmtime_error_new"]
error_new.restype = ctypes.c_void_p
error_new.argtypes = [ctypes.c_char_p]

# The same library opened as a PyDLL: calls keep the GIL, which is cheaper on
# the hot path and keeps the relay thread from being scheduled mid-sample.
_pydll = ctypes.PyDLL(_dll._name)
_set_deadline = _pydll.wasmtime_context_set_epoch_deadline
_set_deadline.restype = None
_set_deadline.argtypes = [ctypes.c_void_p, ctypes.c_uint64]

_libc_py = ctypes.PyDLL(None)
_backtrace = _libc_py.backtrace
_backtrace.restype = ctypes.c_int
_backtrace.argtypes = [ctypes.c_void_p, ctypes.c_int]


def backtrace_function() -> Callable[[int, int], int]:
    """glibc ``backtrace(buffer, size)`` bound for integer addresses.

    It walks the native stack with the unwind tables wasmtime registers for its
    JIT code, so it sees every wasm frame.  The first call loads libgcc_s; do it
    here, outside any sample.
    """
    scratch = (ctypes.c_uint64 * 8)()
    _backtrace(ctypes.addressof(scratch), 8)
    return _backtrace


def set_deadline_function() -> Callable[[int, int], None]:
    """``wasmtime_context_set_epoch_deadline(context_address, delta)``."""
    return _set_deadline


def context_address(store: wasmtime.Store) -> int:
    """The address of the store's context, for the set-deadline call."""
    return ctypes.cast(store._context(), ctypes.c_void_p).value or 0


def function_address(function: Any) -> int:
    return ctypes.cast(function, ctypes.c_void_p).value or 0


ERROR_NEW_ADDRESS = function_address(error_new)
SET_DEADLINE_ADDRESS = function_address(_set_deadline)
INCREMENT_EPOCH_ADDRESS = function_address(_b._wasmtime_engine_increment_epoch)
MEMORY_SIZE_ADDRESS = function_address(_b._wasmtime_memory_data_size)
MEMORY_HANDLE_SIZE = ctypes.sizeof(_b.wasmtime_memory_t)


def memory_handle(memory: wasmtime.Memory) -> bytes:
    """The ``wasmtime_memory_t`` a Memory object wraps, as bytes (for the C capture)."""
    return bytes(memory._memory)


def engine_address(engine: wasmtime.Engine) -> int:
    return ctypes.cast(engine.ptr(), ctypes.c_void_p).value or 0


# The Python callback table: handle -> object with ``on_epoch()``.
TARGETS: Dict[int, Any] = {}
TARGETS_LOCK = threading.Lock()
_next_handle = [1]


def register_target(target: object) -> int:
    with TARGETS_LOCK:
        handle = _next_handle[0]
        _next_handle[0] += 1
        TARGETS[handle] = target
        return handle


def unregister_target(handle: int) -> None:
    with TARGETS_LOCK:
        TARGETS.pop(handle, None)


def _noop_finalizer(_data: Optional[int]) -> None:  # pragma: no cover - called by wasmtime
    return None


NOOP_FINALIZER = FINALIZER_T(_noop_finalizer)


def install_epoch_callback(store: wasmtime.Store, trampoline: Any, handle: int) -> None:
    """Register ``trampoline`` (a module-level constant) with ``handle`` as data."""
    _b.wasmtime_store_epoch_deadline_callback(store.ptr(), trampoline,
                                              ctypes.c_void_p(handle), NOOP_FINALIZER)


def install_native_epoch_callback(store: wasmtime.Store, callback_address: int,
                                  finalizer_address: int, data_address: int) -> None:
    """Register a C callback (an address in the extension) with a C object as data."""
    _b.wasmtime_store_epoch_deadline_callback(
        store.ptr(), ctypes.cast(callback_address, EPOCH_CALLBACK_T), ctypes.c_void_p(data_address),
        ctypes.cast(finalizer_address, FINALIZER_T))


# --- the store's VMStoreContext ----------------------------------------------

class StoreLayoutError(RuntimeError):
    pass


_SCAN_WORDS = 8192          # the store object is a few KB; VMStoreContext is inside it


def _mapping_end(address: int) -> int:
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if lo <= address < hi:
                return hi
    return address


_deadline_word: List[int] = []     # the word index found in the first store, if any


def _deadline_moves(store: wasmtime.Store, address: int) -> bool:
    word = ctypes.c_uint64.from_address(address)
    set_store_deadline(store, FAR_DEADLINE)
    before = word.value
    set_store_deadline(store, FAR_DEADLINE + 4099)
    moved = word.value - before == 4099
    set_store_deadline(store, FAR_DEADLINE)
    return moved


def vm_store_context(store: wasmtime.Store) -> int:
    """The address of ``VMStoreContext.epoch_deadline`` inside ``store``.

    ``VMStoreContext`` is a repr(C) struct inside the store object that the
    compiled code reads; its first words are fuel, the epoch deadline, then the
    fields the native capture walks from.  It is found by moving the deadline:
    the one word that changes by exactly the moved amount, twice.  Every store
    has it at the same place, so later stores only check that place.  Reads
    stay within the store's own mapping.  The store is left with a far deadline.
    """
    start = context_address(store)
    words = min(_SCAN_WORDS, (_mapping_end(start) - start) // 8)
    if words < 16:
        raise StoreLayoutError("cannot read the store object")
    if _deadline_word and _deadline_word[0] < words:
        address = start + 8 * _deadline_word[0]
        if _deadline_moves(store, address):
            return address
    snapshots = []
    for delta in (FAR_DEADLINE, FAR_DEADLINE + 4099, FAR_DEADLINE + 12345):
        set_store_deadline(store, delta)
        snapshots.append(array("Q", ctypes.string_at(start, 8 * words)))
    a, b, c = snapshots
    found = [i for i in range(words) if b[i] - a[i] == 4099 and c[i] - a[i] == 12345]
    set_store_deadline(store, FAR_DEADLINE)
    if len(found) != 1:
        raise StoreLayoutError(f"found {len(found)} candidates for the store's epoch deadline")
    _deadline_word[:] = found
    return start + 8 * found[0]


# After profiling, the store gets this callback: it behaves like wasmtime with
# no callback at all (reaching the deadline raises the same interrupt trap), and
# the deadline is moved far ahead so that ticks that were in flight cannot trap
# the next call (``_app_epochs`` then puts back what the application had left).
FAR_DEADLINE = 1 << 62


def _restored_callback(ctx: object, data: Optional[int], next_delta: Any, kind: Any) -> int:
    try:
        next_delta[0] = 1
        kind[0] = 0
    except BaseException:  # pragma: no cover - nothing above can raise
        pass
    return interrupt_trap()


RESTORED_CALLBACK = EPOCH_CALLBACK_T(_restored_callback)


def restore_epoch_behaviour(store: wasmtime.Store) -> None:
    _b.wasmtime_store_epoch_deadline_callback(store.ptr(), RESTORED_CALLBACK,
                                              None, NOOP_FINALIZER)
    set_store_deadline(store, FAR_DEADLINE)


def set_last_exception(exc: BaseException) -> None:
    """Hand ``exc`` to wasmtime-py: the failing call re-raises it unchanged."""
    _wt_func.LAST_EXCEPTION = exc  # type: ignore[assignment]  # it re-raises any BaseException


def error_text(exc: BaseException) -> str:
    """wasmtime's message for a trap or error, without the Rust backtrace that
    wasmtime 38-41 append to it when ``RUST_BACKTRACE`` is set."""
    text = str(exc)
    cut = text.find("\n\nStack backtrace:")
    return text[:cut] if cut >= 0 else text


def set_max_wasm_stack(config: wasmtime.Config, size_bytes: int) -> None:
    """``config.max_wasm_stack = size_bytes``; before wasmtime-py 45 the property is
    missing (assigning it would only set a Python attribute), the C call is not."""
    _b.wasmtime_config_max_wasm_stack_set(config.ptr(), size_bytes)


# --- module images -----------------------------------------------------------

def module_image_range(module: wasmtime.Module) -> Tuple[int, int]:
    start = ctypes.c_void_p()
    end = ctypes.c_void_p()
    _b.wasmtime_module_image_range(module.ptr(), ctypes.byref(start), ctypes.byref(end))
    if RELEASE.image_range_is_text and start.value:
        # The image's header is a few pages below its code, as for any image
        # found from a PC alone.
        whole = ImageFinder(read_memory).image_range(start.value)
        if whole is not None:
            return whole
    return (start.value or 0, end.value or 0)


def read_memory(address: int, size: int) -> bytes:
    """Copy ``size`` bytes of this process's memory (caller checks it is mapped)."""
    return ctypes.string_at(address, size)


# --- epoch interruption probe -------------------------------------------------

_PROBE_WAT = '(module (func (export "f")))'


def engine_has_epoch_interruption(engine: wasmtime.Engine) -> bool:
    """True if code compiled by ``engine`` checks the epoch.

    wasmtime-py keeps no reference to the Config, so ask the engine itself: a
    fresh store has deadline 0, so with epoch interruption on, the very first
    function entry traps with "interrupt"; without it, the call returns.
    """
    probe_store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, _PROBE_WAT)
    instance = wasmtime.Instance(probe_store, module, [])
    func = instance.exports(probe_store)["f"]
    assert isinstance(func, wasmtime.Func)
    try:
        func(probe_store)
    except wasmtime.Trap as trap:
        return trap.trap_code == wasmtime.TrapCode.INTERRUPT
    return False


# --- hooks on wasmtime-py -------------------------------------------------------
#
# wasmtime-py calls every Python host function through one trampoline that looks
# the callable up in its slab (``FUNCTIONS.get``), and enters wasm through the
# ``enter_wasm`` context manager, imported by name into four of its modules.

ORIGINAL_ENTER_WASM = _wt_func.enter_wasm
# The modules that call ``enter_wasm`` by the name they imported: ``_instance_pre``
# exists from wasmtime-py 45.
ENTER_WASM_USERS = tuple(m for m in (_wt_func, _optional_module("wasmtime._instance"),
                                     _optional_module("wasmtime._instance_pre"),
                                     _optional_module("wasmtime._linker")) if m is not None)
LAST_EXCEPTION_HOLDER = _wt_func        # wasmtime-py re-raises its LAST_EXCEPTION


def install_host_hook(get: Callable[[int], Any]) -> Callable[[int], Any]:
    """Shadow the host-function slab's ``get``; returns the original (bound)."""
    slab = _wt_func.FUNCTIONS
    original: Callable[[int], Any] = type(slab).get.__get__(slab)
    setattr(slab, "get", get)             # an instance attribute shadows the method
    return original


def uninstall_host_hook(get: Callable[[int], Any]) -> None:
    slab = _wt_func.FUNCTIONS
    if slab.__dict__.get("get") is get:
        del slab.get


def host_hook_installed() -> bool:
    return "get" in _wt_func.FUNCTIONS.__dict__


def install_entry_hook(enter_wasm: Callable[[Any], Any]) -> None:
    for module in ENTER_WASM_USERS:
        setattr(module, "enter_wasm", enter_wasm)
    component.install_entry_hook(enter_wasm)


def uninstall_entry_hook(enter_wasm: Callable[[Any], Any]) -> None:
    for module in ENTER_WASM_USERS:
        if getattr(module, "enter_wasm") is enter_wasm:
            setattr(module, "enter_wasm", ORIGINAL_ENTER_WASM)
    component.uninstall_entry_hook()


def install_define_func_hook(remember: Callable[[Callable[..., Any], str, str], None]) -> None:
    """Make ``Linker.define_func`` tell ``remember(func, module, name)`` (once per process)."""
    original = wasmtime.Linker.define_func
    if getattr(original, "__wrapped__", None) is not None:
        return

    def define_func(self: wasmtime.Linker, module: str, name: str, ty: wasmtime.FuncType,
                    func: Callable[..., Any], access_caller: bool = False) -> None:
        remember(func, module, name)
        return original(self, module, name, ty, func, access_caller)
    define_func.__doc__ = original.__doc__
    define_func.__wrapped__ = original  # type: ignore[attr-defined]
    wasmtime.Linker.define_func = define_func  # type: ignore[method-assign]


def install_export_name_hooks(attribute: str) -> None:
    """Give each function wasmtime-py hands out as a named export its name, as
    ``attribute`` (once per process): ``Instance.exports``' mapping (every release
    38-50 builds it in ``InstanceExports.__init__`` as ``_extern_map``),
    ``Linker.get``, and a component's ``get_func`` by name (its ``get_export_index``
    results carry the name to a ``get_func`` by index)."""
    exports_init = _wt_instance.InstanceExports.__init__
    if getattr(exports_init, "__wrapped__", None) is not None:
        return

    def tag(extern: Any, name: str) -> Any:
        if isinstance(extern, wasmtime.Func):
            setattr(extern, attribute, name)
        return extern

    def init(self: Any, store: Any, instance: Any) -> None:
        exports_init(self, store, instance)
        for name, extern in self._extern_map.items():
            tag(extern, name)

    def linker_get(self: Any, store: Any, module: str, name: str) -> Any:
        return tag(original_get(self, store, module, name), name)
    original_get = wasmtime.Linker.get
    for owner, attr, wrapper, original in ((_wt_instance.InstanceExports, "__init__", init,
                                            exports_init),
                                           (wasmtime.Linker, "get", linker_get, original_get)):
        wrapper.__doc__, wrapper.__wrapped__ = original.__doc__, original  # type: ignore
        setattr(owner, attr, wrapper)
    component.install_export_name_hooks(attribute)


def entry_hook_installed() -> bool:
    return (any(getattr(m, "enter_wasm") is not ORIGINAL_ENTER_WASM for m in ENTER_WASM_USERS)
            or component.entry_hook_installed())


# --- sigprof's own epoch calls, and wasmtime's interrupt trap -----------------
#
# ``_app_epochs`` wraps ``Engine.increment_epoch`` and ``Store.set_epoch_deadline``
# to follow the application's own epochs; sigprof's own ticks and deadlines go
# straight to the C API, so the application's counts never include them.

def set_store_deadline(store: wasmtime.Store, delta: int) -> None:
    """``store.set_epoch_deadline(delta)``, not seen as the application's."""
    _set_deadline(context_address(store), delta)


def increment_epoch(engine: wasmtime.Engine) -> None:
    """``engine.increment_epoch()``, not counted as the application's tick."""
    _b.wasmtime_engine_increment_epoch(engine.ptr())


trap_new_code = _pydll.wasmtime_trap_new_code
trap_new_code.restype = ctypes.c_void_p
trap_new_code.argtypes = [ctypes.c_uint8]
TRAP_NEW_CODE_ADDRESS = function_address(trap_new_code)
INTERRUPT_CODE = int(wasmtime.TrapCode.INTERRUPT.value)


def interrupt_trap() -> int:
    """A new ``wasm_trap_t`` with code INTERRUPT, as an epoch callback's error: the
    callback's ``wasmtime_error_t`` and a trap are the same box around one wasmtime
    error (repr(C), one field, wasmtime 38-50), and a callback error that is a trap
    reaches the guest's caller as that trap -- the one wasmtime raises itself when a
    deadline passes with no callback (``wasmtime.Trap``, ``trap_code`` INTERRUPT)."""
    return int(trap_new_code(INTERRUPT_CODE) or 0)
