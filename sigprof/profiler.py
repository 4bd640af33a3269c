"""The drop-in context manager: start sampling a store, stop, get a Recording.

    with sigprof.profile(store, modules=[("app", module)]) as prof:
        instance.exports(store)["run"](store, 10)
    prof.save("run.json")

Live state (``Profiler``: timer, ring, hooks) and the finished result
(``Recording``) are different objects; after the block the profiler hands
every result query to its recording.  Every path out of the block -- normal
exit, a guest trap, an exception, KeyboardInterrupt -- disarms the timer,
restores signal handlers and the wakeup fd, unhooks wasmtime-py and leaves
the store with a harmless epoch callback, and still builds the recording.

Accuracy and limits (details in NOTES.md):

* Samples are taken when the guest reaches an epoch check (function entry or
  loop header) after a timer tick, and at the edges of Python host calls and
  guest calls.  The tick handler records where each tick landed, and a guest
  sample is re-attributed from the check to that function (see
  ``_resolve.tick_attribution``), which removes most of epoch sampling's bias against
  loop-free functions.  Time in native host calls (WASI) goes to the next wasm
  frame.
* Each sample's weight is the measured CPU (or wall) time since the previous
  sample on the profiled thread; the profiler's own time is excluded and
  reported as overhead.
* sigprof takes over the store's epoch deadline while profiling, and bumps
  the engine's epoch: use an engine of its own (``sigprof.engine()``) for the
  profiled store if other stores rely on epoch deadlines.

Security: by default a recording holds module-relative code offsets, never
host addresses; no environment variables; file names without directories;
and modules not listed in ``modules`` (when it is given) appear as one opaque
frame with no name.  ``host_details=True`` adds the host's name, platform,
pid/tid and full file paths, for private use.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import threading
import time
import warnings
from types import TracebackType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, Union

import wasmtime

from . import __version__
from . import (_app_epochs, _capture, _imports, _native, _native_threads, _resolve, _session,
               _wasmtime as wt)
from ._markers import MarkerLog
from ._ring import RawSample, Ring
from ._session import SESSION
from ._options import ProfileOptions
from ._timer import (Notes, TickSource, effective_interval, interval_floor, kernel_tick,
                     planned_source)
from .recording import Recording, RecordingMeta
from .dwarf import with_external_dwarf
from .wasmfile import WasmFormatError, WasmInfo, read_wasm, wasm_bytes

DEFAULT_INTERVAL = 0.001      # seconds; the CPU clocks default to one kernel tick instead


def default_interval(clock: str) -> float:
    """1 ms, or for the CPU clocks one kernel tick: their timers cannot tick faster."""
    tick = kernel_tick() if clock in ("cpu", "prof") else 0.0
    return tick if tick > 0 else DEFAULT_INTERVAL
_SOURCE_NAMES = {"perf": "perf events", "itimer": "the wall clock's interval timer"}

ModuleSpec = Union[wasmtime.Module, Tuple[str, wasmtime.Module]]



def engine(config: Optional[wasmtime.Config] = None) -> wasmtime.Engine:
    """A wasmtime Engine with epoch interruption on (required for profiling).

    Pass a ``Config`` to set other options; sigprof turns on
    ``epoch_interruption`` in it.  A store on such an engine traps at once
    unless an epoch deadline is set: outside a profile, call
    ``store.set_epoch_deadline(sigprof.FAR_DEADLINE)`` (a profile leaves its
    store that way when it ends).
    """
    if config is None:
        config = wasmtime.Config()
    elif not isinstance(config, wasmtime.Config):
        raise TypeError(f"config must be a wasmtime.Config, not {type(config).__name__}")
    config.epoch_interruption = True
    _imports.install()                  # host functions defined from now on keep import names
    made = wasmtime.Engine(config)
    SESSION.epoch_engines.add(made)
    return made


def _check_engine(store: wasmtime.Store) -> None:
    if not SESSION.has_epoch_interruption(store.engine):
        raise ValueError(
            "this store's engine was created without epoch interruption, which sigprof needs "
            "to reach the guest's stack; create it with sigprof.engine() (or set "
            "config.epoch_interruption = True before wasmtime.Engine(config)) and compile the "
            "modules with that engine")


def _normalise_modules(modules: Optional[Iterable[ModuleSpec]]) -> Optional[List[Tuple[Optional[str], wasmtime.Module]]]:
    if modules is None:
        return None
    out: List[Tuple[Optional[str], wasmtime.Module]] = []
    for item in modules:
        if isinstance(item, wasmtime.Module):
            out.append((None, item))
        elif (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
              and isinstance(item[1], wasmtime.Module)):
            out.append((item[0], item[1]))
        else:
            raise TypeError("modules must hold wasmtime.Module objects or (name, Module) pairs, "
                            f"not {item!r}")
    return out


NameSource = Union[str, bytes, "os.PathLike[str]"]
NamesSpec = Union[NameSource, Mapping[wasmtime.Module, NameSource]]


def _load_names(names: Optional[NamesSpec],
                modules: Optional[List[Tuple[Optional[str], wasmtime.Module]]],
                mismatches: List[str], binaries: Optional[Dict[int, bytes]] = None
                ) -> Dict[int, WasmInfo]:
    """``names=`` read now (so a bad file fails at once): module position -> names,
    and into ``binaries`` the binary itself (its DWARF gives source lines).
    A binary that is not a build of its module (``_resolve.names_mismatch``) is not
    used; why goes to ``mismatches``, and to stderr as a warning, at once."""
    if names is None:
        return {}
    if not modules:
        raise ValueError("names= needs modules=: say which module the names are for")
    given = names.items() if isinstance(names, Mapping) else [(modules[0][1], names)]
    out: Dict[int, WasmInfo] = {}
    for module, source in given:
        where = next((i for i, (_, m) in enumerate(modules) if m is module), None)
        if where is None:
            raise ValueError("names= maps a module that is not in modules=")
        try:
            binary = wasm_bytes(source)
            info = read_wasm(binary)
        except (OSError, WasmFormatError) as exc:
            raise ValueError(f"names=: {exc}") from None
        label = "the bytes given" if isinstance(source, bytes) else os.path.basename(source)
        module_name = modules[where][0] or f"modules[{where}]"
        why = _resolve.names_mismatch(module, info)
        if why is None:
            out[where] = info
            if binaries is not None:
                if not isinstance(source, bytes):       # a split debug file is beside it
                    binary, problem = with_external_dwarf(
                        binary, os.path.dirname(os.path.abspath(os.fspath(source))))
                    if problem:
                        mismatches.append(f"names= {os.path.basename(source)}: {problem}")
                        warnings.warn(mismatches[-1], ProfileWarning, stacklevel=4)
                binaries[where] = binary
            continue
        mismatches.append(f"names= {label} is not a build of {module_name}: {why}; its names "
                          f"were not used")
        warnings.warn(mismatches[-1], ProfileWarning, stacklevel=4)
    return out


class ProfileWarning(UserWarning):
    """Something the profile will say in its warnings too, said on stderr at once."""


# Threads without Python that took more than this, and more than a tenth of the CPU
# measured, get a warning: below it, a module or two compiled during the profile.
NATIVE_THREADS_WARN_NS = 50_000_000


class Profiler:
    """A profile of one store, or of every store (``store=None``), as a context
    manager (see ``profile()``)."""

    def __init__(self, store: Optional[wasmtime.Store] = None,
                 modules: Optional[Iterable[ModuleSpec]] = None,
                 options: ProfileOptions = ProfileOptions(), *,
                 names: Optional[NamesSpec] = None, memories: Sequence[wasmtime.Memory] = ()):
        if store is not None and not isinstance(store, wasmtime.Store):
            raise TypeError(f"store must be a wasmtime.Store (or None: every store), "
                            f"not {type(store).__name__}")
        if not isinstance(options, ProfileOptions):
            raise TypeError(f"options must be a ProfileOptions, not {type(options).__name__}")
        self.options = options
        interval, clock, ticks = options.interval, options.clock, options.ticks
        self.store = store
        self.modules = _normalise_modules(modules)
        self._names_warnings: List[str] = []
        self._binaries: Dict[int, bytes] = {}
        self._names = _load_names(names, self.modules, self._names_warnings, self._binaries)
        if not all(isinstance(m, wasmtime.Memory) for m in memories) or len(memories) > 16:
            raise ValueError("memories must be at most 16 wasmtime.Memory objects")
        if memories and store is None:
            raise ValueError("memories= needs the store they belong to: profile(store, ...)")
        self.memories = list(memories)
        # The interval asked for, and the one used: raised to what the tick source
        # sustains (``_timer.interval_floor``), with a warning.
        self.requested_interval_s = (float(interval) if interval is not None
                                     else default_interval(clock))
        planned = planned_source(clock, self.requested_interval_s, options.source)
        floor = 0.0 if ticks is not None else interval_floor(clock, planned)
        self.interval_s = max(self.requested_interval_s, floor)
        self._floor_warning = (
            f"interval raised from {self.requested_interval_s * 1e3:g} ms to "
            f"{self.interval_s * 1e3:g} ms: {_SOURCE_NAMES[planned]} cannot sustain a finer "
            f"one (each tick costs the guest's thread CPU time, which the profile would "
            f"report as the guest's)"
            if self.interval_s > self.requested_interval_s else "")
        self.clock = clock if ticks is None else ticks.clock
        self.forked = False             # set in a forked child: the profile is its parent's
        self._own_ticks = ticks
        self._ticks: Optional[TickSource] = None
        self._captures: List[_capture.Capture] = []
        self._running = False
        self._started = False
        self._plain_engine_calls = 0    # store-less: guest calls on engines without epochs
        self._adopt_errors: List[str] = []
        self._join_warnings: List[str] = []
        self._t0_ns = 0
        self._ticks_at_start = 0
        self._uncovered_at_start = 0
        self._native_losses_at_start = (0, 0)
        self._start_unix_ns = 0
        self._native_threads_at_start: Optional[Dict[int, int]] = None  # store-less
        self._markers = MarkerLog()
        self.recording: Optional[Recording] = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> "Profiler":
        if self._started or self.recording is not None:
            raise RuntimeError("this profiler was already started; make a new one")
        wt.check_supported()
        if self.store is not None:
            _check_engine(self.store)
        _imports.install()
        self._module_refs = _resolve.module_refs(self.modules or [], self._names, self._binaries)
        ticks = SESSION.join(self, self._own_ticks)
        self._started = True
        self._ticks = ticks
        try:
            # A running profile armed the timer: say so if this one would have
            # armed another interval (the itimer's whole ticks, or perf's exact one).
            armed = ticks.interval_s or self.interval_s
            alone = (effective_interval(self.clock, self.interval_s), self.interval_s)
            if ticks is SESSION.timer and all(abs(armed - a) > 1e-9 for a in alone):
                self._join_warnings.append(
                    f"interval {armed * 1e3:g} ms, not {self.interval_s * 1e3:g} ms: a profile "
                    f"already running set the process's one timer")
            self._ticks_at_start = ticks.ticks
            self._uncovered_at_start = SESSION.uncovered_calls
            self._native_losses_at_start = _native_losses()
            self._t0_ns = time.monotonic_ns()
            self._start_unix_ns = time.time_ns()
            if self.store is None:
                self._native_threads_at_start = _native_threads.native_threads_cpu_ns()
            with SESSION.lock:
                self._running = True
                if self.store is None and self.options.python_frames and ticks.clock != "wall":
                    self._start_python_time(ticks)
                if self.store is not None:
                    self._attach(self.store, self.memories)
        except BaseException:
            self._running = False
            self._release()
            self._leave()
            raise
        return self

    def _attach(self, store: wasmtime.Store, memories: List[wasmtime.Memory]) -> _capture.Capture:
        """Start sampling ``store`` (under the session lock)."""
        assert self._ticks is not None
        ring = Ring(self.options.capacity, self.options.max_depth, when_full=self.options.when_full)
        capture = _capture.new_capture(store, ring, self.options.python_frames)
        if self.store is None and SESSION.python_time is not None:
            SESSION.python_time.share_marks(capture)
        capture.measure_memories(memories)
        capture.markers = self._markers
        capture.attach()
        try:
            wt.set_store_deadline(store, 1)
            SESSION.add_capture(capture, self._ticks)
            capture.begin(self._ticks.tick_word, self._ticks.fake_clock, self._t0_ns,
                          every_thread=self._ticks.clock == "wall")
        except BaseException:
            SESSION.remove_capture(capture, self._ticks, orphan=False)
            capture.detach()
            raise
        self._captures.append(capture)
        return capture

    def adopt(self, store: wasmtime.Store) -> Optional[_capture.Capture]:
        """A store-less profile: start sampling a store as Python enters it (any thread)."""
        with SESSION.lock:
            if not self._running:
                return None
            found = SESSION.captures.get(id(store))
            if found is not None:
                return found
            epoch = SESSION.has_epoch_interruption(store.engine)
            if not epoch:
                if epoch is not None:
                    self._plain_engine_calls += 1
                return None
            try:
                return self._attach(store, [])
            except Exception as exc:        # never break the application's guest call
                self._adopt_errors.append(repr(exc))
                return None

    def _release(self) -> None:
        """Detach every capture; a store that may be running on another thread -- in
        a guest call there now, or adopted there by a store-less profile -- is not
        touched (its capture is abandoned: disabled, held by the store)."""
        for capture in self._captures:
            assert self._ticks is not None
            orphan = not capture.bound_here() and (capture.guest_depth > 0
                                                   or self.store is None)
            if not orphan:
                capture.detach()
            SESSION.remove_capture(capture, self._ticks, orphan)

    def _start_python_time(self, ticks: TickSource) -> None:
        """The whole program is this profile's: its Python time too (under the lock)."""
        interval_ns = round(ticks.interval_s * 1e9)
        python_time: Optional[_session.PythonTime] = None
        if ticks.relay == "native" and ticks.tick_word is None:
            python_time = _session.PythonTime(self._t0_ns, interval_ns, self.options.capacity)
        elif ticks.relay == "wakeup":
            python_time = _session.PurePythonTime(self._t0_ns, interval_ns, self.options.capacity)
        if python_time is not None:
            SESSION.python_time = python_time       # before its ticks can come
            python_time.start()

    def _stop_python_time(self) -> None:
        python_time = SESSION.python_time
        if self.store is None and python_time is not None:
            python_time.stop()
            SESSION.python_time = None

    def _leave(self) -> Notes:
        self._stop_python_time()
        notes = SESSION.leave(self)
        if self._own_ticks is not None:
            notes = self._own_ticks.stop() or {}
        return notes

    def stop(self) -> Recording:
        if self.recording is not None:
            return self.recording
        if not self._started:
            raise RuntimeError("this profiler was never started")
        ticks = self._ticks
        assert ticks is not None
        with SESSION.lock:
            self._running = False
            captures = list(self._captures)
            python_time = SESSION.python_time if self.store is None else None
            self._stop_python_time()
        notes: Notes = {}
        finished: List[Tuple[int, int, int, int]] = []
        host_callables = SESSION.host_callables      # the last profile out resets it
        uncovered = SESSION.uncovered_calls - self._uncovered_at_start
        losses = [now - then for now, then in zip(_native_losses(), self._native_losses_at_start)]
        try:
            for capture in captures:
                finished.append(capture.finish())
            ticks_taken = ticks.ticks - self._ticks_at_start
        finally:
            # The rings are read below, before their stores are let go.
            try:
                raw = self._read_rings(captures)
                if python_time is not None and python_time.samples:
                    raw = sorted(raw + python_time.samples, key=lambda sample: sample.time_ns)
            finally:
                try:
                    self._release()
                finally:
                    notes = self._leave()
        here = next((f for c, f in zip(captures, finished) if c.bound_here()), None)
        unsampled_cpu, unsampled_wall, thread_cpu, duration = (
            here or (0, 0, 0, time.monotonic_ns() - self._t0_ns))
        meta = self._meta(captures, ticks, notes, unsampled_cpu, unsampled_wall, thread_cpu,
                          duration, ticks_taken, uncovered)
        meta["lost_ticks"], meta["host_ticks_unsent"] = losses
        if self._native_threads_at_start is not None:
            _note_native_threads(meta, self._native_threads_at_start,
                                 sum(sample.cpu_ns for sample in raw))
        if python_time is not None:
            meta["python_time_samples"] = len(python_time.samples)
            meta["dropped"] += python_time.dropped
            meta["callback_errors"] += python_time.errors
        meta["warnings"].extend(counter_warnings(meta))
        markers, markers_dropped = self._markers.rows()   # calls ending later are not this profile's
        meta["marker_min_ns"] = self._markers.min_ns
        if markers_dropped:
            meta["markers_dropped"] = markers_dropped
        segments: Dict[int, Any] = {}
        for capture in captures:
            segments.update(capture.python_segments)
        if python_time is not None:
            segments.update(python_time.segments)
        try:
            self.recording = _resolve.resolve_recording(
                raw, modules=self._module_refs, discover_allowed=self.modules is None,
                host_callables=host_callables, meta=meta,
                host_details=self.options.host_details, use_tick_pc=self.options.use_tick_pc,
                python_segments=segments, thread_names=dict(_session.named),
                markers=markers, t0_ns=self._t0_ns)
        except Exception as exc:  # never lose the user's exception to ours
            meta["warnings"].append(f"could not resolve samples: {exc!r}")
            self.recording = _resolve.resolve_recording(
                [], modules=self._module_refs, discover_allowed=False, host_callables=[], meta=meta)
        if self.recording.samples == 0:
            self.recording.meta["warnings"].append(
                f"no samples: the run used less than one tick of the {self.recording.clock} "
                f"clock ({self.recording.interval * 1e3:g} ms); profile a longer run"
                + (", or use clock='wall' (--clock wall)" if self.recording.clock != "wall"
                   else ""))
        self._captures = []
        _capture.run_deferred_now()
        return self.recording

    @staticmethod
    def _read_rings(captures: List[_capture.Capture]) -> List[RawSample]:
        """Every capture's samples, in time order."""
        raw: List[RawSample] = []
        for capture in captures:
            raw.extend(capture.ring.read())
        if len(captures) > 1:
            raw.sort(key=lambda s: s.time_ns)
        return raw

    def _meta(self, captures: List[_capture.Capture], ticks: TickSource, notes: Notes,
              unsampled_cpu: int, unsampled_wall: int, thread_cpu: int,
              duration: int, ticks_taken: int, uncovered: int) -> RecordingMeta:
        native = all(c.native for c in captures) if captures else _native.available()
        meta: RecordingMeta = {
            "format": "sigprof",
            "name": self.options.name or (self.modules[0][0] if self.modules and self.modules[0][0] else ""),
            "clock": ticks.clock,
            "interval_s": ticks.interval_s if ticks.interval_s else self.interval_s,
            "requested_interval_s": self.requested_interval_s,
            "capture": "native" if native else "python",
            "capacity": self.options.capacity,
            "max_depth": self.options.max_depth,
            "when_full": self.options.when_full,
            "start_unix_ns": self._start_unix_ns,
            "duration_ns": duration,
            "thread_cpu_ns": thread_cpu,
            "overhead_cpu_ns": sum(c.overhead_cpu_ns for c in captures),
            "overhead_wall_ns": sum(c.overhead_wall_ns for c in captures),
            "unsampled_cpu_ns": unsampled_cpu,
            "unsampled_wall_ns": unsampled_wall,
            "ticks": ticks_taken,
            "relay": ticks.relay,
            "tick_source": ticks.source,
            "use_tick_pc": self.options.use_tick_pc,
            "python_frames": self.options.python_frames and native,
            "stores": len(captures),
            "samples_taken": sum(c.ring.count for c in captures),
            "dropped": sum(c.ring.dropped() for c in captures),
            "shared_stacks": sum(c.shared_stacks for c in captures),
            "callback_errors": sum(c.errors for c in captures),
            "activations_lost": sum(c.activations_lost for c in captures),
            "host_tick_errors": notes.get("host_tick_errors", 0),
            "unsampled_guest_calls": self._plain_engine_calls,
            "uncovered_guest_calls": uncovered,
            "versions": {"sigprof": __version__, "wasmtime": wt.WASMTIME_VERSION,
                         "python": platform.python_version()},
            "arch": platform.machine(),          # what the compiled code offsets are in
            "warnings": list(self._names_warnings) + list(self._join_warnings),
        }
        armed = ticks.interval_s if ticks.interval_s else self.interval_s
        if armed > self.interval_s * 1.001 and not self._join_warnings:
            refused = notes.get("perf_unavailable")
            meta["warnings"].append(
                f"interval raised from {self.requested_interval_s * 1e3:g} ms to "
                f"{armed * 1e3:g} ms: "
                + (f"perf events were refused ({refused}), and " if refused else "")
                + f"the {ticks.clock} clock's itimer ticks at most once per kernel tick"
                + ("" if refused else "; use clock='wall' (--clock wall) for finer sampling"))
        elif self._floor_warning and not self._join_warnings:
            meta["warnings"].append(self._floor_warning)
        if notes.get("perf_thread_failures"):
            meta["warnings"].append(
                f"{notes['perf_thread_failures']} threads could not get a perf event; their "
                f"CPU time was not sampled")
        if notes.get("native_unavailable"):
            meta["warnings"].append(f"pure-Python capture (slower, epoch-biased): "
                                    f"{notes['native_unavailable']}")
        if notes.get("handler_replaced"):
            meta["warnings"].append("the tick signal's handler was replaced during the profile; "
                                    "later ticks were not sampled")
        if notes.get("wakeup_fd_replaced"):
            meta["warnings"].append("the signal wakeup fd was replaced during the profile "
                                    "(asyncio add_signal_handler?); later ticks were not sampled")
        if self._plain_engine_calls:
            meta["warnings"].append(
                f"{self._plain_engine_calls} guest calls ran on engines without epoch "
                f"interruption, which sigprof cannot sample: create those engines with "
                f"sigprof.engine()")
        if uncovered:
            meta["warnings"].append(
                f"{uncovered} guest calls into stores no profile covers ran meanwhile and were "
                f"not sampled; sigprof.profile() with no store covers every store")
        for error in self._adopt_errors[:3]:
            meta["warnings"].append(f"a store could not be profiled: {error}")
        unslotted = sum(c.unslotted for c in captures)
        if unslotted:
            meta["warnings"].append(f"{unslotted} epoch checks ran on threads beyond sigprof's "
                                    f"thread table (4096 threads); they were not sampled")
        if self.options.python_frames and not native:
            meta["warnings"].append("Python frames need the native capture; this profile has "
                                    "the guest's frames only")
        if self.forked:
            meta["warnings"].append("this profile was started in the parent process; the "
                                    "forked child's own run is not in it")
        if self.options.host_details:
            meta["host"] = {"hostname": socket.gethostname(), "platform": platform.platform(),
                            "machine": platform.machine(), "pid": os.getpid(),
                            "tid": threading.get_native_id(), "executable": sys.executable,
                            "cpu": _cpu_name()}
        return meta

    def __enter__(self) -> "Profiler":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        try:
            self.stop()
        except Exception as ours:
            if exc_type is None:
                raise
            # The block's own exception is the one the caller must see.
            warnings.warn(f"sigprof could not finish the profile: {ours!r}", RuntimeWarning,
                          stacklevel=2)

    # -- the result, available once stopped ------------------------------------------

    def _result(self) -> Recording:
        if self.recording is None:
            raise RuntimeError("the profile is still running; leave the `with` block "
                               "(or call stop()) first")
        return self.recording

    @property
    def samples(self) -> int:
        """Samples recorded (while running: taken so far)."""
        if self.recording is None and self._started:
            return sum(c.samples_taken for c in list(self._captures))
        return self._result().samples

    @property
    def dropped(self) -> int:
        """Samples lost because a ring was full (while running: refused so far)."""
        if self.recording is None and self._started:
            return sum(max(0, c.samples_taken - self.options.capacity) + c.refused
                       for c in list(self._captures))
        return self._result().dropped

    def save(self, path: "str | os.PathLike[str]", format: Optional[str] = None) -> str:
        return self._result().save(path, format)

    def to_firefox(self) -> Dict[str, Any]:
        return self._result().to_firefox()

    def to_collapsed(self) -> str:
        return self._result().to_collapsed()

    def report(self, top: int = 10) -> str:
        return self._result().report(top)

    @property
    def meta(self) -> RecordingMeta:
        return self._result().meta


