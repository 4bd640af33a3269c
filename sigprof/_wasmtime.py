"""The only module that touches ``wasmtime._bindings`` and ctypes.

Everything here is a thin, typed handle on the C API of wasmtime 50 as the
Python bindings expose it, plus the two libc entry points the sampler needs
(``backtrace`` to walk the native stack, ``clock_gettime`` is not needed:
``time.thread_time_ns`` is a C builtin).

Lifetimes (DESIGN.md fact 7): the store keeps calling the epoch callback while a
deadline is set and calls the finalizer when it is deleted.  Both ctypes objects
used here are module-level constants that live as long as the interpreter, and
the per-profile state they reach is looked up through a small integer handle, so
no profiler object can be collected while the store can still call into it.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Callable, Optional, Tuple

import wasmtime
import wasmtime._func as _wt_func
from wasmtime import _bindings as _b

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
_error_new = _b.dll["wasmtime_error_new"]
_error_new.restype = ctypes.c_void_p
_error_new.argtypes = [ctypes.c_char_p]

# The same library opened as a PyDLL: calls keep the GIL, which is cheaper on
# the hot path and keeps the relay thread from being scheduled mid-sample.
_pydll = ctypes.PyDLL(_b.dll._name)
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
    JIT code, so it sees every wasm frame (DESIGN.md fact 4).  The first call
    loads libgcc_s; do it here, outside any sample.
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


def error_new(message: bytes) -> int:
    """A new ``wasmtime_error_t*`` as an integer (ownership passes to wasmtime)."""
    return _error_new(message) or 0


# The callback table: handle -> object with ``on_epoch(next_delta, kind)``.
_TARGETS: dict = {}
_TARGETS_LOCK = threading.Lock()
_next_handle = [1]


def register_target(target: object) -> int:
    with _TARGETS_LOCK:
        handle = _next_handle[0]
        _next_handle[0] += 1
        _TARGETS[handle] = target
        return handle


def unregister_target(handle: int) -> None:
    with _TARGETS_LOCK:
        _TARGETS.pop(handle, None)


def _noop_finalizer(_data):  # pragma: no cover - called by wasmtime
    return None


NOOP_FINALIZER = FINALIZER_T(_noop_finalizer)


def install_epoch_callback(store: wasmtime.Store, trampoline: EPOCH_CALLBACK_T,
                           handle: int) -> None:
    """Register ``trampoline`` (a module-level constant) with ``handle`` as data."""
    _b.wasmtime_store_epoch_deadline_callback(store.ptr(), trampoline,
                                              ctypes.c_void_p(handle), NOOP_FINALIZER)


# After profiling, the store gets this callback: it behaves like wasmtime with
# no callback at all (reaching the deadline traps), and the deadline is moved far
# ahead so that ticks that were in flight cannot trap the next call.
FAR_DEADLINE = 1 << 62


def _restored_callback(ctx, data, next_delta, kind):
    try:
        next_delta[0] = 1
        kind[0] = 0
    except BaseException:  # pragma: no cover - nothing above can raise
        pass
    return _error_new(b"epoch deadline reached") or 0


RESTORED_CALLBACK = EPOCH_CALLBACK_T(_restored_callback)


def restore_epoch_behaviour(store: wasmtime.Store) -> None:
    _b.wasmtime_store_epoch_deadline_callback(store.ptr(), RESTORED_CALLBACK,
                                              None, NOOP_FINALIZER)
    store.set_epoch_deadline(FAR_DEADLINE)


def set_last_exception(exc: BaseException) -> None:
    """Hand ``exc`` to wasmtime-py: the failing call re-raises it unchanged."""
    _wt_func.LAST_EXCEPTION = exc


# --- module images -----------------------------------------------------------

def module_image_range(module: wasmtime.Module) -> Tuple[int, int]:
    start = ctypes.c_void_p()
    end = ctypes.c_void_p()
    _b.wasmtime_module_image_range(module.ptr(), ctypes.byref(start), ctypes.byref(end))
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
    try:
        func(probe_store)
    except wasmtime.Trap as trap:
        return trap.trap_code == wasmtime.TrapCode.INTERRUPT
    return False


# --- wasmtime's own GuestProfiler (the reference to measure against) ----------

def _name_vec(text: str):
    raw = text.encode()
    vec = _b.wasm_name_t()
    data = (ctypes.c_uint8 * max(1, len(raw))).from_buffer_copy(raw or b"\0")
    _b.wasm_byte_vec_new(ctypes.byref(vec), len(raw), data)
    return vec


class NativeGuestProfiler:
    """wasmtime's built-in GuestProfiler, driven through the C API.

    Used by benchmarks and accuracy comparisons only: it is opaque (its own
    growing buffer, JSON at the end), so it is a yardstick, not a backend.
    """

    def __init__(self, engine: wasmtime.Engine, name: str,
                 modules: "list[tuple[str, wasmtime.Module]]", interval_ns: int = 1_000_000):
        self._names = [_name_vec(mod_name) for mod_name, _ in modules]
        entries = (_b.wasmtime_guestprofiler_modules_t * max(1, len(modules)))()
        for i, (_, module) in enumerate(modules):
            entries[i].name = ctypes.pointer(self._names[i])
            entries[i].mod = module.ptr()
        self._title = _name_vec(name)
        self._modules = modules
        self._entries = entries
        self._ptr: Optional[ctypes._Pointer] = _b.wasmtime_guestprofiler_new(
            engine.ptr(), ctypes.byref(self._title), interval_ns, entries, len(modules))

    def sample(self, store: wasmtime.Store, delta_ns: int) -> None:
        _b.wasmtime_guestprofiler_sample(self._ptr, store.ptr(), delta_ns)

    def sample_function(self, store: wasmtime.Store) -> Callable[[int], None]:
        """A bound ``sample(delta_ns)`` with the pointers resolved once."""
        fn = _b._wasmtime_guestprofiler_sample
        ptr, sptr = self._ptr, store.ptr()

        def sample(delta_ns: int) -> None:
            fn(ptr, sptr, delta_ns)
        return sample

    def run(self, store: wasmtime.Store, call: Callable[[], object],
            interval_s: float = 0.001) -> object:
        """Run ``call()`` sampled the way ``wasmtime run --profile=guest`` does it.

        A thread bumps the engine's epoch every ``interval_s`` of wall time; the
        epoch callback samples with the thread's CPU time since the previous
        sample as the delta.  The store's epoch behaviour is restored after.
        """
        sample = self.sample_function(store)
        last = [time.thread_time_ns()]

        def callback(ctx, data, next_delta, kind):
            try:
                now = time.thread_time_ns()
                sample(now - last[0])
                last[0] = now
            finally:
                next_delta[0] = 1
                kind[0] = 0
            return 0
        cb = EPOCH_CALLBACK_T(callback)
        _b.wasmtime_store_epoch_deadline_callback(store.ptr(), cb, None, NOOP_FINALIZER)
        store.set_epoch_deadline(1)
        stop = threading.Event()
        engine = store.engine

        def ticker() -> None:
            while not stop.wait(interval_s):
                engine.increment_epoch()
        thread = threading.Thread(target=ticker, name="guestprofiler-ticker", daemon=True)
        thread.start()
        try:
            return call()
        finally:
            stop.set()
            thread.join()
            restore_epoch_behaviour(store)   # replaces cb while it is still referenced

    def finish(self) -> bytes:
        out = _b.wasm_byte_vec_t()
        err = _b.wasmtime_guestprofiler_finish(self._ptr, ctypes.byref(out))
        self._ptr = None
        if err:
            raise wasmtime.WasmtimeError._from_ptr(err)
        data = ctypes.string_at(out.data, out.size)
        _b.wasm_byte_vec_delete(ctypes.byref(out))
        return data
