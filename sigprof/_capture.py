"""The hot path: turning a due tick into one raw sample in the ring.

Samples are taken at four places, all on the profiled thread:

1. the epoch-deadline callback (``_trampoline``): the guest reached a function
   entry or loop header after a tick -- capture its native stack;
2. entry to a Python host function the guest imports, if a tick is pending:
   the tick landed in the call path from wasm to Python (wasmtime's exit
   trampoline, ctypes, wasmtime-py's argument conversion), so charge the
   host function whose call it was;
3. return from that host function, if a tick arrived during it: charge the host
   function (stack = the guest's frames + a host frame);
4. entry into the guest from Python, if a tick is pending: the tick landed in
   Python outside the guest, so charge that.

A sample is taken only when the tick counter has moved since the previous
sample.  Each sample's interval ends at its tick: the native tick handler
records the thread's CPU clock and the monotonic clock when the signal
arrives, so a sample taken later than its tick (at a host function's return,
at guest entry) is not charged for the time after the tick -- that time goes
to the next interval.  The profiler's own time is measured and left out of
every interval (it is summed separately as overhead).  Without tick
timestamps (the wakeup relay, manual ticks) intervals end at the sample.
Nothing here allocates per sample beyond the integers Python makes for clock
readings; the stack goes straight from ``backtrace()`` into the ring.

Safety (DESIGN.md facts 3 and 8): an exception escaping a ctypes callback
aborts the process, and CPython runs pending Python signal handlers at the
first bytecode of any function -- before a ``try`` in that function can catch
what they raise.  While profiling, every Python-level signal handler is
wrapped: if it fires inside the hot path's own code it is deferred, and run
inside the trampoline's ``try`` (or at the next host/guest boundary).  What it
raises is handed to wasmtime-py, which re-raises it unchanged at the guest
call site; that is how Ctrl-C stops a running guest.
"""

from __future__ import annotations

import os
import signal
import threading
from time import perf_counter_ns, thread_time_ns
from typing import Callable, Dict, List, Optional, Tuple

import wasmtime
import wasmtime._func as _wt_func
import wasmtime._instance as _wt_instance
import wasmtime._instance_pre as _wt_instance_pre
import wasmtime._linker as _wt_linker

from . import _wasmtime as wt
from ._native import read_tick
from ._ring import (FULL_STOP, H_CPU, H_KIND, H_PC_COUNT, H_PC_START, H_TICK_PC, H_TICKS,
                    H_TIME, H_WALL, HEADER_FIELDS, KIND_GUEST, KIND_OUTSIDE, Ring)

get_ident = threading.get_ident


