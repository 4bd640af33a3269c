"""The one owner of sigprof's process-wide state.

Several profiles may run at once -- on their own stores, in the same or other
threads, and at most one store-less profile covering every store -- but the
things they sample with exist once per process:

* the tick source -- the interval timer, or per-thread perf events -- and its
  signal handler (``_timer.start_ticks``), started by the first profile and
  stopped by the last; every profile shares its clock;
* the engines whose epoch each tick bumps, counted by the stores that need them;
* the hooks into wasmtime-py: guest calls (``_GuestCall``), which find the
  capture of the store being entered (adopting the store into a store-less
  profile), and Python host functions (``_host_get``), which charge a tick to
  the host function of the innermost guest call on the calling thread;
* the registry of live profiles and of captures by store;
* the signal-handler guard of the pure-Python capture;
* one at-fork handler: a child inherits nothing armed and can profile on its own.

``SESSION`` is that object.  The profiles themselves (``profiler.Profiler``)
keep their own rings and captures and read them at stop.
"""

from __future__ import annotations

import os
import sys
from array import array
import threading
import time
import weakref
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple, Union

import wasmtime

from . import _app_epochs, _capture, _native, _wasmtime as wt
from ._capture import Capture, HostFunc
from ._markers import EXPORT_NAME_ATTRIBUTE, GUEST_CALL, HOST_CALL, export_name
from ._pyframes import (EntryFrames, RawEntry, read_entry, read_entry_in_python,
                        read_innermost_in_python, read_thread_entry)
from ._ring import MARK_ENTRY, ORIGIN_OUTSIDE, RawSample
from ._timer import HostTicks, ITimerTicks, Notes, PerfTicks, TickSource, start_ticks

if TYPE_CHECKING:
    from .profiler import Profiler


class _Calls(threading.local):
    """Per thread: the captures of the guest calls in progress, innermost last
    (None for a store no profile covers)."""

    def __init__(self) -> None:
        self.stack: List[Optional[Capture]] = []
        thread = threading.current_thread()
        named[thread.native_id or 0] = thread.name
        stacks[thread.native_id or 0] = (threading.get_ident(), self.stack)


named: Dict[int, str] = {}          # kernel thread id -> Python thread name, as first seen
# kernel thread id -> (Python thread ident, that thread's _Calls stack), for the
# sampler thread of host ticks elsewhere (``_host_ticks_elsewhere``)
stacks: Dict[int, Tuple[int, List[Optional[Capture]]]] = {}
_calls = _Calls()
monotonic_ns = time.monotonic_ns


