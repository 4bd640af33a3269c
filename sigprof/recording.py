"""The finished result of a profile: immutable, host-free, serialisable.

A ``Recording`` holds everything the exporters need and nothing they do not:

* ``modules``: one function table per guest module (``frames.ModuleSymbols``);
* ``host_functions``: the Python functions in the profile: those the guest
  imported that were sampled, and those on the Python side of mixed stacks;
* ``frames``: interned ``frames.Frame`` values -- a guest frame is
  ``Frame(FRAME_GUEST, module index, offset)`` where offset is the frame's
  return address relative to the module's ``.text``; where the module's DWARF
  was known, each call inlined at that address follows it as its own frame
  (``Frame(FRAME_GUEST, module, offset, k)``, k = 1 outermost), and
  ``ModuleSymbols.lines`` holds the source frames (``source_line``);
* ``stacks``: a prefix tree, ``stack_parent[i]`` / ``stack_frame[i]``, root
  frames have parent -1;
* ``samples``: parallel columns -- time since start, thread CPU delta, wall
  delta, stack, ticks, flags, memory, thread -- all integers, nanoseconds where
  timed; ``meta["threads"]`` names the threads;
* ``markers``: host and guest calls long enough to show on a timeline.

Units stay in the names (``_ns``); conversion to ms/µs happens in exporters.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass, field
from typing import (Any, Dict, Iterator, List, NamedTuple, Optional, Tuple, TypedDict, cast,
                    get_origin, get_type_hints)

from . import export
from .demangle import display_name
from .frames import (FRAME_GUEST, FRAME_HOST, FRAME_PYCODE, FRAME_UNKNOWN, PSEUDO_FRAME_NAMES,
                     SAMPLE_TRUNCATED, Frame, Function, FunctionRef, HostFunction,
                     ModuleSymbols, pseudo_kind)
from .dwarf import SourceFrame

CLOCK_WEIGHT = {"cpu": "cpu", "prof": "cpu", "wall": "wall", "manual": "cpu"}


@dataclass(frozen=True)
class SampleTable:
    time_ns: array[int]       # 'q': when the sample was taken, since the profile started
    cpu_ns: array[int]        # 'q': thread CPU time since the previous sample
    wall_ns: array[int]       # 'q': wall time since the previous sample
    stack: array[int]         # 'i': index into the stack table, -1 for none
    ticks: array[int]         # 'i': timer ticks the sample accounts for
    flags: array[int]         # 'B': SAMPLE_TRUNCATED, ...
    # Memory at each sample, bytes ('q'); empty where not recorded (older recordings).
    rss_bytes: array[int] = field(default_factory=lambda: array("q"))     # -1: unknown
    memory_bytes: array[int] = field(default_factory=lambda: array("q"))  # the guest's
    # The thread each sample was taken on ('i'), an index into meta["threads"]; empty
    # in recordings from before threads were recorded (all one thread).
    thread: array[int] = field(default_factory=lambda: array("i"))

    def __len__(self) -> int:
        return len(self.time_ns)

    @staticmethod
    def empty() -> "SampleTable":
        return SampleTable(array("q"), array("q"), array("q"), array("i"), array("i"),
                           array("B"), array("q"), array("q"), array("i"))


HOST_CALL, GUEST_CALL = "host call", "guest call"      # a marker's kinds
MARKER_KINDS = (HOST_CALL, GUEST_CALL)


class Marker(NamedTuple):
    """A call long enough to show on a timeline (``sigprof/_markers.py``)."""

    kind: str           # "host call" or "guest call"
    name: str           # the host function's label, or the export called
    thread: int         # index into meta["threads"]
    start_ns: int       # since the profile started
    end_ns: int


class RecordingMeta(TypedDict, total=False):
    """What a recording says about how it was taken (``Recording.meta``): one key
    per fact, with its unit.  The profiler writes it; every file format keeps it
    as JSON; a reader checks each key it holds against these types
    (``checked_meta``) and keeps keys it does not know, which a newer sigprof
    wrote.  Any key may be missing from an older recording."""

    format: str                     # "sigprof"
    name: str                       # the profile's name ("" when not given)
    clock: str                      # "cpu", "prof", "wall" or "manual" (a test's ticks)
    interval_s: float               # the interval the ticks came at
    requested_interval_s: float     # the one asked for (raised to what the source sustains)
    capture: str                    # "native" or "python"
    capacity: int                   # samples per store's ring
    max_depth: int                  # guest frames walked per sample
    when_full: str                  # "newest" or "stop"
    start_unix_ns: int
    duration_ns: int                # wall time from start to stop
    thread_cpu_ns: int              # CPU of the profiled threads over the profile
    overhead_cpu_ns: int            # the capture's own CPU, left out of the samples
    overhead_wall_ns: int
    unsampled_cpu_ns: int           # CPU after each thread's last sample, not charged
    unsampled_wall_ns: int
    ticks: int                      # ticks that came
    relay: str                      # how ticks reached the capture: "native", "wakeup", ...
    tick_source: str                # "itimer", "perf" or "manual"
    use_tick_pc: bool
    python_frames: bool
    stores: int                     # stores sampled
    samples_taken: int              # including those a full ring dropped
    dropped: int                    # samples lost: a full ring, Python time past its cap
    shared_stacks: int              # samples stored as a pointer to an equal stack
    callback_errors: int
    activations_lost: int           # guest activations nested past MAX_ACTIVATIONS
    host_tick_errors: int
    host_ticks_unsent: int          # host ticks the pipe to the sampler had no room for
    lost_ticks: int                 # ticks on threads the handler's table had no room for
    unsampled_guest_calls: int      # on engines without epoch interruption
    uncovered_guest_calls: int      # into stores no profile covered
    python_time_samples: int        # a store-less profile's samples of Python time
    native_threads: int             # threads without Python that used CPU
    native_threads_cpu_ns: int
    marker_min_ns: int              # the shortest call kept as a marker
    markers_dropped: int            # markers past MARKER_CAPACITY
    versions: Dict[str, str]        # sigprof, wasmtime, python
    arch: str                       # what the code offsets are offsets in
    warnings: List[str]
    modules: List[str]              # the modules' names, as in ``Recording.modules``
    threads: List[Dict[str, Any]]   # {name, tid}: what SampleTable.thread indexes
    host: Dict[str, Any]            # hostname, platform, pid ... (host_details only)


def checked_meta(meta: object) -> RecordingMeta:
    """``meta`` (JSON read from a file) as a ``RecordingMeta``: every key it holds
    that ``RecordingMeta`` declares has the declared type (an integer where a
    float is declared too), else ValueError naming the key."""
    if not isinstance(meta, dict):
        raise ValueError("the recording's meta is not an object")
    for key, declared in _META_TYPES.items():
        if key in meta:
            value = meta[key]
            accepted = (int, float) if declared is float else declared
            if not isinstance(value, accepted) or (isinstance(value, bool) and declared is not bool):
                raise ValueError(f"the recording's meta field {key!r} has the wrong type")
    return cast(RecordingMeta, meta)


# key -> the runtime type of its declared type (List[str] -> list, ...)
_META_TYPES: Dict[str, type] = {
    key: get_origin(hint) or hint for key, hint in get_type_hints(RecordingMeta).items()}


@dataclass(frozen=True, repr=False)
class Recording:
    meta: RecordingMeta
    modules: Tuple[ModuleSymbols, ...]
    host_functions: Tuple[HostFunction, ...]
    frames: Tuple[Frame, ...]
    stack_parent: array[int]
    stack_frame: array[int]
    sample_table: SampleTable
    markers: Tuple[Marker, ...] = ()        # by start time
    _function_cache: Dict[int, FunctionRef] = field(default_factory=dict, compare=False,
                                                    repr=False)
    _function_source_cache: Optional[Dict[Tuple[int, int], Tuple[str, int]]] = field(
        default=None, compare=False, repr=False)

    def __repr__(self) -> str:
        name = self.meta.get("name") or ", ".join(m.name for m in self.modules) or "guest"
        weight = "wall" if self.clock == "wall" else "CPU"
        # The host function table also holds the Python code that called the guest.
        callers = {f.ref for f in self.frames if f.type == FRAME_PYCODE}
        return (f"<Recording {name}: {self.samples} samples, "
                f"{sum(self.weights_ns()) / 1e6:.1f} ms {weight}, clock {self.clock}, "
                f"{len(self.modules)} module(s), "
                f"{len(self.host_functions) - len(callers)} host function(s), "
                f"{len(callers)} Python caller function(s)>")

    # -- the names the public API promises -------------------------------------

    @property
    def samples(self) -> int:
        """Number of samples recorded."""
        return len(self.sample_table)

    @property
    def dropped(self) -> int:
        """Samples lost because the ring was full (overwritten or refused)."""
        return int(self.meta.get("dropped", 0))

    @property
    def clock(self) -> str:
        return str(self.meta.get("clock", "cpu"))

    @property
    def interval(self) -> float:
        return float(self.meta.get("interval_s", 0.0))

    @property
    def truncated(self) -> int:
        return sum(1 for f in self.sample_table.flags if f & SAMPLE_TRUNCATED)

    def weights_ns(self) -> array[int]:
        """Each sample's weight: CPU time for cpu/prof clocks, wall time for wall."""
        if CLOCK_WEIGHT.get(self.clock, "cpu") == "wall":
            return self.sample_table.wall_ns
        return self.sample_table.cpu_ns

    @property
    def total_cpu_ns(self) -> int:
        return sum(self.sample_table.cpu_ns)

    def cpu_ns_by_thread(self) -> Dict[str, int]:
        """Sampled CPU time per thread, by thread name."""
        names = [str(t.get("name", "")) for t in self.meta.get("threads") or []] or [""]
        column = self.sample_table.thread or array("i", [0] * len(self.sample_table))
        out: Dict[str, int] = {}
        for thread, cpu in zip(column, self.sample_table.cpu_ns):
            out[names[thread]] = out.get(names[thread], 0) + cpu
        return out

    # -- stacks and frames -------------------------------------------------------

    def stack_frames(self, stack: int) -> List[int]:
        """Frame indices of ``stack``, root first."""
        out = []
        parent, frame = self.stack_parent, self.stack_frame
        while stack >= 0:
            out.append(frame[stack])
            stack = parent[stack]
        out.reverse()
        return out

    def guest_function(self, frame_index: int) -> Optional[Function]:
        frame = self.frames[frame_index]
        if frame.type != FRAME_GUEST:
            return None
        return self.modules[frame.ref].lookup(frame.offset - 1)

    def source_line(self, frame_index: int) -> Optional[SourceFrame]:
        """Where in its source a guest frame is (file, line, column, function), where
        the module's DWARF was known; an inlined frame's own, its caller's the call."""
        frame = self.frames[frame_index]
        if frame.type != FRAME_GUEST:
            return None
        source = self.modules[frame.ref].source_frames(frame.offset)
        return source[frame.inline] if frame.inline < len(source) else None

    def function(self, frame_index: int) -> FunctionRef:
        ref = self._function_cache.get(frame_index)
        if ref is None:
            ref = self._function_cache[frame_index] = self._resolve(frame_index)
        return ref

    def _resolve(self, frame_index: int) -> FunctionRef:
        frame = self.frames[frame_index]
        if frame.type == FRAME_GUEST:
            module = self.modules[frame.ref]
            func = module.lookup(frame.offset - 1)
            source = self.source_line(frame_index)
            if func is None or (frame.inline and source is None):
                return FunctionRef("unknown", PSEUDO_FRAME_NAMES[FRAME_UNKNOWN], module.name,
                                   ("unknown", frame.ref))
            if frame.inline:
                assert source is not None
                return FunctionRef("wasm", display_name(source.function), module.name,
                                   ("inline", frame.ref, source.function), source.file,
                                   source.function_line)
            file, line = self._function_sources().get((frame.ref, func.start), ("", 0))
            return FunctionRef("wasm", display_name(func.name), module.name,
                               ("wasm", frame.ref, func.start), file, line)
        if frame.type == FRAME_HOST:
            host = self.host_functions[frame.ref]
            return FunctionRef("host", host.label, host.module, ("host", frame.ref))
        if frame.type == FRAME_PYCODE:
            code = self.host_functions[frame.ref]
            return FunctionRef("py", code.name, code.file, ("py", frame.ref))
        name = PSEUDO_FRAME_NAMES.get(frame.type, "(unknown)")
        return FunctionRef(pseudo_kind(frame.type), name, "", (name,))

    def _function_sources(self) -> Dict[Tuple[int, int], Tuple[str, int]]:
        """(module, function start) -> its source file and declaration line: those
        of its first frame that has a line (not every PC of a function has one)."""
        if self._function_source_cache is None:
            found: Dict[Tuple[int, int], Tuple[str, int]] = {}
            for frame in self.frames:
                if frame.type != FRAME_GUEST or frame.inline:
                    continue
                source = self.modules[frame.ref].source_frames(frame.offset)
                func = self.modules[frame.ref].lookup(frame.offset - 1) if source else None
                if func is not None:
                    found.setdefault((frame.ref, func.start),
                                     (source[0].file, source[0].function_line))
            object.__setattr__(self, "_function_source_cache", found)
        assert self._function_source_cache is not None
        return self._function_source_cache

    def iter_stacks(self) -> Iterator[Tuple[List[FunctionRef], int]]:
        """(functions root first, weight ns) per sample."""
        weights = self.weights_ns()
        cache: Dict[int, List[FunctionRef]] = {}
        for stack, weight in zip(self.sample_table.stack, weights):
            funcs = cache.get(stack)
            if funcs is None:
                funcs = cache[stack] = [self.function(f) for f in self.stack_frames(stack)] if stack >= 0 else []
            yield funcs, weight

    # -- outputs ----------------------------------------------------------------

    def to_firefox(self) -> Dict[str, Any]:
        """The Firefox Profiler processed profile, as a dict."""
        return export.firefox.convert(self)

    def to_collapsed(self) -> str:
        return export.collapsed.convert(self)

    def report(self, top: int = 10) -> str:
        return export.text.convert(self, top=top)

    def save(self, path: "str | os.PathLike[str]", format: Optional[str] = None) -> str:
        """Write the recording in one of ``export.FORMATS``, by default the one the
        path's suffix names.  A file is written atomically (a failure leaves any
        previous file untouched), through a symbolic link to its target, and into a
        device or FIFO (``/dev/null``) in place.  Returns the format written."""
        try:
            return export.write(self, os.fspath(path), format)
        except export.UnknownFormat as exc:
            if format:
                raise
            raise export.UnknownFormat(f"{exc}: save(path, format=...)") from None
