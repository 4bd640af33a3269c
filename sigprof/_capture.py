"""The hot path: turning a due tick into one raw sample in the ring.

One capture per profiled store, following the store to whichever thread runs
it.  Samples are taken at these places, on that thread:

1. the epoch-deadline callback: the guest reached a function entry or loop
   header after a tick -- capture its stack;
2. entry to a Python host function the guest imports, if a tick is pending:
   the tick landed in the call path from wasm to Python (wasmtime's exit
   trampoline, ctypes, wasmtime-py's argument conversion), so charge the
   host function whose call it was;
3. return from that host function, if a tick arrived during it: charge the host
   function (stack = the guest's frames + a host frame);
4. entry into the guest from Python, if a tick is pending: the tick landed in
   Python outside the guest, so charge that;
5. (native, main thread) inside a Python host function, when the tick handler
   passed a tick there to ``_session._host_tick``: charge the host function,
   with the Python frames it is running.

A sample is taken only when the tick counter has moved since the previous
sample.  Each sample's interval ends at its tick when the tick handler
recorded the tick's clocks, so a sample taken later than its tick is not
charged for the time after it; the profiler's own time is left out of every
interval and summed as overhead.

Two implementations with one interface:

* ``NativeCapture`` (the default): the C extension's epoch callback does all of
  (1) with no Python on the path, walking exactly the guest frames by frame
  pointer from wasmtime's record of the last exit (``_native_src/sample.c``); (2)-(5)
  are C methods called from the thin Python hooks in ``_session``.
* ``PythonCapture`` (the fallback where the extension cannot be used): a
  Python epoch callback and glibc ``backtrace()``, which unwinds the whole
  native stack (the guest frames are picked out after the run).  Intervals
  end at the sample (no tick record without the native handler).

Safety of the pure-Python callback: an exception escaping a ctypes callback
aborts the process, and CPython runs pending Python signal handlers at the
first bytecode of any function -- before a ``try`` in that function can catch
what they raise.  So while it profiles, every Python-level signal handler is
wrapped: if it fires inside the hot path's own code it is deferred, and run
inside the trampoline's ``try`` (or at the next host/guest boundary).  What it
raises is handed to wasmtime-py, which re-raises it unchanged at the guest call
site; that is how Ctrl-C stops a running guest.  The native callback needs no
such care: it runs Python signal handlers itself (``PyErr_CheckSignals``) and
hands their exception over the same way.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from time import perf_counter_ns, thread_time_ns
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

import wasmtime

from . import _app_epochs, _native, _wasmtime as wt
from ._ring import (FLAG_DEPTH_LIMITED, FULL_STOP, H_CPU, H_FLAGS, H_HASH, H_MEMORY, H_ORIGIN,
                    H_PC_COUNT, H_PC_START, H_RSS, H_TICK_PC, H_TICKS, H_TIME, H_WALL,
                    H_TID, H_ENTRY, H_CALLEE, HEADER_FIELDS, ORIGIN_GUEST, ORIGIN_OUTSIDE, Ring)
from ._markers import MarkerLog
from ._pyframes import EntryFrames
from ._timer import FakeClock

get_native_id = threading.get_native_id
HostFunc = Callable[..., Any]
SignalHandler = Callable[[int, Optional[FrameType]], Any]


class _CaptureBase:
    """What both implementations share: the store, its ring, the Python frames of
    sampled guest entries."""

    native = False

    def __init__(self, store: wasmtime.Store, ring: Ring):
        self.ring = ring
        self.store = store
        self.context = wt.context_address(store)
        # entry serial -> (the serial of the entry it was made from, or 0; the Python
        # frames that made that guest call), for entries a sample needs (native capture)
        self.python_segments: Dict[int, EntryFrames] = {}
        self.errors = 0
        self._handle = 0
        self.markers: Optional[MarkerLog] = None    # the profile's, where it keeps them
        # A store-less profile whose Python time is wakeup-relayed charges the Python
        # time between guest calls itself (``_session.PurePythonTime``): then the pure
        # capture's interval at a guest entry starts at the thread's mark, which this
        # returns (the native capture reads its thread records instead).
        self.python_time_mark: Optional[Callable[[], int]] = None

    def host_call(self, func: HostFunc, host_id: int, args: Tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def keep_segments(self, serial: int, frames: EntryFrames) -> None:
        """Keep the Python frames of entry ``serial`` for the samples that name it.
        The ring holds the newest samples only, so past twice its capacity the
        frames no held sample (nor an entry in progress) leads to are let go:
        memory stays bounded on a long run, like the ring's."""
        segments = self.python_segments
        segments[serial] = frames
        if len(segments) > 2 * self.ring.capacity + self.live_entries_max:
            keep: Set[int] = set()
            for start in self.ring.serials() | set(self.live_entries()):
                link = start
                while link and link not in keep:
                    keep.add(link)
                    link = segments.get(link, (0, ()))[0]
            self.python_segments = {s: f for s, f in segments.items() if s in keep}

    live_entries_max = 0            # how many guest entries can be in progress at once

    def live_entries(self) -> Tuple[int, ...]:
        """The serials of the guest entries in progress whose frames are kept."""
        return ()

    def detach(self) -> None:
        """Give the store back a harmless epoch callback and what the application's own
        deadline had left; nothing here is called after."""
        wt.restore_epoch_behaviour(self.store)
        _app_epochs.unwatch(self.store)
        if self._handle:
            wt.unregister_target(self._handle)
            self._handle = 0