def profile(store: Optional[wasmtime.Store] = None,
            modules: Optional[Sequence[ModuleSpec]] = None, *,
            names: Optional[NamesSpec] = None, memories: Sequence[wasmtime.Memory] = (),
            **options: Any) -> Profiler:
    """Profile the guest code run on ``store`` inside a ``with`` block, on whichever
    threads run it; with no store, every store (of engines with epoch
    interruption) that Python enters during the block, in every thread.

    Profiles may overlap (on different stores; one store-less at a time); they
    share the process's one interval timer, so they must use the same clock.

    ``modules``: Module objects or (name, Module) pairs.  Given, only those
    modules are named in the profile (others become one opaque frame); left
    out, every module seen in samples is discovered and named.
    ``interval``: seconds of the clock between ticks; by default 1 ms, or one
    kernel tick (4 ms at HZ=250) for the CPU clocks, whose interval timers cannot
    tick faster -- a finer CPU interval uses perf events (``source``), or is
    raised, with a warning, where they are refused.  ``clock``: "cpu" (user CPU time,
    ITIMER_VIRTUAL), "prof" (user+system, ITIMER_PROF) or "wall"
    (ITIMER_REAL).  ``capacity``: samples the ring holds; ``when_full``:
    "newest" keeps the newest, "stop" stops recording.  ``max_depth``:
    guest frames walked per sample (deeper stacks are marked truncated).
    ``names``: function names from a wasm (or WAT) binary -- the module's own
    file, or a build of it that keeps its name section when the profiled one
    is stripped: a path or bytes (for the first of ``modules``), or a mapping
    from Module objects in ``modules`` to paths or bytes.  Without it, names
    come from the module's name section as wasmtime kept it.
    ``memories``: the guest's linear memories (Memory objects, from an
    instance's exports) whose total size each sample records, next to the
    process's resident memory: the memory tracks of the Firefox output.
    ``use_tick_pc``: attribute each guest sample to the function its tick
    landed in (the interrupted PC, recorded by the native tick handler) rather
    than to the epoch check that took it; off shows raw epoch attribution.
    ``python_frames``: each stack starts with the Python frames that called the
    guest (and, between re-entries, those a host function ran before calling
    the guest again); off, stacks hold guest and host-function frames only.
    ``capacity`` is per store.
    ``source``: what makes CPU-time ticks.  "auto" (the default) uses the
    interval timer at the kernel tick and above, and per-thread perf events
    (``perf_event_open`` task clocks on high-resolution timers) for a finer
    interval, falling back to the timer, with a warning, where they are refused;
    "perf" or "itimer" insists on one.
    ``ticks``: a custom tick source (tests).
    """
    return Profiler(store, modules, ProfileOptions.given(options), names=names,
                    memories=memories)