class Session:
    """See the module docstring."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.profiles: List["Profiler"] = []
        self.captures: Dict[int, Capture] = {}           # id(store) -> its live capture
        self.storeless: Optional["Profiler"] = None
        self.timer: Optional[Union[ITimerTicks, PerfTicks]] = None
        self._engine_users: Dict[int, List[Any]] = {}    # id(engine) -> [engine, stores]
        self._retired_engines: List[wasmtime.Engine] = []
        self.host_callables: List[HostFunc] = []         # host id -> the Python callable
        # slab handle -> (the host function it held, its sampling wrapper); one cache per
        # slab (the core one and the component one: their handles overlap)
        self._host_wrappers: Dict[int, Tuple[HostFunc, HostFunc]] = {}
        self._original_get: Callable[[int], Any] = lambda idx: None
        self._get_hook = self._host_get         # one bound method: uninstall compares it
        self._component_wrappers: Dict[int, Tuple[HostFunc, HostFunc]] = {}
        self._guard: Optional[_capture.SignalGuard] = None
        self.epoch_engines: "weakref.WeakSet[wasmtime.Engine]" = weakref.WeakSet()
        self._plain_engines: "weakref.WeakSet[wasmtime.Engine]" = weakref.WeakSet()
        self._probing: "weakref.WeakSet[wasmtime.Engine]" = weakref.WeakSet()
        # Guest calls Python made into stores no profile covers, while one ran
        # (profiles report the count over their own span).
        self.uncovered_calls = 0
        # A running store-less profile's Python time (native tick handler only).
        self.python_time: Optional[PythonTime] = None

    # -- profiles joining and leaving ------------------------------------------

    def join(self, profile: "Profiler", own_ticks: Optional[TickSource]) -> TickSource:
        """Register a starting profile; returns the tick source it samples on: its
        own (tests) or the process's timer, armed here by the first profile."""
        with self.lock:
            if profile.store is None and self.storeless is not None:
                raise RuntimeError("a store-less sigprof.profile() is already running; it "
                                   "covers every store, so a second one has nothing to add")
            if profile.store is not None and id(profile.store) in self.captures:
                raise RuntimeError("this store is already being profiled (by another profile, "
                                   "or by the running store-less one); stop that profile first")
            if not self.profiles and _native.available():
                # Per-thread tick records start afresh (a disabled capture left behind
                # never reads them again), before any tick source opens per-thread events.
                _native.extension().reset_threads()
            if own_ticks is None and self.timer is not None and self.timer.clock != profile.clock:
                raise RuntimeError(
                    f"a profile on the {self.timer.clock} clock is running; profiles that "
                    f"overlap share the process's one interval timer, so this one must use "
                    f"clock={self.timer.clock!r} too")
            ticks: TickSource
            if own_ticks is not None:
                own_ticks.start([])
                ticks = own_ticks
            elif self.timer is None:
                timer = start_ticks(profile.clock, profile.interval_s, profile.options.source, [],
                                    host_ticks=HostTicks(_host_tick, _host_ticks_elsewhere,
                                                         _python_time_relayed))
                assert isinstance(timer, (ITimerTicks, PerfTicks))
                self.timer = ticks = timer
            else:
                ticks = self.timer
            try:
                if not self.profiles:
                    self._install_hooks()
            except BaseException:
                # Nothing of a profile that could not start stays installed.
                self._uninstall_hooks()
                if own_ticks is not None:
                    own_ticks.stop()
                elif not self.profiles and self.timer is not None:
                    self.timer.stop()
                    self.timer = None
                raise
            self.profiles.append(profile)
            if profile.store is None:
                self.storeless = profile
            return ticks

    def leave(self, profile: "Profiler") -> Notes:
        """Unregister a stopping profile (its captures already detached); the last one
        out disarms the timer and removes the hooks.  Returns the timer's notes."""
        with self.lock:
            if profile not in self.profiles:
                return {}
            self.profiles.remove(profile)
            if self.storeless is profile:
                self.storeless = None
            notes: Notes = dict(self.timer.notes) if self.timer is not None else {}
            if not self.profiles:
                try:
                    if self.timer is not None:
                        notes = self.timer.stop()
                finally:
                    self.timer = None
                    self._engine_users.clear()
                    self._retired_engines.clear()
                    self._uninstall_hooks()
                    self.host_callables = []
                    self._host_wrappers.clear()
                    self._component_wrappers.clear()
            return notes

    # -- stores and engines -------------------------------------------------------

    def add_capture(self, capture: Capture, ticks: TickSource) -> None:
        with self.lock:
            self.captures[id(capture.store)] = capture
            engine = capture.store.engine
            users = self._engine_users.get(id(engine))
            if users is None:
                self._engine_users[id(engine)] = [engine, 1]
                ticks.add_engine(engine)
            else:
                users[1] += 1

    def remove_capture(self, capture: Capture, ticks: TickSource, orphan: bool) -> None:
        """Forget a capture (detached already, unless ``orphan``: its store may be
        running on another thread, so it is only abandoned)."""
        with self.lock:
            self.captures.pop(id(capture.store), None)
            if orphan:
                capture.abandon()
            engine = capture.store.engine
            users = self._engine_users.get(id(engine))
            if users is not None:
                users[1] -= 1
                if users[1] == 0:
                    del self._engine_users[id(engine)]
                    ticks.remove_engine(engine)
                    # A tick handler running right now may still hold its address.
                    self._retired_engines.append(engine)

    def has_epoch_interruption(self, engine: wasmtime.Engine) -> Optional[bool]:
        """Whether code of ``engine`` checks the epoch (probed once per engine); None
        while that probe runs (its own throwaway store must not be adopted)."""
        if engine in self.epoch_engines:
            return True
        if engine in self._plain_engines:
            return False
        if engine in self._probing:
            return None
        self._probing.add(engine)
        try:
            epoch = wt.engine_has_epoch_interruption(engine)
        finally:
            self._probing.discard(engine)
        (self.epoch_engines if epoch else self._plain_engines).add(engine)
        return epoch

    # -- hooks into wasmtime-py ---------------------------------------------------

    def capture_for(self, store: wasmtime.Store) -> Optional[Capture]:
        """The capture sampling ``store``; a store-less profile adopts a new store here."""
        found = self.captures.get(id(store))
        if found is not None:
            return found
        storeless = self.storeless
        if storeless is None:
            if store.engine not in self._probing:
                self.uncovered_calls += 1
            return None
        return storeless.adopt(store)

    def _host_get(self, idx: int) -> Any:
        """``FUNCTIONS.get`` while profiling: hand wasmtime-py a sampling wrapper."""
        entry = self._original_get(idx)
        return (self._wrapper(self._host_wrappers, idx, entry[0]),) + tuple(entry[1:])

    def _component_host_get(self, idx: int, func: HostFunc) -> HostFunc:
        """A component host function's sampling wrapper (its slab holds bare callables)."""
        return self._wrapper(self._component_wrappers, idx, func)

    def _wrapper(self, cache: Dict[int, Tuple[HostFunc, HostFunc]], idx: int,
                 func: HostFunc) -> HostFunc:
        """The sampling wrapper of ``func``, held under slab handle ``idx``.  Keyed by
        handle, checked by identity: wasmtime-py before 50 hands a freed handle to the
        next host function it defines."""
        cached = cache.get(idx)
        if cached is None or cached[0] is not func:
            with self.lock:
                host_id = len(self.host_callables)
                self.host_callables.append(func)
                cached = cache[idx] = (func, _sampling_wrapper(func, host_id))
        return cached[1]

    def _install_hooks(self) -> None:
        self._uninstall_hooks()         # a forked child may hold its parent's
        _app_epochs.install()           # stays: it keeps counting the application's epochs
        self._original_get = wt.install_host_hook(self._get_hook)
        wt.install_entry_hook(_GuestCall)
        wt.component.install_host_hook(self._component_host_get)
        if not _native.available():
            signum = self.timer.signum if self.timer is not None else None
            self._guard = _capture.SignalGuard(skip=(signum,) if signum else ())
            self._guard.install()

    def _uninstall_hooks(self) -> None:
        wt.uninstall_host_hook(self._get_hook)
        wt.uninstall_entry_hook(_GuestCall)
        wt.component.uninstall_host_hook()
        if self._guard is not None:
            self._guard.uninstall()
            self._guard = None

    def hooks_installed(self) -> bool:
        return (wt.host_hook_installed() or wt.entry_hook_installed()
                or wt.component.host_hook_installed())

    # -- fork ----------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything, at once: in a forked child (which has one thread and no
        interval timer), disable every capture it inherited, put the signal handler
        and hooks back, and forget the parent's profiles (whose ``stop`` in the child
        then only reads what they hold)."""
        for capture in self.captures.values():
            capture.disable()
        for profile in self.profiles:
            profile.forked = True
        if self.timer is not None:
            self.timer.reset_after_fork()
        epoch_engines = self.epoch_engines
        self.__init__()         # type: ignore[misc]  # everything else starts afresh
        self.epoch_engines = epoch_engines
        self._uninstall_hooks()
        if _native.available():
            _native.extension().reset_threads()


SESSION = Session()
os.register_at_fork(after_in_child=SESSION.reset)
# From the capture layer's import on, before the application fetches the exports
# its guest calls will be named by (a marker's name; ``_markers``).
wt.install_export_name_hooks(EXPORT_NAME_ATTRIBUTE)


def _sampling_wrapper(func: HostFunc, host_id: int) -> HostFunc:
    def sigprof_host_call(*args: Any) -> Any:
        stack = _calls.stack
        capture = stack[-1] if stack else None
        if capture is None or not capture.enabled:
            return func(*args)
        markers = capture.markers
        if markers is None:
            return capture.host_call(func, host_id, args)
        start_ns = monotonic_ns()
        try:
            return capture.host_call(func, host_id, args)
        finally:
            end_ns = monotonic_ns()
            if end_ns - start_ns >= markers.min_ns:
                markers.add(HOST_CALL, host_id, start_ns, end_ns)
    return sigprof_host_call


_HOST_CALL_CODE = _sampling_wrapper(print, 0).__code__


class PythonTime:
    """A store-less profile's samples of Python time: CPU time a thread spends with no
    guest call in progress (between guest calls, on any store, or after the last),
    charged to its Python frames.  Each is a sample with no guest frames whose entry
    serial names the frames, as a host tick's callees are named; up to ``capacity``
    are kept, the rest counted as dropped.

    With the native tick handler, the ticks on such a thread are handed on like host
    ticks and ``tick`` charges each (``_native_src/hostticks.c``: python_tick);
    ``PurePythonTime`` is the wakeup relay's way."""

    SERIALS_FROM = 1 << 62          # never one of the C captures' entry serials

    def __init__(self, t0_ns: int, interval_ns: int, capacity: int):
        self._t0_ns = t0_ns
        self._interval_ns = interval_ns
        self._capacity = capacity
        self.samples: List[RawSample] = []
        self.segments: Dict[int, EntryFrames] = {}
        self.dropped = 0
        self.errors = 0
        # A stack of one entry mark, which the resolver replaces with the entry's frames.
        self._entry_only = memoryview(array("Q", [MARK_ENTRY]))

    def tick(self, tid: int, frame: Optional[FrameType]) -> None:
        """Charge thread ``tid``'s due tick, if it is Python's, to ``frame`` outwards."""
        charged = _native.extension().python_tick(tid)
        if charged is not None and frame is not None:
            self._charge_tick(tid, read_entry(frame, _HOST_CALL_CODE), charged)

    def tick_elsewhere(self, tid: int) -> None:
        """The same, on the sampler thread, for thread ``tid``'s own frames."""
        charged = _native.extension().python_tick(tid)
        if charged is None:
            return
        frames = read_thread_entry(tid, _HOST_CALL_CODE)
        if frames is not None:
            self._charge_tick(tid, frames, charged)

    def _charge_tick(self, tid: int, frames: RawEntry,
                     charged: Tuple[int, int, int, int]) -> None:
        cpu_ns, wall_ns, ticks, tick_wall_ns = charged
        if cpu_ns < 0:                  # the thread's first tick: no interval start known
            cpu_ns = wall_ns = self._interval_ns * ticks
        self._add(tid, frames, cpu_ns, wall_ns, ticks, tick_wall_ns)

    def _add(self, tid: int, frames: RawEntry, cpu_ns: int, wall_ns: int, ticks: int,
             wall_at_ns: int) -> None:
        if len(self.samples) >= self._capacity:
            self.dropped += 1
            return
        serial = self.SERIALS_FROM + len(self.samples)
        self.segments[serial] = (0, frames)
        self.samples.append(RawSample(
            time_ns=wall_at_ns - self._t0_ns, cpu_ns=cpu_ns, wall_ns=wall_ns,
            origin=ORIGIN_OUTSIDE, ticks=ticks, pcs=self._entry_only, stack_hash=MARK_ENTRY,
            depth_limited=False, tid=tid, entry=serial))

    def start(self) -> None:
        """Have the tick handler hand on the ticks of threads running no guest."""
        _native.extension().set_python_ticks(True)

    def stop(self) -> None:
        """No more samples (the profile stops)."""
        _native.extension().set_python_ticks(False)

    # What the wakeup relay's Python time (``PurePythonTime``) follows and the native
    # handler's thread records make needless: no-ops here.
    def guest_ticked(self) -> None:
        """A tick signal's Python handler ran inside the calling thread's guest call."""

    def guest_left(self, capture: Optional[Capture]) -> None:
        """The calling thread's outermost guest call (into ``capture``'s store) returned."""

    def relayed(self) -> None:
        """The relay counted a tick."""

    def share_marks(self, capture: Capture) -> None:
        """Start ``capture``'s intervals where this Python time left off on each thread."""


