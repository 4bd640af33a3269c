"""wasmtime's own GuestProfiler driven through the C API: the yardstick for benchmarks.

It is opaque (its own growing buffer, JSON at the end), so it is something to
measure against, not a capture backend.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import Callable, List, Optional, Tuple

import wasmtime
from wasmtime import _bindings as _b

from sigprof import _wasmtime as wt

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
                 modules: List[Tuple[str, wasmtime.Module]], interval_ns: int = 1_000_000):
        self._names = [_name_vec(mod_name) for mod_name, _ in modules]
        entries = (_b.wasmtime_guestprofiler_modules_t * max(1, len(modules)))()
        for i, (_, module) in enumerate(modules):
            entries[i].name = ctypes.pointer(self._names[i])
            entries[i].mod = module.ptr()
        self._title = _name_vec(name)
        self._modules = modules
        self._entries = entries
        # wasmtime-py 39 added the engine as the first argument.
        engine_arg = () if len(_b._wasmtime_guestprofiler_new.argtypes) == 4 else (engine.ptr(),)
        self._ptr: Optional[ctypes._Pointer] = _b.wasmtime_guestprofiler_new(
            *engine_arg, ctypes.byref(self._title), interval_ns, entries, len(modules))

    def sample(self, store: wasmtime.Store, delta_ns: int) -> None:
        _b.wasmtime_guestprofiler_sample(self._ptr, store.ptr(), delta_ns)

    def sample_function(self, store: wasmtime.Store) -> Callable[[int], None]:
        """A bound ``sample(delta_ns)`` with the pointers resolved once."""
        fn = _b._wasmtime_guestprofiler_sample
        ptr, sptr = self._ptr, store.ptr()

        def sample(delta_ns: int) -> None:
            fn(ptr, sptr, delta_ns)
        return sample

    samples = 0

    def run(self, store: wasmtime.Store, call: Callable[[], object],
            interval_s: float = 0.001, ticker: str = "thread") -> object:
        """Run ``call()`` sampled the way ``wasmtime run --profile=guest`` does it.

        The epoch callback samples with the thread's CPU time since the previous
        sample as the delta.  Ticks: ``"thread"`` -- a thread bumps the engine's
        epoch every ``interval_s`` of wall time (what ``wasmtime run`` does);
        ``"itimer"`` -- ITIMER_REAL every ``interval_s``, its signal relayed by
        the wakeup fd to a thread that bumps the epoch (the same timer sigprof's
        wall clock uses).  The store's epoch behaviour is restored after.
        """
        sample = self.sample_function(store)
        last = [time.thread_time_ns()]

        def callback(ctx, data, next_delta, kind):
            try:
                now = time.thread_time_ns()
                sample(now - last[0])
                last[0] = now
                self.samples += 1
            finally:
                next_delta[0] = 1
                kind[0] = 0
            return 0
        cb = wt.EPOCH_CALLBACK_T(callback)
        _b.wasmtime_store_epoch_deadline_callback(store.ptr(), cb, None, wt.NOOP_FINALIZER)
        store.set_epoch_deadline(1)
        stop = threading.Event()
        engine = store.engine
        read_fd = write_fd = -1
        previous = None

        def by_thread() -> None:
            while not stop.wait(interval_s):
                engine.increment_epoch()

        def by_signal() -> None:
            while True:
                data = os.read(read_fd, 4096)
                if not data or 0 in data:
                    return
                engine.increment_epoch()
        if ticker == "itimer":
            read_fd, write_fd = os.pipe()
            os.set_blocking(write_fd, False)
            previous = signal.signal(signal.SIGALRM, lambda s, f: None)
            signal.siginterrupt(signal.SIGALRM, False)
            signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        thread = threading.Thread(target=by_signal if ticker == "itimer" else by_thread,
                                  name="guestprofiler-ticker", daemon=True)
        thread.start()
        if ticker == "itimer":
            signal.setitimer(signal.ITIMER_REAL, interval_s, interval_s)
        try:
            return call()
        finally:
            if ticker == "itimer":
                signal.setitimer(signal.ITIMER_REAL, 0, 0)
                time.sleep(0.01)
                signal.set_wakeup_fd(-1)
                os.write(write_fd, b"\0")
                signal.signal(signal.SIGALRM, previous)
            stop.set()
            thread.join()
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            wt.restore_epoch_behaviour(store)   # replaces cb while it is still referenced

    def finish(self) -> bytes:
        out = _b.wasm_byte_vec_t()
        err = _b.wasmtime_guestprofiler_finish(self._ptr, ctypes.byref(out))
        self._ptr = None
        if err:
            raise wasmtime.WasmtimeError._from_ptr(err)
        data = ctypes.string_at(out.data, out.size)
        _b.wasm_byte_vec_delete(ctypes.byref(out))
        return data
