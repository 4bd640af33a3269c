"""Tick sources: what decides *when* a sample is due.

A tick source counts ticks and makes each tick increment the epoch of the
profiled engines, so the guest reaches its epoch-deadline callback at its next
function entry or loop header.

``ITimerTicks`` is the usual one: ``setitimer`` delivers a signal per interval
of the chosen clock, and a relay turns the signal into a counted tick plus an
epoch bump.  ``PerfTicks`` (below) sends the same handler per-thread perf
events instead, for CPU-time intervals finer than the kernel tick;
``start_ticks`` chooses.  Two relays exist:

* ``NativeRelay`` (the default where the C extension can be used): the signal
  handler is C (``_native_src/ticks.c``); it records the tick's clocks and PC in the
  interrupted thread's own record (a process-wide CPU timer's signal lands on
  the thread whose CPU expired it, so each thread's ticks are its own) and calls
  ``wasmtime_engine_increment_epoch`` itself.  Synchronous, in the
  interrupted thread, no GIL, no extra thread, no wakeup fd -- so asyncio's
  wakeup fd is never touched, and it works when the profile starts off the
  main thread.
* ``WakeupRelay`` (the fallback): a Python-level handler is installed and
  CPython's C handler writes each signal number to the *wakeup fd*, a pipe a
  relay thread blocks on; the relay counts tick bytes and bumps the epochs, and
  forwards other signals' bytes to the wakeup fd installed before (asyncio's).
  Its limit: the relay needs the GIL, so while the guest runs Python host code
  a tick can be seen up to the GIL switch interval late.  It needs the main
  thread.

The kernel delivers CPU-time signals at most at its tick rate (250 per
CPU-second on CONFIG_HZ=250) whatever interval is asked: samples carry
measured CPU deltas, never the nominal interval.  ITIMER_VIRTUAL and
ITIMER_PROF count the whole process's CPU time.

The CPU-time intervals are rounded up to whole kernel ticks.  With tick-based
CPU accounting each scheduler tick adds a whole tick (4 ms) of CPU time, but
the kernel's ``check_cpu_itimer`` advances the timer by one interval per
check: an interval of 1 ms leaves 3 ms of backlog after every user-mode tick,
and the next three ticks fire too -- even when they land in system time, or in
whatever code runs next.  Measured: a host function doing only system calls
took 33 ITIMER_VIRTUAL ticks at 1 ms, 2 at 4 ms (its real user time).  A
whole-tick interval has no backlog and loses no rate (it is capped at the
tick anyway).  The wall clock (ITIMER_REAL, high-resolution) is not rounded.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import threading
import time
from types import FrameType
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Union

import wasmtime

from . import _native, _wasmtime as wt

CLOCKS = {
    # clock name: (setitimer which, signal, what it measures)
    "cpu": (signal.ITIMER_VIRTUAL, signal.SIGVTALRM, "user CPU time of the process"),
    "prof": (signal.ITIMER_PROF, signal.SIGPROF, "user+system CPU time of the process"),
    "wall": (signal.ITIMER_REAL, signal.SIGALRM, "wall-clock time"),
}
RELAYS = ("auto", "native", "wakeup")
Notes = Dict[str, Any]          # what a tick source tells the recording when it stops

_TIMER_NAMES = {signal.ITIMER_VIRTUAL: "ITIMER_VIRTUAL", signal.ITIMER_PROF: "ITIMER_PROF",
                signal.ITIMER_REAL: "ITIMER_REAL"}

_STOP_BYTE = 0  # never a signal number
_CLOCK_MONOTONIC_COARSE = 6   # Linux; not exported by the time module


# The finest interval each tick source sustains, in seconds, measured by
# benchmarks/interval_floor.py (figures in NOTES.md): each tick costs the
# interrupted thread ~30 us of CPU on the 2-core VM measured (a signal, a sample at
# the next epoch check), which the profile reports as the guest's.  At 250 us that
# is 15-19 % more CPU than the unprofiled run, at 100 us 36-43 %, at 50 us 2-2.7x;
# at 20 us the ring overflows and three quarters of the time is lost.  The CPU
# itimers round up to whole kernel ticks instead; "itimer" here is ITIMER_REAL.
INTERVAL_FLOOR_S: Dict[str, float] = {"perf": 250e-6, "itimer": 250e-6}


def kernel_tick() -> float:
    """The scheduler tick in seconds (1/CONFIG_HZ): the coarse clock's resolution."""
    try:
        res = time.clock_getres(_CLOCK_MONOTONIC_COARSE)
    except OSError:
        return 0.0
    return res if 0 < res <= 0.1 else 0.0