class NativeCapture(_CaptureBase):
    """The C capture (see the module docstring); one per store."""

    native = True

    def __init__(self, store: wasmtime.Store, ring: Ring, python_frames: bool):
        super().__init__(store, ring)
        ext = _native.extension()
        self._ext = ext
        self._c = ext.Capture(
            ring=ring, header=ring.header_address, pcs=ring.pcs_address, capacity=ring.capacity,
            pc_capacity=ring.pc_capacity, max_depth=ring.max_depth,
            stop_when_full=ring.when_full == FULL_STOP,
            vm_deadline_address=wt.vm_store_context(store), context=self.context,
            set_deadline=wt.SET_DEADLINE_ADDRESS, error_new=wt.ERROR_NEW_ADDRESS,
            last_exception_module=wt.LAST_EXCEPTION_HOLDER, python_frames=python_frames,
            trap_new_code=wt.TRAP_NEW_CODE_ADDRESS, interrupt_code=wt.INTERRUPT_CODE)
        self.guest_enter = self._c.guest_enter
        self.guest_exit = self._c.guest_exit
        self.host_tick = self._c.host_tick
        self.host_tick_elsewhere = self._c.host_tick_elsewhere
        self.live_entries_max = ext.MAX_ACTIVATIONS

    def measure_memories(self, memories: List[wasmtime.Memory]) -> None:
        """Each sample also records these linear memories' total size."""
        self._c.set_memories(wt.MEMORY_SIZE_ADDRESS, wt.MEMORY_HANDLE_SIZE,
                             b"".join(wt.memory_handle(m) for m in memories))

    def attach(self) -> None:
        data = self._ext.store_reference(self._c)     # the store's own reference
        try:
            wt.install_native_epoch_callback(self.store, self._ext.EPOCH_CALLBACK,
                                             self._ext.RELEASE_CAPTURE, data)
        except BaseException:
            ctypes.pythonapi.Py_DecRef(ctypes.py_object(self._c))    # never registered
            raise
        _app_epochs.watch(self.store, self._c)

    @property
    def app_expired(self) -> bool:
        """The application's own epoch deadline passed: the epoch callback traps."""
        return bool(self._c.app_expired)

    @app_expired.setter
    def app_expired(self, expired: bool) -> None:
        self._c.app_expired = int(expired)

    def begin(self, tick_word: Optional[ctypes.c_uint64], fake_clock: Optional[FakeClock],
              t0_ns: int, every_thread: bool = False) -> None:
        """Start sampling on ``tick_word`` (None: the native tick handler's per-thread
        counts, or with ``every_thread`` -- the wall clock -- its count of all ticks);
        sample times count from ``t0_ns`` (``time.monotonic_ns``)."""
        self._c.begin(ctypes.addressof(tick_word) if tick_word is not None else 0,
                      ctypes.addressof(fake_clock.words) if fake_clock is not None else 0,
                      0 if fake_clock is not None else t0_ns, every_thread)

    @property
    def enabled(self) -> bool:
        return bool(self._c.enabled)

    def disable(self) -> None:
        """Stop sampling at once (a forked child, a store still running elsewhere)."""
        self._c.enabled = 0

    def bound_here(self) -> bool:
        """The calling thread is the one this store last ran on."""
        return bool(self._c.bound_here())

    def live_entries(self) -> Tuple[int, ...]:
        return tuple(self._c.live_entries())

    def python_time_left(self, ticked: int) -> Optional[int]:
        """See ``PythonCapture.python_time_left``: the C capture's thread records
        share the thread's CPU clock with the Python-time samples already."""
        return None

    def abandon(self) -> None:
        """Stop for good without touching the store (it may be running on another
        thread): the C object lives on as its callback's data, which the store holds
        a reference to, and lets the ring go."""
        self._c.release()       # still the store's callback: app_expired is still followed

    @property
    def samples_taken(self) -> int:
        return int(self._c.count)

    @property
    def refused(self) -> int:
        return int(self._c.refused)

    @property
    def shared_stacks(self) -> int:
        return int(self._c.shared)

    @property
    def overhead_cpu_ns(self) -> int:
        return int(self._c.overhead_ns)

    overhead_wall_ns = overhead_cpu_ns

    @property
    def unslotted(self) -> int:
        return int(self._c.unslotted)

    @property
    def guest_depth(self) -> int:
        return int(self._c.guest_depth)

    @property
    def activations_lost(self) -> int:
        return int(self._c.activations_lost)

    def host_call(self, func: HostFunc, host_id: int, args: Tuple[Any, ...]) -> Any:
        c = self._c
        origin = host_id + 1
        c.host_enter(origin)
        try:
            return func(*args)
        finally:
            c.host_exit(origin)

    def finish(self) -> Tuple[int, int, int, int]:
        """At stop: sample a pending tick of the calling thread, disable; see
        ``PythonCapture.finish``."""
        cpu_left, wall_left, thread_cpu, duration = self._c.finish()
        ring = self.ring
        ring.count, ring.pc_end, ring.refused = self._c.count, self._c.pc_end, self._c.refused
        return int(cpu_left), int(wall_left), int(thread_cpu), int(duration)