class PurePythonTime(PythonTime):
    """Python time without the native handler: the wakeup relay cannot tell which
    thread a tick interrupted, so at each tick it relays (``relayed``, holding the
    GIL) every thread with no guest call in progress is charged the CPU time its own
    clock advanced since its last mark, at the frame it is at (another thread's
    innermost frame only: ``read_innermost_in_python``).  A thread's mark is
    shared with its captures, as the native handler's thread record is: an outermost
    guest call's first interval starts at it (``PythonCapture.python_time_mark``), and
    at its exit the mark moves to where the call's last sample ended.  At stop the
    rest is charged."""

    def __init__(self, t0_ns: int, interval_ns: int, capacity: int):
        super().__init__(t0_ns, interval_ns, capacity)
        # Python thread ident -> its CPU clock at its mark; threads started later start at 0
        self._marks: Dict[int, int] = {}
        for thread in threading.enumerate():
            cpu = _thread_cpu_ns(thread.ident)
            if cpu is not None and thread.ident is not None:
                self._marks[thread.ident] = cpu
        # thread ident -> tick signals that came in its outermost guest call in progress
        self._guest_ticked: Dict[int, int] = {}

    def guest_ticked(self) -> None:
        """The tick signal's Python-level handler ran inside the calling thread's guest
        call (as the guest returned to wasmtime-py): the tick landed in the guest."""
        ident = threading.get_ident()
        self._guest_ticked[ident] = self._guest_ticked.get(ident, 0) + 1

    def _charge(self, ident: int, tid: int, frames: Optional[RawEntry], cpu: int) -> None:
        spent = cpu - self._marks.get(ident, 0)
        self._marks[ident] = cpu
        if spent > 0 and frames is not None:
            self._add(tid, frames, spent, spent, 1, time.monotonic_ns())

    def _charge_me(self, frame: Optional[FrameType]) -> None:
        """Charge the calling thread, at ``frame`` outwards."""
        self._charge(threading.get_ident(), threading.get_native_id(),
                     read_entry_in_python(frame, _HOST_CALL_CODE) if frame else None,
                     time.thread_time_ns())

    def tick(self, tid: int, frame: Optional[FrameType]) -> None:
        """On the main thread, at the tick signal's Python-level handler: charge it."""
        self._charge_me(frame)

    def relayed(self) -> None:
        me = threading.get_ident()
        frames = sys._current_frames()
        for thread in threading.enumerate():
            ident, tid = thread.ident, thread.native_id or 0
            if ident is None or ident == me or thread.name.startswith("sigprof-"):
                continue
            found = stacks.get(tid)
            if found is not None and found[0] == ident and found[1]:
                continue                            # in a guest call: the captures' time
            cpu = _thread_cpu_ns(ident)
            if cpu is not None:
                named.setdefault(tid, thread.name)
                frame = frames.get(ident)
                self._charge(ident, tid, read_innermost_in_python(frame) if frame else None,
                             cpu)

    def calling_thread_mark(self) -> int:
        return self._marks.get(threading.get_ident(), 0)

    def guest_left(self, capture: Optional[Capture]) -> None:
        ident = threading.get_ident()
        ticked = self._guest_ticked.pop(ident, 0)
        sampled_to = capture.python_time_left(ticked) if capture is not None else None
        if sampled_to is not None and sampled_to > self._marks.get(ident, 0):
            self._marks[ident] = sampled_to

    def share_marks(self, capture: Capture) -> None:
        capture.python_time_mark = self.calling_thread_mark

    def start(self) -> None:
        """Nothing to switch on: the relay calls ``relayed`` at each tick."""

    def stop(self) -> None:
        self.relayed()
        self._charge_me(sys._getframe(1))