def _native_losses() -> Tuple[int, int]:
    """The C tick handler's process-wide loss counts so far: ticks on threads its
    thread table had no room for, and ticks in host calls its pipe to the sampler
    thread had no room for.  A profile reports how much they grew while it ran."""
    if not _native.available():
        return 0, 0
    ext = _native.extension()
    return int(ext.tick_counts()[1]), int(ext.host_ticks_unsent())


def _note_native_threads(meta: RecordingMeta, at_start: Dict[int, int],
                         sampled_ns: int) -> None:
    """A store-less profile: the CPU spent on threads that run no Python since
    ``at_start`` was read, which no sample can carry; a warning when it is a large
    part of what was measured."""
    spent_ns, threads = _native_threads.spent_since(at_start)
    meta["native_threads_cpu_ns"] = spent_ns
    meta["native_threads"] = threads
    share = spent_ns / (spent_ns + sampled_ns) if spent_ns else 0.0
    if spent_ns > NATIVE_THREADS_WARN_NS and share > 0.1:
        meta["warnings"].append(
            f"{spent_ns / 1e6:.0f} ms of CPU ({100 * share:.0f} % of what was measured) ran "
            f"on {threads} threads that run no Python (wasmtime's compiler threads, or a "
            f"native library's), which sigprof cannot sample")