class Capture:
    """Live sampling state for one store on one thread."""

    __slots__ = ("ring", "tick_word", "tick_state", "consumed", "thread_id", "native_tid",
                 "store", "enabled", "errors", "t0_ns", "cpu_start", "cpu_prev", "wall_prev",
                 "cpu_pending", "wall_pending", "overhead_cpu_ns", "overhead_wall_ns",
                 "backtrace", "set_deadline", "context", "guest_depth", "foreign_thread_epochs",
                 "host_functions", "host_wrappers", "_pcs_address", "_pc_capacity", "_depth",
                 "_capacity", "_stop_when_full", "_header")

    def __init__(self, store: wasmtime.Store, ring: Ring):
        self.ring = ring
        self.tick_word = None   # the tick source's counter, set by begin()
        self.tick_state = None  # the native handler's per-tick record, if any
        self.cpu_pending = self.wall_pending = 0
        self.store = store
        self.thread_id = get_ident()
        self.native_tid = threading.get_native_id()
        self.enabled = False
        self.errors = 0
        self.consumed = 0
        self.guest_depth = 0
        self.foreign_thread_epochs = 0
        self.backtrace = wt.backtrace_function()
        self.set_deadline = wt.set_deadline_function()
        self.context = wt.context_address(store)
        self.host_functions: List[Callable] = []   # host id -> the Python callable
        self.host_wrappers: Dict[int, Callable] = {}  # slab handle -> sampling wrapper
        self._header = ring.header
        self._pcs_address = ring.pcs_address
        self._pc_capacity = ring.pc_capacity
        self._depth = ring.max_depth
        self._capacity = ring.capacity
        self._stop_when_full = ring.when_full == FULL_STOP
        self.overhead_cpu_ns = 0
        self.overhead_wall_ns = 0
        self.t0_ns = self.wall_prev = perf_counter_ns()
        self.cpu_start = self.cpu_prev = thread_time_ns()

    def begin(self, tick_word, tick_state=None) -> None:
        """Start sampling: ``tick_word`` is the tick source's ``c_uint64`` counter,
        ``tick_state`` the native handler's ``TickState`` (or None)."""
        self.tick_word = tick_word
        self.tick_state = tick_state
        self.consumed = tick_word.value
        self.t0_ns = self.wall_prev = perf_counter_ns()
        self.cpu_start = self.cpu_prev = thread_time_ns()
        self.enabled = True

    # -- the four sampling points -------------------------------------------

    def on_epoch(self) -> None:
        """From the epoch callback: sample the guest if a tick is due."""
        if self.thread_id != get_ident():
            self.foreign_thread_epochs += 1
            return
        total = self.tick_word.value
        if total != self.consumed:
            self._record(KIND_GUEST, total, True)

    def host_call(self, func: Callable, host_id: int, args: tuple):
        """Call a Python host function, sampling around it as described above."""
        if not self.enabled or self.thread_id != get_ident():
            return func(*args)
        word = self.tick_word
        total = word.value
        if total != self.consumed:
            # The tick landed between the guest's last epoch check and here: in
            # the call path (wasmtime's exit trampoline, ctypes, wasmtime-py's
            # argument conversion), which is the cost of calling this function.
            self._record(host_id + 1, total, True)
        try:
            return func(*args)
        finally:
            total = word.value
            if total != self.consumed and self.enabled:
                self._record(host_id + 1, total, True)
                # The tick also bumped the epoch: move the deadline past that
                # bump so the next epoch check does not stop for nothing.
                self.set_deadline(self.context, 1)
            if _deferred:
                _run_deferred()

    def guest_enter(self) -> None:
        if self.guest_depth == 0 and self.enabled:
            total = self.tick_word.value
            if total != self.consumed:
                self._record(KIND_OUTSIDE, total, False)
            self.set_deadline(self.context, 1)
        self.guest_depth += 1

    def guest_exit(self) -> None:
        self.guest_depth -= 1
        if _deferred:
            _run_deferred()

    def finish(self) -> Tuple[int, int, int, int]:
        """At stop: sample a pending tick (we are in Python), then disable.

        Returns the CPU and wall time after the last sample's interval (what
        no sample accounts for is reported, not invented), the thread's CPU
        time over the whole profile, and the profile's wall duration.
        """
        if self.enabled and self.thread_id == get_ident():
            total = self.tick_word.value
            if total != self.consumed:
                self._record(KIND_OUTSIDE, total, False)
        self.enabled = False
        cpu_now, wall_now = thread_time_ns(), perf_counter_ns()
        return (max(0, cpu_now - self.cpu_prev - self.cpu_pending),
                max(0, wall_now - self.wall_prev - self.wall_pending),
                cpu_now - self.cpu_start, wall_now - self.t0_ns)

    # -- writing one sample --------------------------------------------------

    def _record(self, kind: int, total: int, walk: bool) -> None:
        cpu = thread_time_ns()
        wall = perf_counter_ns()
        cpu_end, wall_end, tick_pc = cpu, wall, 0
        state = self.tick_state
        if state is not None:
            tick = read_tick(state)
            if tick is not None:
                if tick[4] == self.native_tid:
                    tick_pc = tick[3]
                if self.cpu_prev <= tick[1] <= cpu:
                    cpu_end = tick[1]
                if self.wall_prev <= tick[2] <= wall:
                    wall_end = tick[2]
        ring = self.ring
        number = ring.count
        depth = self._depth
        pc_capacity = self._pc_capacity
        end = ring.pc_end
        pos = end % pc_capacity
        if pos + depth > pc_capacity:
            if self._stop_when_full:
                self._refuse(total)
                return
            end += pc_capacity - pos      # skip to the start: a sample never wraps
            pos = 0
        if self._stop_when_full and number >= self._capacity:
            self._refuse(total)
            return
        count = self.backtrace(self._pcs_address + 8 * pos, depth) if walk else 0
        h = self._header
        base = (number % self._capacity) * HEADER_FIELDS
        h[base + H_TIME] = wall_end - self.t0_ns
        cpu_ns = cpu_end - self.cpu_prev - self.cpu_pending
        wall_ns = wall_end - self.wall_prev - self.wall_pending
        h[base + H_CPU] = cpu_ns if cpu_ns > 0 else 0
        h[base + H_WALL] = wall_ns if wall_ns > 0 else 0
        h[base + H_PC_START] = end
        h[base + H_PC_COUNT] = count
        h[base + H_KIND] = kind
        h[base + H_TICKS] = total - self.consumed
        h[base + H_TICK_PC] = tick_pc if tick_pc < 1 << 63 else 0
        ring.pc_end = end + count
        ring.count = number + 1           # commit last: a half-written record is never read
        self.consumed = total
        cpu_after = thread_time_ns()
        wall_after = perf_counter_ns()
        self.overhead_cpu_ns += cpu_after - cpu
        self.overhead_wall_ns += wall_after - wall
        # The next interval starts at this tick; our own work since then is not
        # guest time, so it is subtracted from that interval.
        self.cpu_prev, self.wall_prev = cpu_end, wall_end
        self.cpu_pending = cpu_after - cpu
        self.wall_pending = wall_after - wall

    def _refuse(self, total: int) -> None:
        # Stop mode and the ring is full: the tick is counted as lost.  The
        # clocks are not reset, so the lost time shows up as unsampled tail.
        self.ring.refused += 1
        self.consumed = total