def effective_interval(clock: str, interval_s: float) -> float:
    """The interval actually armed: CPU clocks round up to whole kernel ticks."""
    tick = kernel_tick() if clock in ("cpu", "prof") else 0.0
    if tick <= 0:
        return interval_s
    ticks = max(1, -(-round(interval_s * 1e9) // round(tick * 1e9)))
    return ticks * tick


class Tick(NamedTuple):
    """A thread's latest tick as the native handler recorded it."""

    number: int         # the thread's ticks so far, this one included
    cpu_ns: int         # the thread's CPU clock at the tick
    wall_ns: int        # CLOCK_MONOTONIC at the tick
    pc: int             # the interrupted instruction
    tid: int            # the interrupted thread (native id)


class FakeClock:
    """Clocks a test sets by hand (as pyinstrument's fake clock): the capture reads
    these two words -- the thread's CPU ns and the wall ns -- instead of the real
    clocks, so interval arithmetic can be checked exactly."""

    def __init__(self, cpu_ns: int = 0, wall_ns: int = 0):
        self.words = (ctypes.c_int64 * 2)(cpu_ns, wall_ns)

    @property
    def cpu_ns(self) -> int:
        return int(self.words[0])

    @property
    def wall_ns(self) -> int:
        return int(self.words[1])

    def advance(self, cpu_ns: int, wall_ns: Optional[int] = None) -> None:
        """Let ``cpu_ns`` of thread CPU time pass (and ``wall_ns`` of wall time, by default
        the same)."""
        self.words[0] += cpu_ns
        self.words[1] += cpu_ns if wall_ns is None else wall_ns


class TickSource:
    """Interface: ``start(engines)``, ``add_engine``/``remove_engine`` while running,
    then ``stop()``.

    ``tick_word`` is the ``c_uint64`` the capture compares with, or None when
    ticks are counted by the native handler (whose record also holds each tick's
    clocks, PC and thread).  ``fake_clock``, when set, replaces the real clocks.
    """

    clock = "manual"
    relay = "manual"
    source = "manual"           # what makes the ticks: "itimer", "perf" or "manual"
    signum: Optional[int] = None
    interval_s: float = 0.0     # the interval armed (0: not a timer)
    fake_clock: Optional[FakeClock] = None

    def __init__(self) -> None:
        self.tick_word: Optional[ctypes.c_uint64] = ctypes.c_uint64(0)

    def start(self, engines: List[wasmtime.Engine]) -> None:
        raise NotImplementedError

    def add_engine(self, engine: wasmtime.Engine) -> None:
        """Bump this engine's epoch at every tick from now on."""
        raise NotImplementedError

    def remove_engine(self, engine: wasmtime.Engine) -> None:
        raise NotImplementedError

    def stop(self) -> Notes:
        """Stop ticking and restore everything; return notes for the recording."""
        raise NotImplementedError

    @property
    def ticks(self) -> int:
        """Ticks so far, in all threads."""
        if self.tick_word is None:
            return int(_native.extension().tick_counts()[0])
        return self.tick_word.value

    def last_tick(self) -> Optional[Tick]:
        """The calling thread's latest tick, where the tick source records it (else None)."""
        return None


class ManualTicks(TickSource):
    """Ticks only when ``tick()`` is called: deterministic tests (with a ``FakeClock``,
    deterministic times too)."""

    def __init__(self, fake_clock: Optional[FakeClock] = None):
        super().__init__()
        self.fake_clock = fake_clock

    def start(self, engines: List[wasmtime.Engine]) -> None:
        self._engines = list(engines)

    def add_engine(self, engine: wasmtime.Engine) -> None:
        self._engines.append(engine)

    def remove_engine(self, engine: wasmtime.Engine) -> None:
        if engine in self._engines:
            self._engines.remove(engine)

    def tick(self, n: int = 1) -> None:
        assert self.tick_word is not None
        self.tick_word.value += n
        for engine in self._engines:
            wt.increment_epoch(engine)

    def stop(self) -> Notes:
        self._engines = []
        return {}


SignalHandler = Callable[[int, Optional[FrameType]], Any]
PythonHandler = Union[SignalHandler, int, None]     # what signal.signal() returns


class HostTicks(NamedTuple):
    """Where the C handler hands ticks that land in Python host functions (and, for
    the wakeup relay, what it calls, holding the GIL, after each tick it counts)."""

    on_main: SignalHandler                          # the main thread's, as a signal handler
    elsewhere: Callable[[Set[int]], None]           # other threads', by kernel id
    on_relayed: Optional[Callable[[], None]] = None


class NativeRelay:
    """The C signal handler (see the module docstring).

    ``host_ticks``: where the C handler hands each tick that lands in a Python
    host function (``_csigprof.set_host_ticks``).  On the main thread it is
    ``on_main``, registered as the signal's Python-level handler under the C one,
    which runs at the next bytecode boundary -- if the relay is installed there
    (where Python signal handlers can be set); for other threads (and the main
    one otherwise) a sampler thread reads their ids from a pipe and calls
    ``elsewhere`` once it holds the GIL."""

    name = "native"

    def __init__(self, signum: int, host_ticks: Optional[HostTicks] = None):
        self.signum = signum
        self._ext = _native.extension()
        self.notes: Notes = {}
        self._host_ticks = host_ticks
        self._on_main = host_ticks is not None and (
            threading.current_thread() is threading.main_thread())
        self._previous_python: PythonHandler = None
        self._pipe = (-1, -1)
        self._sampler: Optional[threading.Thread] = None

    def install(self, engines: List[wasmtime.Engine]) -> None:
        host_ticks = self._host_ticks
        if host_ticks is not None and self._on_main:
            self._previous_python = signal.signal(self.signum, host_ticks.on_main)
        try:
            self._ext.install(self.signum, wt.INCREMENT_EPOCH_ADDRESS,
                           wt.RELEASE.tick_handler_on_alt_stack)
        except BaseException:
            self._restore_python_handler()
            raise
        if host_ticks is not None:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(write_fd, False)
            self._pipe = (read_fd, write_fd)
            self._sampler = threading.Thread(target=self._sample_elsewhere, args=(read_fd,),
                                             name="sigprof-host-ticks", daemon=True)
            self._sampler.start()
            self._ext.set_host_ticks(self.signum if self._on_main else 0, write_fd)
        for engine in engines:
            self.add_engine(engine)

    def _sample_elsewhere(self, read_fd: int) -> None:
        assert self._host_ticks is not None
        elsewhere = self._host_ticks.elsewhere
        while True:
            try:
                data = os.read(read_fd, 8 * 512)
            except OSError:
                return
            if len(data) < 8:
                return                              # the write end was closed: stop
            try:
                elsewhere(set(struct.unpack(f"={len(data) // 8}Q", data[:len(data) // 8 * 8])))
            except Exception:  # pragma: no cover - a sample lost, never the thread
                self.notes["host_tick_errors"] = self.notes.get("host_tick_errors", 0) + 1

    def _stop_sampler(self, join: bool) -> None:
        read_fd, write_fd = self._pipe
        _close_fds(write_fd)                    # the sampler's read sees the end
        if join and self._sampler is not None:
            self._sampler.join(timeout=2.0)
        _close_fds(read_fd)
        self._pipe = (-1, -1)
        self._sampler = None

    def _restore_python_handler(self) -> None:
        if self._on_main and self._host_ticks is not None and signal.getsignal(
                self.signum) is self._host_ticks.on_main:
            _put_back_handler(self.signum, self._previous_python)

    def add_engine(self, engine: wasmtime.Engine) -> None:
        self._ext.add_engine(wt.engine_address(engine))

    def remove_engine(self, engine: wasmtime.Engine) -> None:
        self._ext.remove_engine(wt.engine_address(engine))

    def uninstall(self) -> None:
        self._ext.set_host_ticks(0, -1)
        self._stop_sampler(join=True)
        if self._ext.handler_is_ours():
            self._ext.uninstall(True)
            self._restore_python_handler()
        else:
            # Someone installed their own handler while we ran: theirs stays.
            self.notes["handler_replaced"] = True
            self._ext.uninstall(False)

    def reset_after_fork(self) -> None:
        self._ext.set_host_ticks(0, -1)
        self._stop_sampler(join=False)      # the child has no sampler thread
        self._ext.uninstall(True)
        try:
            self._restore_python_handler()
        except ValueError:  # pragma: no cover - fork from a non-main thread
            pass


class WakeupRelay:
    """The wakeup-fd relay thread (see the module docstring)."""

    name = "wakeup"

    def __init__(self, signum: int, tick_word: ctypes.c_uint64,
                 host_ticks: Optional[HostTicks] = None):
        self.signum = signum
        self.tick_word = tick_word
        # after each counted tick, on the relay thread; the Python-level handler
        # (on the main thread, at its next bytecode)
        self._on_relayed = host_ticks.on_relayed if host_ticks is not None else None
        self._on_signal: SignalHandler = (host_ticks.on_main if host_ticks is not None
                                          else _ignore_tick)
        self.notes: Notes = {}
        self._thread: Optional[threading.Thread] = None
        self._read_fd = self._write_fd = -1
        self._previous_wakeup_fd = -1
        self._previous_handler: PythonHandler = None
        self._python_handler_installed = False
        self._wakeup_installed = False

    def install(self, engines: List[wasmtime.Engine]) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "without the native tick handler, sigprof must be started on the main thread "
                "(Python lets only the main thread install signal handlers and the wakeup fd); "
                "start the profile on the main thread, or use `sigprof record` in a subprocess")
        self._engines = list(engines)        # replaced whole, never mutated: the relay reads it
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._thread = threading.Thread(target=self._relay, name="sigprof-relay", daemon=True)
        self._thread.start()
        self._previous_handler = signal.signal(self.signum, self._on_signal)
        self._python_handler_installed = True
        # Restart interrupted system calls (CPython installs handlers without
        # SA_RESTART): a tick must not turn a guest's blocking WASI call into EINTR.
        signal.siginterrupt(self.signum, False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._wakeup_installed = True

    def add_engine(self, engine: wasmtime.Engine) -> None:
        self._engines = self._engines + [engine]

    def remove_engine(self, engine: wasmtime.Engine) -> None:
        self._engines = [e for e in self._engines if e is not engine]

    def _relay(self) -> None:
        tick = self.signum
        word = self.tick_word
        read = os.read
        fd = self._read_fd
        while True:
            try:
                data = read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            n = data.count(tick)
            if n:
                word.value += n
                if self._on_relayed is not None:
                    try:
                        self._on_relayed()
                    except Exception:  # pragma: no cover - a sample lost, never the relay
                        self.notes["relayed_tick_errors"] = (
                            self.notes.get("relayed_tick_errors", 0) + 1)
            if n != len(data):
                others = bytes(b for b in data if b != tick and b != _STOP_BYTE)
                if others and self._previous_wakeup_fd >= 0:
                    try:
                        os.write(self._previous_wakeup_fd, others)
                    except OSError:
                        pass  # full or closed: what CPython itself would do
                if _STOP_BYTE in data:
                    return
            # Any signal, tick or not, brings the guest to its epoch callback,
            # where deferred Python signal handlers (Ctrl-C) run.
            for engine in self._engines:
                wt.increment_epoch(engine)

    def uninstall(self) -> None:
        if self._thread is not None:
            try:
                os.write(self._write_fd, bytes([_STOP_BYTE]))
            except OSError:
                pass
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._wakeup_installed:
            current = signal.set_wakeup_fd(self._previous_wakeup_fd)
            if current != self._write_fd:
                # Someone (asyncio adding a signal handler) replaced our fd while
                # we ran: theirs is the one to keep.  Later ticks were not relayed.
                signal.set_wakeup_fd(current)
                self.notes["wakeup_fd_replaced"] = True
            self._wakeup_installed = False
        self._restore_python_handler()
        self._close_pipe()

    def _restore_python_handler(self) -> None:
        if self._python_handler_installed:
            _put_back_handler(self.signum, self._previous_handler)
            self._python_handler_installed = False

    def _close_pipe(self) -> None:
        _close_fds(self._read_fd, self._write_fd)
        self._read_fd = self._write_fd = -1

    def reset_after_fork(self) -> None:
        """In a forked child: no relay thread exists; put the signal state back."""
        self._thread = None
        try:
            if self._wakeup_installed:
                signal.set_wakeup_fd(self._previous_wakeup_fd)
                self._wakeup_installed = False
            self._restore_python_handler()
        except (ValueError, OSError):  # pragma: no cover - fork from a non-main thread
            pass
        self._close_pipe()


def _put_back_handler(signum: int, previous: PythonHandler) -> None:
    """Reinstall the Python-level handler a relay replaced (None: none was Python's)."""
    signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def _ignore_tick(signum: int, frame: Optional[FrameType]) -> None:
    """The Python-level handler of the wakeup relay: the C handler did the work."""


def _drain_pending(signum: int) -> None:
    # A tick generated just before the timer was disarmed may still be
    # pending; let it arrive while our handler is installed, or restoring
    # the default disposition (terminate) could kill the process.
    deadline = time.monotonic() + 0.2
    while signum in signal.sigpending() and time.monotonic() < deadline:
        time.sleep(0.001)


def _native_last_tick() -> Optional[Tick]:
    recorded = _native.extension().last_tick()
    return Tick(*recorded) if recorded is not None else None


class _SignalTicks(TickSource):
    """A tick source whose ticks are signals a relay turns into epoch bumps."""

    _relay: "Optional[NativeRelay | WakeupRelay]" = None

    def add_engine(self, engine: wasmtime.Engine) -> None:
        assert self._relay is not None
        self._relay.add_engine(engine)

    def remove_engine(self, engine: wasmtime.Engine) -> None:
        if self._relay is not None:
            self._relay.remove_engine(engine)

    def last_tick(self) -> Optional[Tick]:
        return _native_last_tick() if self.relay == "native" else None


class ITimerTicks(_SignalTicks):
    """setitimer + a relay (native handler or wakeup fd); see the module docstring."""

    source = "itimer"

    def __init__(self, clock: str, interval_s: float, relay: str = "auto",
                 host_ticks: Optional[HostTicks] = None):
        super().__init__()
        self._host_ticks = host_ticks
        if relay not in RELAYS:
            raise ValueError(f"relay must be one of {', '.join(RELAYS)}, not {relay!r}")
        self.clock = clock
        self.interval_s = effective_interval(clock, float(interval_s))
        self.which, self._signal, _ = CLOCKS[clock]
        self.signum = self._signal
        self._requested_relay = relay
        self._armed = False
        self.notes: Notes = {}

    def start(self, engines: List[wasmtime.Engine]) -> None:
        name = _TIMER_NAMES[self.which]
        if signal.getitimer(self.which) != (0.0, 0.0):
            raise RuntimeError(
                f"{name} is already armed by something else in this process (another profiler, "
                f"or signal.alarm/setitimer); sigprof will not take it over. Disarm it first, or "
                f"choose another clock (clock='cpu'|'prof'|'wall').")
        try:
            relay = self._requested_relay
            why_not = _native.unavailable_reason()
            if relay == "native" and why_not:
                raise RuntimeError(f"native tick handler unavailable: {why_not}")
            if relay == "auto":
                relay = "wakeup" if why_not else "native"
                if why_not:
                    self.notes["native_unavailable"] = why_not
            if relay == "native":
                self._relay = NativeRelay(self._signal, self._host_ticks)
                self.tick_word = None
            else:
                assert self.tick_word is not None
                self._relay = WakeupRelay(self._signal, self.tick_word, self._host_ticks)
            self._relay.install(engines)
            self.relay = relay
            signal.setitimer(self.which, self.interval_s, self.interval_s)
            self._armed = True
        except BaseException:
            self._uninstall()
            raise

    def stop(self) -> Notes:
        self._uninstall()
        return dict(self.notes)

    def _uninstall(self) -> None:
        if self._armed:
            signal.setitimer(self.which, 0.0, 0.0)
            self._armed = False
            _drain_pending(self._signal)
        if self._relay is not None:
            self._relay.uninstall()
            # Read the count once the relay has stopped (the wakeup thread may count a
            # tick still in its pipe), and keep it readable after the handler is gone.
            self.tick_word = ctypes.c_uint64(self.ticks)
            self.notes.update(self._relay.notes)
            self._relay = None

    def reset_after_fork(self) -> None:
        """In a forked child: no timer was inherited and no relay thread exists."""
        self._armed = False
        try:
            signal.setitimer(self.which, 0.0, 0.0)
        except (OSError, ValueError):  # pragma: no cover
            pass
        if self._relay is not None:
            self._relay.reset_after_fork()
            self._relay = None


class PerfUnavailable(RuntimeError):
    """Perf events cannot drive the ticks here (the message says why)."""


class PerfTicks(_SignalTicks):
    """Per-thread perf task-clock events driving the native handler (``_native_src/perf.c``):
    CPU-time ticks on a high-resolution timer, each to the thread whose CPU time
    it was, at any interval -- not capped at the kernel tick like the itimers.
    The interrupted PC the handler records is exact: the signal is delivered where
    the thread was when its timer expired."""

    source = "perf"
    relay = "native"

    def __init__(self, clock: str, interval_s: float,
                 host_ticks: Optional[HostTicks] = None):
        super().__init__()
        self._host_ticks = host_ticks
        if clock not in ("cpu", "prof"):
            raise ValueError("perf events measure CPU time: use clock='cpu' or 'prof' with them")
        self.clock = clock
        self.interval_s = float(interval_s)
        self._signal = CLOCKS[clock][1]
        self.signum = self._signal
        self.tick_word = None
        self.notes: Notes = {}

    def start(self, engines: List[wasmtime.Engine]) -> None:
        why_not = _native.unavailable_reason()
        if why_not:
            raise PerfUnavailable(f"perf events need the native tick handler ({why_not})")
        relay = NativeRelay(self._signal, self._host_ticks)
        relay.install(engines)
        try:
            _native.extension().perf_start(round(self.interval_s * 1e9), self._signal)
        except OSError as exc:
            relay.uninstall()
            raise PerfUnavailable(f"perf_event_open refused a task-clock event "
                                  f"({os.strerror(exc.errno or 0)}; perf_event_paranoid "
                                  f"{_paranoid()})") from None
        except BaseException:
            relay.uninstall()           # the handler must not outlive a failed start
            raise
        self._relay = relay

    def stop(self) -> Notes:
        if self._relay is not None:
            failures = _native.extension().perf_stop()
            if failures:
                self.notes["perf_thread_failures"] = failures
            _drain_pending(self._signal)
            self._relay.uninstall()
            self.notes.update(self._relay.notes)
            self._relay = None
            self.tick_word = ctypes.c_uint64(self.ticks)     # readable after the handler
        return dict(self.notes)

    def reset_after_fork(self) -> None:
        """In a forked child: the events were the parent's threads'; put the handler back."""
        if self._relay is not None:
            _native.extension().perf_stop(False)
            self._relay.reset_after_fork()
            self._relay = None


def _paranoid() -> str:
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


SOURCES = ("auto", "perf", "itimer")


def planned_source(clock: str, interval_s: float, source: str) -> str:
    """The tick source ``start_ticks`` tries first: "perf" when asked, or by default for a
    CPU clock at an interval below the kernel tick (where the itimer cannot go)."""
    tick = kernel_tick()
    fine = clock in ("cpu", "prof") and tick > 0 and interval_s < tick * 0.999
    return "perf" if source == "perf" or (source == "auto" and fine) else "itimer"


def interval_floor(clock: str, source: str) -> float:
    """The finest interval the planned tick source sustains (``INTERVAL_FLOOR_S``); 0 for
    the CPU itimers, which round up to whole kernel ticks instead."""
    if source == "itimer" and clock in ("cpu", "prof"):
        return 0.0
    return INTERVAL_FLOOR_S.get(source, 0.0)


def start_ticks(clock: str, interval_s: float, source: str, engines: List[wasmtime.Engine],
                host_ticks: Optional[HostTicks] = None) -> TickSource:
    """The process's tick source, started: perf events when asked, or by default for
    a CPU clock at an interval below the kernel tick (where the itimer cannot go);
    the itimer otherwise, or when perf events are refused (noted as
    ``perf_unavailable``; an explicit ``source="perf"`` raises instead).
    ``host_ticks``: see ``NativeRelay``."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if planned_source(clock, interval_s, source) == "perf":
        perf = PerfTicks(clock, interval_s, host_ticks)
        try:
            perf.start(engines)
            return perf
        except PerfUnavailable as exc:
            if source == "perf":
                raise
            refused = str(exc)
    else:
        refused = ""
    timer = ITimerTicks(clock, interval_s, host_ticks=host_ticks)
    timer.start(engines)
    if refused:
        timer.notes["perf_unavailable"] = refused
    return timer