def counter_warnings(meta: RecordingMeta) -> List[str]:
    """A sentence for each loss counter ``meta`` holds that is not zero: what was lost
    and what it means for the profile."""
    said: List[str] = []
    dropped = int(meta.get("dropped", 0))
    if dropped:
        kept = ("the newest samples only: the start of the run is missing"
                if meta.get("when_full", "newest") == "newest"
                else "the run until the ring filled: the rest of it is missing")
        said.append(f"{dropped} samples were dropped because the ring was full (capacity "
                    f"{meta.get('capacity')}): the profile holds {kept}; raise the capacity "
                    f"(--capacity) to keep every sample")
    lost_ticks = int(meta.get("lost_ticks", 0))
    if lost_ticks:
        said.append(f"{lost_ticks} ticks landed on threads beyond sigprof's thread table "
                    f"(4096 threads) and were not recorded: those threads' time is missing "
                    f"from the profile")
    unforwarded = int(meta.get("host_tick_errors", 0)) + int(meta.get("host_ticks_unsent", 0))
    if unforwarded:
        said.append(f"{unforwarded} ticks in Python host functions could not be handed to "
                    f"the host-tick sampler (its pipe was full or it failed): their time is "
                    f"charged to the host function without the Python code it was running")
    activations = int(meta.get("activations_lost", 0))
    if activations:
        said.append(f"{activations} guest calls or host calls were nested more than 256 deep: "
                    f"samples taken inside them miss the frames of the levels past 256 (and "
                    f"their Python frames)")
    errors = int(meta.get("callback_errors", 0))
    if errors:
        said.append(f"{errors} errors in sigprof's own sampling code were caught: the samples "
                    f"they were taking are missing or lack their Python frames (please report "
                    f"this)")
    return said


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor()


FAR_DEADLINE = wt.FAR_DEADLINE

# From the first use of the capture layer, the application's own epoch deadlines
# are followed (a deadline set before that is unknown to sigprof: see _app_epochs).
_app_epochs.install()