# --- the epoch-deadline trampoline -------------------------------------------

_TARGETS = wt._TARGETS
_deferred: List[Tuple[int, Callable]] = []
_set_last_exception = wt.set_last_exception
_error_new = wt._error_new


def _run_deferred() -> None:
    while _deferred:
        signum, handler = _deferred.pop(0)
        handler(signum, None)


def _trampoline(ctx, data, next_delta, kind):
    try:
        next_delta[0] = 1                  # always re-arm: delta 0 re-enters at every check
        kind[0] = 0
        capture = _TARGETS.get(data)
        if capture is not None and capture.enabled:
            try:
                capture.on_epoch()
            except Exception:
                capture.errors += 1        # never let our own trouble reach wasmtime
        if _deferred:
            _run_deferred()
        return 0
    except BaseException as exc:
        # Raised by a deferred signal handler (KeyboardInterrupt from Ctrl-C, say):
        # stop the guest and let wasmtime-py raise it at the call site.
        _set_last_exception(exc)
        return _error_new(b"guest interrupted by a Python signal handler") or 0


TRAMPOLINE = wt.EPOCH_CALLBACK_T(_trampoline)

# Code that must never see a signal handler's exception: see the module doc.
_PROTECTED_CODE = frozenset({_trampoline.__code__, Capture.on_epoch.__code__,
                             Capture._record.__code__, Capture._refuse.__code__,
                             read_tick.__code__, _run_deferred.__code__})


# --- wrapping Python signal handlers ------------------------------------------