def _thread_cpu_ns(ident: Optional[int]) -> Optional[int]:
    """Thread ``ident``'s CPU clock; None once it has ended."""
    try:
        return time.clock_gettime_ns(time.pthread_getcpuclockid(ident or 0))
    except (OSError, ProcessLookupError, ValueError):
        return None


def _host_tick(signum: int, frame: Optional[FrameType]) -> None:
    """A tick landed in a Python host function on the main thread (the C handler
    passed it on, see ``_timer.NativeRelay``): sample it here, with the Python
    frames the host function is running -- its callees.  Or it landed in Python
    outside any guest call, and a store-less profile charges it to those frames."""
    stack = _calls.stack
    capture = stack[-1] if stack else None
    if capture is not None:
        try:
            _keep_callees(capture, capture.host_tick(), frame)
        except Exception:  # a signal handler: raising here would raise in the user's code
            capture.errors += 1
    python_time = SESSION.python_time
    if python_time is not None:
        try:
            if not (stack and stack[-1] is not None):
                python_time.tick(threading.get_native_id(), frame)
            else:
                python_time.guest_ticked()
        except Exception:  # as above
            python_time.errors += 1


def _host_ticks_elsewhere(tids: Set[int]) -> None:
    """Ticks landed in Python host functions on these (non-main) threads: this runs on
    the sampler thread holding the GIL, so each thread is at a bytecode boundary and
    its frames can be read (each walk one C call: ``read_thread_entry``); sample each
    one's due tick with them."""
    python_time = SESSION.python_time
    for tid in tids:
        found = stacks.get(tid)
        capture = found[1][-1] if found is not None and found[1] else None
        if capture is not None:
            raw = read_thread_entry(tid, _HOST_CALL_CODE)
            if raw is not None:
                serial = capture.host_tick_elsewhere(tid)
                if serial:
                    capture.keep_segments(serial, (0, raw))
        elif python_time is not None and tid != threading.get_native_id():
            if found is None:
                _name_thread(tid)
            python_time.tick_elsewhere(tid)