class PythonCapture(_CaptureBase):
    """The pure-Python capture (see the module docstring)."""

    def __init__(self, store: wasmtime.Store, ring: Ring, python_frames: bool = False):
        super().__init__(store, ring)
        self.native_tid = get_native_id()
        self.tick_word = ctypes.c_uint64(0)   # the tick source's counter, set by begin()
        self.enabled = False
        self.consumed = 0
        self.guest_depth = 0
        self.unslotted = 0
        self.activations_lost = 0       # no nesting limit here
        self.app_expired = False        # the application's own epoch deadline passed
        self.backtrace = wt.backtrace_function()
        self.set_deadline = wt.set_deadline_function()
        self._header = ring.header
        self._pcs_address = ring.pcs_address
        self._pc_capacity = ring.pc_capacity
        self._depth = ring.max_depth
        self._capacity = ring.capacity
        self._stop_when_full = ring.when_full == FULL_STOP
        self.overhead_cpu_ns = 0
        self.overhead_wall_ns = 0
        self.cpu_pending = self.wall_pending = 0
        self.samples_at_entry = 0       # then: the ring's count at the outermost entry
        self._cpu_ns: Callable[[], int] = thread_time_ns
        self._wall_ns: Callable[[], int] = perf_counter_ns
        self._memories: List[wasmtime.Memory] = []
        self._statm_fd = -1        # /proc/self/statm while sampling (open once, not per sample)
        self.t0_ns = self.wall_prev = perf_counter_ns()
        self.cpu_start = self.cpu_prev = thread_time_ns()

    def measure_memories(self, memories: List[wasmtime.Memory]) -> None:
        self._memories = list(memories)

    def attach(self) -> None:
        self._handle = wt.register_target(self)
        wt.install_epoch_callback(self.store, TRAMPOLINE, self._handle)
        _app_epochs.watch(self.store, self)

    def begin(self, tick_word: Optional[ctypes.c_uint64], fake_clock: Optional[FakeClock],
              t0_ns: int, every_thread: bool = False) -> None:
        """Start sampling: ``tick_word`` is the tick source's ``c_uint64`` counter (one
        count for all threads already: ``every_thread`` changes nothing here)."""
        if tick_word is None:
            raise RuntimeError("the pure-Python capture needs a tick source with its own counter")
        if fake_clock is not None:
            self._cpu_ns = lambda: fake_clock.cpu_ns
            self._wall_ns = lambda: fake_clock.wall_ns
        self.tick_word = tick_word
        self.consumed = tick_word.value
        self.wall_prev = self._wall_ns()
        self.t0_ns = self.wall_prev if fake_clock is not None else t0_ns
        self.cpu_start = self.cpu_prev = self._cpu_ns()
        self._statm_fd = _open_statm()
        self.enabled = True

    @property
    def samples_taken(self) -> int:
        return self.ring.count

    @property
    def refused(self) -> int:
        return self.ring.refused

    shared_stacks = 0          # every sample stores its own stack

    def disable(self) -> None:
        self.enabled = False

    def bound_here(self) -> bool:
        return self.native_tid == get_native_id()

    def abandon(self) -> None:
        """Stop for good without touching the store: the trampoline then finds under
        the handle an orphan that only follows the application's deadline (one small
        object per abandoned store, kept: the store may call its callback for ever)."""
        self.enabled = False
        if self._handle:
            orphan = _Orphan(self.app_expired)
            with wt.TARGETS_LOCK:
                wt.TARGETS[self._handle] = orphan       # holds nothing of the store
            _app_epochs.watch(self.store, orphan)
            self._handle = 0

    def _bind(self) -> None:
        """Follow the store to the calling thread.  Unlike the native handler, the
        wakeup relay cannot tell which thread a tick's CPU was: a tick is charged to
        each store that samples it."""
        if self.native_tid != get_native_id():     # (a thread's ident can be reused)
            self.native_tid = get_native_id()
            self.consumed = self.tick_word.value
            self.cpu_prev, self.wall_prev = self._cpu_ns(), self._wall_ns()
            self.cpu_pending = self.wall_pending = 0

    # -- the four sampling points -------------------------------------------

    def on_epoch(self) -> None:
        """From the epoch callback: sample the guest if a tick is due."""
        self._bind()
        total = self.tick_word.value
        if total != self.consumed:
            self._record(ORIGIN_GUEST, total, True)

    def host_call(self, func: HostFunc, host_id: int, args: Tuple[Any, ...]) -> Any:
        """Call a Python host function, sampling around it as described above."""
        if not self.enabled:
            return func(*args)
        self._bind()
        word = self.tick_word
        total = word.value
        if total != self.consumed:
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
            self._bind()
            total = self.tick_word.value
            if self.python_time_mark is not None:
                self.samples_at_entry = self.ring.count
                self.consumed = total
                self.cpu_prev, self.wall_prev = self.python_time_mark(), self._wall_ns()
                self.cpu_pending = self.wall_pending = 0
            elif total != self.consumed:
                self._record(ORIGIN_OUTSIDE, total, False)
            # The application's deadline already passed: trap at the first epoch check.
            self.set_deadline(self.context, 0 if self.app_expired else 1)
        self.guest_depth += 1

    def python_time_left(self, ticked: int) -> Optional[int]:
        """The calling thread's outermost guest call returned under a store-less
        profile's wakeup-relayed Python time (``_session.PurePythonTime``), ``ticked``
        tick signals having come in it: returns the thread CPU clock the call's last
        sample ended at, where the thread's Python time resumes.

        Fewer samples than signals means the relay counted a tick too late for an
        epoch check near the call's end: the call's time since its last sample is
        charged to the guest, its frames unknown, rather than to the Python after it."""
        if ticked > self.ring.count - self.samples_at_entry and self.enabled \
                and self.native_tid == get_native_id():
            self._record(ORIGIN_GUEST, max(self.tick_word.value, self.consumed), False)
        return self.cpu_prev + self.cpu_pending

    def host_tick(self) -> int:
        """A tick the tick signal's Python handler saw in a host call: 0, none sampled
        now -- this capture samples a host call as it returns (``host_call``)."""
        return 0

    def host_tick_elsewhere(self, tid: int) -> int:
        """The same for another thread's host call (only the native relay reports those)."""
        return 0

    def guest_exit(self) -> Optional[Tuple[int, int]]:
        """The guest call returned; None: no Python frames are needed (this capture's
        stacks come from ``backtrace()``, which has no entry marks)."""
        self.guest_depth -= 1
        if _deferred:
            _run_deferred()
        return None

    def finish(self) -> Tuple[int, int, int, int]:
        """At stop: sample a pending tick (we are in Python), then disable.

        Returns the CPU and wall time after the last sample's interval (what
        no sample accounts for is reported, not invented), the thread's CPU
        time over the whole profile, and the profile's wall duration.
        """
        if self.enabled and self.native_tid == get_native_id() and self.python_time_mark is None:
            total = self.tick_word.value
            if total != self.consumed:
                self._record(ORIGIN_OUTSIDE, total, False)
        self.enabled = False
        if self._statm_fd >= 0:
            os.close(self._statm_fd)
            self._statm_fd = -1
        cpu_now, wall_now = self._cpu_ns(), self._wall_ns()
        return (max(0, cpu_now - self.cpu_prev - self.cpu_pending),
                max(0, wall_now - self.wall_prev - self.wall_pending),
                cpu_now - self.cpu_start, wall_now - self.t0_ns)

    # -- writing one sample --------------------------------------------------

    def _record(self, origin: int, total: int, walk: bool) -> None:
        cpu = self._cpu_ns()
        wall = self._wall_ns()
        ring = self.ring
        number = ring.count
        depth = self._depth
        pc_capacity = self._pc_capacity
        end = ring.pc_end
        pos = end % pc_capacity
        if self._stop_when_full and (number >= self._capacity or pos + depth > pc_capacity):
            # Counted as lost; the clocks are not reset, so its time shows as unsampled.
            ring.refused += 1
            self.consumed = total
            return
        if pos + depth > pc_capacity:
            end += pc_capacity - pos      # skip to the start: a sample never wraps
            pos = 0
        count = self.backtrace(self._pcs_address + 8 * pos, depth) if walk else 0
        h = self._header
        base = (number % self._capacity) * HEADER_FIELDS
        h[base + H_TIME] = wall - self.t0_ns
        cpu_ns = cpu - self.cpu_prev - self.cpu_pending
        wall_ns = wall - self.wall_prev - self.wall_pending
        h[base + H_CPU] = cpu_ns if cpu_ns > 0 else 0
        h[base + H_WALL] = wall_ns if wall_ns > 0 else 0
        h[base + H_PC_START] = end
        h[base + H_PC_COUNT] = count
        h[base + H_ORIGIN] = origin
        h[base + H_TICKS] = total - self.consumed
        h[base + H_TICK_PC] = 0
        h[base + H_FLAGS] = FLAG_DEPTH_LIMITED if count >= depth else 0
        h[base + H_HASH] = 0
        h[base + H_RSS] = _resident_bytes(self._statm_fd)
        h[base + H_MEMORY] = sum(m.data_len(self.store) for m in self._memories)
        h[base + H_TID] = self.native_tid
        h[base + H_ENTRY] = h[base + H_CALLEE] = 0
        ring.pc_end = end + count
        ring.count = number + 1           # commit last: a half-written record is never read
        self.consumed = total
        cpu_after = self._cpu_ns()
        wall_after = self._wall_ns()
        self.overhead_cpu_ns += cpu_after - cpu
        self.overhead_wall_ns += wall_after - wall
        # The next interval starts now; our own work is not guest time.
        self.cpu_prev, self.wall_prev = cpu, wall
        self.cpu_pending = cpu_after - cpu
        self.wall_pending = wall_after - wall


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _open_statm() -> int:
    try:
        return os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _resident_bytes(statm_fd: int) -> int:
    """The resident set from /proc/self/statm (its second field, in pages); -1 unknown."""
    if statm_fd < 0:
        return -1
    try:
        return int(os.pread(statm_fd, 100, 0).split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return -1


class _Orphan:
    """What the trampoline finds for an abandoned capture's store: sampling off, the
    application's deadline still followed."""

    __slots__ = ("app_expired",)
    enabled = False

    def __init__(self, app_expired: bool):
        self.app_expired = app_expired


Capture = Union[NativeCapture, PythonCapture]


def new_capture(store: wasmtime.Store, ring: Ring, python_frames: bool) -> Capture:
    """The native capture where the extension can be used, else the pure-Python one."""
    if _native.available():
        return NativeCapture(store, ring, python_frames)
    return PythonCapture(store, ring)


# --- the epoch-deadline trampoline -------------------------------------------

_TARGETS = wt.TARGETS
_deferred: List[Tuple[int, SignalHandler]] = []
_set_last_exception = wt.set_last_exception
_error_new = wt.error_new
_interrupt_trap = wt.interrupt_trap


def _run_deferred() -> None:
    while _deferred:
        signum, handler = _deferred.pop(0)
        handler(signum, None)


def _trampoline(ctx: object, data: Optional[int], next_delta: Any, kind: Any) -> int:
    try:
        next_delta[0] = 1                  # always re-arm: delta 0 re-enters at every check
        kind[0] = 0
        capture = _TARGETS.get(data or 0)
        if capture is not None and capture.app_expired:
            return _interrupt_trap()       # the application's own deadline passed
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
_PROTECTED_CODE = frozenset({_trampoline.__code__, PythonCapture.on_epoch.__code__,
                             PythonCapture._record.__code__, _run_deferred.__code__})


# --- wrapping Python signal handlers ------------------------------------------

class SignalGuard:
    """Wraps every installed Python signal handler for the profile's duration."""

    def __init__(self, skip: Tuple[int, ...] = ()):
        self._skip = set(skip)
        self._wrapped: Dict[int, Tuple[SignalHandler, SignalHandler]] = {}

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
            if callable(handler):
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


def _deferring(handler: SignalHandler) -> SignalHandler:
    def sigprof_deferring_handler(signum: int, frame: Optional[FrameType]) -> Any:
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