class SignalGuard:
    """Wraps every installed Python signal handler for the profile's duration."""

    def __init__(self, skip: Tuple[int, ...] = ()):
        self._skip = set(skip)
        self._wrapped: Dict[int, Tuple[Callable, Callable]] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers only run on the main thread; nothing to guard
        for signum in signal.valid_signals():
            if signum in self._skip:
                continue
            try:
                handler = signal.getsignal(signum)
            except (OSError, ValueError):
                continue
            if callable(handler) and handler not in (signal.SIG_DFL, signal.SIG_IGN):
                wrapper = _deferring(handler)
                try:
                    signal.signal(signum, wrapper)
                except (OSError, ValueError, RuntimeError):
                    continue
                self._wrapped[signum] = (handler, wrapper)

    def uninstall(self) -> None:
        for signum, (handler, wrapper) in self._wrapped.items():
            try:
                if signal.getsignal(signum) is wrapper:
                    signal.signal(signum, handler)
            except (OSError, ValueError):  # pragma: no cover
                pass
        self._wrapped.clear()


def _deferring(handler: Callable) -> Callable:
    def sigprof_deferring_handler(signum, frame):
        if frame is not None and frame.f_code in _PROTECTED_CODE:
            _deferred.append((signum, handler))
            return None
        return handler(signum, frame)
    sigprof_deferring_handler.__wrapped__ = handler  # type: ignore[attr-defined]
    return sigprof_deferring_handler


def run_deferred_now() -> None:
    """At profile exit: anything still deferred runs in the caller's frame."""
    if _deferred:
        _run_deferred()


# --- hooks into wasmtime-py: host calls and guest entries ----------------------

_active: Optional[Capture] = None
_original_get = None
_ORIGINAL_ENTER_WASM = _wt_func.enter_wasm
_ENTER_WASM_USERS = (_wt_func, _wt_instance, _wt_instance_pre, _wt_linker)


class _GuestCall:
    """Replaces wasmtime-py's ``enter_wasm`` while profiling: marks guest entry/exit."""

    __slots__ = ("_inner", "_capture")

    def __init__(self, store):
        self._inner = _ORIGINAL_ENTER_WASM(store)
        capture = _active
        if capture is not None and (store is not capture.store or capture.thread_id != get_ident()):
            capture = None
        self._capture = capture

    def __enter__(self):
        if self._capture is not None:
            self._capture.guest_enter()
        return self._inner.__enter__()

    def __exit__(self, *exc_info):
        try:
            return self._inner.__exit__(*exc_info)
        finally:
            if self._capture is not None:
                self._capture.guest_exit()


def _host_get(idx):
    """``FUNCTIONS.get`` while profiling: hand wasmtime-py a sampling wrapper."""
    entry = _original_get(idx)
    capture = _active
    if capture is None:
        return entry
    wrapped = capture.host_wrappers.get(idx)
    if wrapped is None:
        host_id = len(capture.host_functions)
        capture.host_functions.append(entry[0])
        wrapped = capture.host_wrappers[idx] = _wrap_host(capture, entry[0], host_id)
    return (wrapped,) + tuple(entry[1:])


def _wrap_host(capture: Capture, func: Callable, host_id: int) -> Callable:
    call = capture.host_call

    def sigprof_host_call(*args):
        return call(func, host_id, args)
    return sigprof_host_call


def install_hooks(capture: Capture) -> None:
    global _active, _original_get
    if _active is not None:
        raise RuntimeError("another sigprof capture is active in this process")
    _active = capture
    slab = _wt_func.FUNCTIONS
    _original_get = type(slab).get.__get__(slab)
    slab.get = _host_get                       # an instance attribute shadows the method
    for module in _ENTER_WASM_USERS:
        module.enter_wasm = _GuestCall


def uninstall_hooks() -> None:
    global _active, _original_get
    slab = _wt_func.FUNCTIONS
    if slab.__dict__.get("get") is _host_get:
        del slab.get
    for module in _ENTER_WASM_USERS:
        if module.enter_wasm is _GuestCall:
            module.enter_wasm = _ORIGINAL_ENTER_WASM
    _active = None
    _original_get = None


def _after_fork_in_child() -> None:
    # A forked child keeps our hooks but has no relay: make them inert.
    capture = _active
    if capture is not None:
        capture.enabled = False


os.register_at_fork(after_in_child=_after_fork_in_child)
