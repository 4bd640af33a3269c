"""The finished result of a profile: immutable, host-free, serialisable.

A ``Recording`` holds everything the exporters need and nothing they do not:

* ``modules``: one function table per guest module (``symbols.ModuleSymbols``);
* ``host_functions``: the Python functions the guest imported that were sampled;
* ``frames``: interned ``(kind, a, b)`` triples -- a guest frame is
  ``(FRAME_GUEST, module index, offset)`` where offset is the frame's return
  address relative to the module's ``.text`` (lookups subtract one, so a call
  at the very end of a function is not charged to the next one);
* ``stacks``: a prefix tree, ``stack_parent[i]`` / ``stack_frame[i]``, root
  frames have parent -1;
* ``samples``: parallel columns -- time since start, thread CPU delta, wall
  delta, stack, ticks, flags -- all integers, nanoseconds where timed.

Units stay in the names (``_ns``); conversion to ms/µs happens in exporters.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .symbols import Function, ModuleSymbols

FRAME_GUEST = 0      # (FRAME_GUEST, module index, .text offset of the return address)
FRAME_HOST = 1       # (FRAME_HOST, host function index, 0)
FRAME_PYTHON = 2     # Python code outside the guest (the caller's side)
FRAME_OPAQUE = 3     # code of a module the user did not allow into the profile
FRAME_TRUNCATED = 4  # the stack was deeper than max_depth; its root is missing
FRAME_UNKNOWN = 5    # guest code that could not be resolved to a function

SAMPLE_TRUNCATED = 1  # flag bit: the stack's root was cut off
SAMPLE_AT_TICK = 2    # flag bit: re-attributed from the epoch check to where the tick landed

PSEUDO_FRAME_NAMES = {
    FRAME_PYTHON: "(python, outside the guest)",
    FRAME_OPAQUE: "(other wasm module)",
    FRAME_TRUNCATED: "(truncated stack)",
    FRAME_UNKNOWN: "(unresolved wasm code)",
}

CLOCK_WEIGHT = {"cpu": "cpu", "prof": "cpu", "wall": "wall", "manual": "cpu"}


@dataclass(frozen=True)
class HostFunction:
    """A Python function the guest imported, as it appears in the profile."""

    name: str                      # qualified name, e.g. "Plugin.log"
    module: str = ""               # the Python module defining it
    file: str = ""                 # file name (base name unless host details are on)
    line: int = 0
    import_module: str = ""        # the wasm import's module.field, where known
    import_name: str = ""

    @property
    def label(self) -> str:
        if self.import_module or self.import_name:
            return f"{self.name} [{self.import_module}.{self.import_name}]"
        return self.name


@dataclass(frozen=True)
class FunctionRef:
    """What a frame means at function level: the unit of every report."""

    kind: str            # "wasm", "host", "python", "opaque", "truncated", "unknown"
    name: str
    module: str          # module (wasm) or Python module (host); "" for pseudo frames
    key: Tuple           # identity: two wasm modules' `work` stay distinct


@dataclass(frozen=True)
class SampleTable:
    time_ns: array       # 'q': when the sample was taken, since the profile started
    cpu_ns: array        # 'q': thread CPU time since the previous sample
    wall_ns: array       # 'q': wall time since the previous sample
    stack: array         # 'i': index into the stack table, -1 for none
    ticks: array         # 'i': timer ticks the sample accounts for
    flags: array         # 'B': SAMPLE_TRUNCATED, ...

    def __len__(self) -> int:
        return len(self.time_ns)


def empty_samples() -> SampleTable:
    return SampleTable(array("q"), array("q"), array("q"), array("i"), array("i"), array("B"))


@dataclass(frozen=True)
class Recording:
    meta: Mapping
    modules: Tuple[ModuleSymbols, ...]
    host_functions: Tuple[HostFunction, ...]
    frames: Tuple[Tuple[int, int, int], ...]
    stack_parent: array
    stack_frame: array
    sample_table: SampleTable
    _function_cache: Dict[int, FunctionRef] = field(default_factory=dict, compare=False,
                                                    repr=False)

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

    def weights_ns(self) -> array:
        """Each sample's weight: CPU time for cpu/prof clocks, wall time for wall."""
        if CLOCK_WEIGHT.get(self.clock, "cpu") == "wall":
            return self.sample_table.wall_ns
        return self.sample_table.cpu_ns

    @property
    def total_cpu_ns(self) -> int:
        return sum(self.sample_table.cpu_ns)

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
        kind, module, offset = self.frames[frame_index]
        if kind != FRAME_GUEST:
            return None
        return self.modules[module].lookup(offset - 1)

    def function(self, frame_index: int) -> FunctionRef:
        ref = self._function_cache.get(frame_index)
        if ref is None:
            ref = self._function_cache[frame_index] = self._resolve(frame_index)
        return ref

    def _resolve(self, frame_index: int) -> FunctionRef:
        kind, a, b = self.frames[frame_index]
        if kind == FRAME_GUEST:
            module = self.modules[a]
            func = module.lookup(b - 1)
            if func is None:
                return FunctionRef("unknown", PSEUDO_FRAME_NAMES[FRAME_UNKNOWN], module.name,
                                   ("unknown", a))
            return FunctionRef("wasm", func.name, module.name, ("wasm", a, func.start))
        if kind == FRAME_HOST:
            host = self.host_functions[a]
            return FunctionRef("host", host.label, host.module, ("host", a))
        name = PSEUDO_FRAME_NAMES.get(kind, "(unknown)")
        return FunctionRef({FRAME_PYTHON: "python", FRAME_OPAQUE: "opaque",
                            FRAME_TRUNCATED: "truncated"}.get(kind, "unknown"), name, "", (name,))

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

    def to_firefox(self) -> dict:
        """The Firefox Profiler processed profile, as a dict."""
        from .export import firefox
        return firefox.convert(self)

    def to_collapsed(self) -> str:
        from .export import collapsed
        return collapsed.convert(self)

    def report(self, top: int = 10) -> str:
        from .export import text
        return text.convert(self, top=top)

    def save(self, path: "str | os.PathLike", format: Optional[str] = None) -> str:
        """Write the recording; the format follows the suffix unless given.

        ``.sigprof`` raw recording; ``.json`` / ``.json.gz`` Firefox profile;
        ``.collapsed`` collapsed stacks; ``.txt`` text report.  The file is
        written atomically: a failure leaves any previous file untouched.
        Returns the format written.
        """
        from .export import write
        return write(self, os.fspath(path), format)


def intern_stack(frames_root_first: Sequence[int], index: Dict[Tuple[int, int], int],
                 parent: array, frame: array) -> int:
    """Add a root-first frame list to the prefix tree; return its stack index."""
    stack = -1
    for f in frames_root_first:
        key = (stack, f)
        found = index.get(key)
        if found is None:
            found = index[key] = len(frame)
            parent.append(stack)
            frame.append(f)
        stack = found
    return stack