def _name_thread(tid: int) -> None:
    """Note the name of kernel thread ``tid`` (one that never called a guest)."""
    for thread in threading.enumerate():
        if thread.native_id == tid:
            named.setdefault(tid, thread.name)
            return


def _python_time_relayed() -> None:
    """The wakeup relay counted a tick (see ``PurePythonTime``)."""
    python_time = SESSION.python_time
    if python_time is not None:
        python_time.relayed()


def _keep_callees(capture: Capture, serial: int, frame: Optional[FrameType]) -> None:
    """The sample ``serial`` (0: none was due) was taken inside a host function running
    ``frame``: keep the frames out to it, its callees, as an entry made from none."""
    if serial:
        capture.keep_segments(serial, (0, read_entry(frame, _HOST_CALL_CODE)))


class _GuestCall:
    """Replaces wasmtime-py's ``enter_wasm`` while profiling: marks guest entry/exit
    for the capture of the store entered, and records the Python frames that made a
    call in which a sample was taken."""

    __slots__ = ("_inner", "_capture", "_start_ns")

    def __init__(self, store: wasmtime.Store):
        self._inner = wt.ORIGINAL_ENTER_WASM(store)
        self._capture = SESSION.capture_for(store)

    def __enter__(self) -> Any:
        capture = self._capture
        _calls.stack.append(capture)
        if capture is not None:
            capture.guest_enter()
        self._start_ns = monotonic_ns()
        return self._inner.__enter__()

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self._inner.__exit__(*exc_info)
        finally:
            stack = _calls.stack
            python_time = SESSION.python_time
            if len(stack) == 1 and python_time is not None:
                # before the pop: a tick's Python handler running meanwhile must not
                # charge this call's time to Python as well
                python_time.guest_left(self._capture)
            stack.pop()
            capture = self._capture
            if capture is not None:
                sampled = capture.guest_exit()
                if sampled is not None:
                    serial, parent = sampled
                    capture.keep_segments(serial, (parent, read_entry(sys._getframe(1),
                                                                      _HOST_CALL_CODE)))
                markers = capture.markers
                if markers is not None and capture.enabled:
                    end_ns = monotonic_ns()
                    if end_ns - self._start_ns >= markers.min_ns:
                        markers.add(GUEST_CALL, export_name(sys._getframe(1)), self._start_ns,
                                    end_ns)
