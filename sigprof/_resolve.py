"""Raw ring contents + live module images -> an immutable ``Recording``.

This runs once, after sampling stopped, in the process that sampled (the PCs
are meaningful only here).  It is the one place where host addresses exist
next to module names; what it returns has only module-relative offsets.

Per sample the capture wrote return addresses innermost first: the native
capture exactly the guest frames of each activation (its walk stops at the
entry trampoline), the pure-Python one everything ``backtrace()`` saw (the
sampler's own frames, the interpreter, wasmtime, the guest, the trampolines,
the Python caller).  Each distinct raw stack is resolved once; only PCs inside
a module image's ``.text`` are kept:

* guest functions become frames (or one opaque frame per run of frames from
  modules the user did not allow);
* trampolines and builtins are machinery and are dropped;
* a walk that stopped at ``max_depth`` (or at a frame chain it did not trust)
  lost its root, unless an entry trampoline outermost proves the stack
  complete: such a stack gets a ``(truncated stack)`` root frame and the
  truncated flag.

The native capture also writes marks into a stack (``_ring.MARK_*``): where
Python entered the guest, which becomes the Python frames that made that call
(``_pyframes``; none when ``python_frames`` is off), and the Python host
function an outer guest activation called.  So a re-entered guest reads, root
first: Python, guest, host function, Python, guest.

Then each sample gets its stack node: the raw stack's, moved to where the
tick landed (``tick_attribution``, within the innermost guest activation),
with a host or Python frame on top -- and under a host function, the Python
frames it was running, where they were read -- and its thread.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import enum
import gc
import math
import os
import threading
from collections import OrderedDict
from array import array
from types import CodeType
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple,
                    Optional, Sequence, Tuple, Union)

import wasmtime

from . import _imports, _module_files, _wasmtime as wt
from ._pyframes import EntryFrames, PythonFrames, PythonSegment
from ._ring import MARK_ENTRY, MARK_HOST, MARK_PAYLOAD, ORIGIN_GUEST, ORIGIN_OUTSIDE, RawSample
from .frames import (FRAME_GUEST, FRAME_HOST, FRAME_OPAQUE, FRAME_PYCODE, FRAME_PYTHON,
                     FRAME_TRUNCATED, FRAME_UNKNOWN, ROLE_ENTRY, ROLE_WASM, SAMPLE_AT_TICK,
                     SAMPLE_TRUNCATED, Frame, Function, HostFunction, ModuleSymbols,
                     unnamed_function)
from ._markers import MarkerRow
from .recording import Marker, Recording, RecordingMeta, SampleTable
from ._wasmtime.image import ImageError, LiveImage, SymbolTable, discover, image_from_memory, read_image
from ._wasmtime.addrmap import NO_POSITION, AddressMap, read_address_map
from .dwarf import (ImageLines, ModuleDwarf, SourceFrame, dwarf_digest, read_sections,
                    with_external_dwarf)
from .wasmfile import FuncSignature as Signature, WasmInfo, read_wasm, wasm_bytes


class ModuleRef(NamedTuple):
    """A module given to ``profile()``: where its image is, read only after the run."""

    name: Optional[str]
    image_start: int
    image_end: int
    names: Optional[WasmInfo] = None      # function names from a wasm binary, if given
    wasm: Optional[bytes] = None          # that binary, whose DWARF (if any) gives lines


def module_refs(modules: Sequence[Tuple[Optional[str], wasmtime.Module]],
                names: Optional[Dict[int, WasmInfo]] = None,
                binaries: Optional[Dict[int, bytes]] = None) -> List[ModuleRef]:
    """Image ranges of the listed modules (cheap: no symbol work before the guest runs);
    ``names`` maps a module's position in ``modules`` to names from a binary,
    ``binaries`` to the binary itself."""
    return [ModuleRef(name, *wt.module_image_range(module), (names or {}).get(i),
                      (binaries or {}).get(i))
            for i, (name, module) in enumerate(modules)]


# The DWARF of the binaries resolved last, by what identifies their DWARF
# (``dwarf.dwarf_digest``): a module profiled again with its binary (another
# ``profile(store, names=...)`` of it in the same process) finds its line tables
# read and its sampled addresses answered.  Two, since each holds a module's whole
# line table (tens of MB for a big one).
DWARF_CACHE_MODULES = 2
_dwarf_cache: "OrderedDict[bytes, ModuleDwarf]" = OrderedDict()
_dwarf_cache_lock = threading.Lock()     # profiles stop on any thread


def module_dwarf(wasm: bytes) -> Optional[ModuleDwarf]:
    """The DWARF of binary ``wasm``, None where it has none; ``DwarfError`` if damaged."""
    sections = read_sections(wasm)
    key = dwarf_digest(sections)
    if key is None:
        return None
    with _dwarf_cache_lock:
        dwarf = _dwarf_cache.get(key)
        if dwarf is None:
            dwarf = _dwarf_cache[key] = ModuleDwarf(wasm, sections)
            while len(_dwarf_cache) > DWARF_CACHE_MODULES:
                _dwarf_cache.popitem(last=False)
        _dwarf_cache.move_to_end(key)
        return dwarf


class OtherCode(ValueError):
    """The binary given for a module's lines is not the build it was compiled from."""


def image_lines(ref: ModuleRef, symbols: SymbolTable) -> Optional[ImageLines]:
    """Source lines for a module's image, where its binary is known and has DWARF
    (and its image an address map); ``OtherCode`` if that binary's code is not the
    module's (``code_mismatch``), other errors ``ValueError``."""
    if ref.wasm is None:
        return None
    dwarf = module_dwarf(ref.wasm)
    if dwarf is None:
        return None
    address_map = read_address_map(wt.read_memory, ref.image_start, ref.image_end)
    if address_map is None:
        return None
    why = code_mismatch(address_map, symbols.function_ranges(), ref.names)
    if why is not None:
        raise OtherCode(why)
    return ImageLines(address_map, dwarf)


# At most this many functions' compiled code code_mismatch checks against a
# binary's bodies, spread evenly over the module: a build at another
# optimisation level moves nearly every body, so a thousand find it; all of a
# 50k-function module's take a second.
CODE_CHECKS = 1000


def code_mismatch(address_map: AddressMap, functions: Sequence[Tuple[int, int, int]],
                  binary: Optional[WasmInfo]) -> Optional[str]:
    """Why ``binary`` is not the code its module was compiled from, so its DWARF
    would give wrong lines (None: it is, as far as can be told).  wasmtime's
    address map says where in the wasm file each instruction of a compiled
    function (``functions``: index, .text offset, size) came from; in the binary
    it was compiled from, that is inside the function's own body.  A stripped
    build and its ``-g`` twin have the same code section; a build at another
    ``-O`` has other bodies, which ``names_mismatch`` (program structure) does not see.
    (wasmtime's own wasm-level inlining, off by default, would put a callee's
    positions in its caller's code: such a build is refused, its lines not used.)"""
    if binary is None or not binary.bodies:
        return None
    imported = sum(1 for i in binary.imports if i.kind == "func")
    offsets, positions = address_map.text_offsets, address_map.file_positions
    step = max(1, math.ceil(len(functions) / CODE_CHECKS))       # at most CODE_CHECKS
    for index, text_start, size in functions[::step]:
        body = index - imported
        if not 0 <= body < len(binary.bodies):
            return f"it has no body for function {index}"
        low, high = binary.bodies[body]
        mapped = [p for p in positions[bisect.bisect_left(offsets, text_start):
                                       bisect.bisect_left(offsets, text_start + size)]
                  if p != NO_POSITION]
        if mapped and not low <= min(mapped) <= max(mapped) < high:
            return (f"function {index}'s code was compiled from bytes {min(mapped)}-"
                    f"{max(mapped)} of its binary, where this one has that function at "
                    f"{low}-{high - 1}")
    return None


def shared_source_frames(frames: Sequence[SourceFrame], host_details: bool
                         ) -> Tuple[SourceFrame, ...]:
    """Source frames as a recording keeps them: absolute paths only with host
    details (as Python files are), else their base names."""
    if host_details:
        return tuple(frames)
    return tuple(dataclasses.replace(f, file=os.path.basename(f.file)) if os.path.isabs(f.file) else f
                 for f in frames)


def names_mismatch(module: wasmtime.Module, names: WasmInfo) -> Optional[str]:
    """Why a binary's names do not fit ``module`` (None: they fit).

    Compared: what every build of the same program keeps, debug info or not --
    its imported functions (in order: module, name and arity), how many
    functions it defines, and its exported functions (name and arity).  A
    ``-g`` build or a stripped one differs only in custom sections (DWARF, the
    name section), which none of this reads; another program's binary differs
    in at least one of them, and its names would label the wrong code.  Arity,
    not types: wasmtime-py 50 aborts the process when asked for a v128 value
    type, so the module's side is read only as counts."""
    mine = [(i.module, i.name or "", _arity(i.type)) for i in module.imports
            if isinstance(i.type, wasmtime.FuncType)]
    types = names.function_types or None          # empty: the reader could not tell
    theirs = [(i.module, i.name, _arity(types[k]) if types is not None else None)
              for k, i in enumerate(i for i in names.imports if i.kind == "func")]
    if len(mine) != len(theirs):
        return f"it imports {len(theirs)} functions, the module {len(mine)}"
    for (m, n, sig), (their_m, their_n, their_sig) in zip(mine, theirs):
        if (m, n) != (their_m, their_n):
            return f"it imports {their_m}.{their_n} where the module imports {m}.{n}"
        if their_sig is not None and sig != their_sig:
            return f"its import {m}.{n} {_shown(their_sig)}, the module's {_shown(sig)}"
    start, end = wt.module_image_range(module)
    defined = len(read_image(wt.read_memory, start, end).symbols.function_indices())
    if types is not None and len(types) - len(theirs) != defined:
        return f"it defines {len(types) - len(theirs)} functions, the module {defined}"
    for export in module.exports:
        if not isinstance(export.type, wasmtime.FuncType):
            continue
        kind, index = names.exports.get(export.name, ("", -1))
        if kind != "func":
            return f"it does not export the function {export.name!r}"
        arity = _arity(export.type)
        if types is not None and 0 <= index < len(types) and _arity(types[index]) != arity:
            return f"its export {export.name!r} {_shown(_arity(types[index]))}, " \
                   f"the module's {_shown(arity)}"
    return None


Arity = Tuple[int, int]        # parameters, results


def _arity(function_type: "wasmtime.FuncType | Signature") -> Arity:
    """Counts only: reading a wasmtime value type's kind aborts on v128."""
    return len(function_type.params), len(function_type.results)


def _shown(arity: Arity) -> str:
    return f"takes {arity[0]} parameter(s) and returns {arity[1]} value(s)"


def host_function_info(func: Callable[..., Any], host_details: bool) -> HostFunction:
    target = getattr(func, "__func__", func)
    code = getattr(target, "__code__", None)
    name = str(getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
               or type(func).__qualname__)
    name = name.rsplit("<locals>.", 1)[-1]     # a nested function: its own name is enough
    module = getattr(func, "__module__", None) or ""
    file = line = None
    if code is not None:
        file = code.co_filename if host_details else os.path.basename(code.co_filename)
        line = code.co_firstlineno
    imported = _imports.import_name(func)
    return HostFunction(name=name, module=str(module), file=file or "", line=line or 0,
                        import_module=imported[0] if imported else "",
                        import_name=imported[1] if imported else "")


class _Resolver:
    def __init__(self, images: Sequence[LiveImage]):
        self.images = sorted(images, key=lambda img: img.text_start)
        self.starts = [img.text_start for img in self.images]

    def find(self, pc: int) -> Optional[LiveImage]:
        i = bisect.bisect_right(self.starts, pc) - 1
        if i >= 0:
            img = self.images[i]
            if pc < img.text_end:
                return img
        return None


class GuestFrame(NamedTuple):
    """A resolved guest frame (host addresses: never leaves this module)."""

    image: LiveImage
    offset: int            # return address, relative to the image's .text
    function: Function


OPAQUE = None              # a run of frames from a module the profile does not name
GuestEntry = Optional[GuestFrame]
StackItem = Union[GuestEntry, int]     # ... or a mark (an int: MARK_* | payload)


def tick_function(resolver: "_Resolver", tick_pc: int) -> Optional[GuestFrame]:
    """The allowed guest function the tick interrupted, as a frame (PC + 1), or None."""
    img = resolver.find(tick_pc)
    if img is None or not img.allowed:
        return None
    tick_offset = tick_pc - img.text_start
    f = img.symbols.lookup(tick_offset)
    if f is None or f.role != ROLE_WASM:
        return None
    return GuestFrame(img, tick_offset + 1, f)


def tick_attribution(guest: List[GuestEntry], tick_frame: GuestFrame) -> Optional[int]:
    """How many outermost frames of ``guest`` the tick frame sits on.

    Epoch sampling takes the stack at the first check after a tick: the entry
    of the next function called, or the next loop header.  The tick handler
    recorded the interrupted PC, so the function the tick really landed in
    (F, ``tick_frame``) is known; with the check's place (the leaf's entry
    check, or a loop header) the stack at the tick follows:

    * F is the leaf, at a loop header: same stack, exact PC;
    * F is an ancestor of the leaf, which is at its entry check: F called
      down to the leaf after the tick -> cut the stack back to F;
    * F is not on the stack, the leaf at its entry check: F returned before
      the leaf was called -> F replaces the leaf;
    * F is not on the stack, the leaf at a loop header: F was called from the
      leaf and returned -> F goes under the leaf.

    None (keep the check's stack) when the leaf's checks are unknown or the
    case is inconsistent.  The answer depends on F's function, not on where in
    it the tick landed, so callers may cache it per function.
    """
    img, f = tick_frame.image, tick_frame.function
    leaf = guest[0]
    if leaf is OPAQUE or not leaf.function.checks:
        return None
    at_entry = leaf.offset - leaf.function.start == leaf.function.checks[0]
    depth = len(guest)

    def same(entry: GuestEntry) -> bool:
        return entry is not OPAQUE and entry.image is img and entry.function.start == f.start

    deeper = next((k for k in range(1, depth) if same(guest[k])), None)
    if same(leaf) and not at_entry:
        return depth - 1
    if not at_entry:
        return None if deeper is not None else depth
    if deeper is not None:
        return depth - deeper - 1
    return depth - 1


class _Stacks:
    """The recording's frame table and stack prefix tree, interned as they are built."""

    def __init__(self) -> None:
        self.frames: List[Frame] = []
        self._frame_index: Dict[Frame, int] = {}
        self.parent = array("i")
        self.frame = array("i")
        self._node_index: Dict[Tuple[int, int], int] = {}

    def frame_id(self, key: Frame) -> int:
        found = self._frame_index.get(key)
        if found is None:
            found = self._frame_index[key] = len(self.frames)
            self.frames.append(key)
        return found

    def child(self, parent: int, frame_key: Frame) -> int:
        return self.child_of_id(parent, self.frame_id(frame_key))

    def child_of_id(self, parent: int, frame: int) -> int:
        key = (parent, frame)
        found = self._node_index.get(key)
        if found is None:
            found = self._node_index[key] = len(self.frame)
            self.parent.append(parent)
            self.frame.append(frame)
        return found


def _referenced(image: LiveImage) -> ModuleSymbols:
    table = image.symbols
    return table.referenced() if isinstance(table, SymbolTable) else table


def _with_lines(module: ModuleSymbols, lines: Dict[int, Tuple[SourceFrame, ...]]
                ) -> ModuleSymbols:
    """The module with its sampled addresses' source frames; a function the module
    leaves unnamed (no name section: ``wasm-function[N]``) takes the name its DWARF
    gives it (the outermost source frame at any of its addresses)."""
    if not lines:
        return module
    kept = tuple(sorted((o, f) for o, f in lines.items() if f))
    dwarf_names: Dict[int, str] = {}           # function start -> its DWARF name
    for offset, frames in kept:
        function = module.lookup(offset - 1)
        if (function is not None and function.role == ROLE_WASM and frames[0].function
                and function.name == unnamed_function(function.index)):
            dwarf_names.setdefault(function.start, frames[0].function)
    functions = tuple(dataclasses.replace(f, name=dwarf_names[f.start])
                      if f.start in dwarf_names else f for f in module.functions)
    return dataclasses.replace(module, functions=functions, lines=kept)


class _RawStack(NamedTuple):
    """One distinct raw stack, resolved once."""

    guest: List[GuestEntry]        # the innermost activation's guest frames, leaf first
    outer: List[StackItem]         # the rest, from its first mark on, innermost first
    truncated: bool                # the walk stopped before the guest's entry


def python_function_info(code: CodeType, host_details: bool) -> HostFunction:
    return HostFunction(name=code.co_qualname,
                        file=code.co_filename if host_details
                        else os.path.basename(code.co_filename),
                        line=code.co_firstlineno)


def resolve_recording(raw: Iterable[RawSample], *, modules: Sequence[ModuleRef],
                      discover_allowed: bool, host_callables: Sequence[Callable[..., object]],
                      meta: RecordingMeta, host_details: bool = False,
                      use_tick_pc: bool = True,
                      python_segments: Optional[Mapping[int, EntryFrames]] = None,
                      thread_names: Optional[Mapping[int, str]] = None,
                      markers: Sequence[MarkerRow] = (), t0_ns: int = 0) -> Recording:
    """Resolve raw samples against the live module images into a ``Recording``;
    ``python_segments``: entry serial -> (the serial of the entry it was made from,
    the Python frames that made that guest call);
    ``thread_names``: kernel thread id -> name;
    ``markers``: the profile's timed calls, at ``time.monotonic_ns`` times from
    ``t0_ns`` (the profile's start).

    In phases, each its own function or class: the distinct raw stacks
    (``distinct_stacks``); the module images their addresses fall in
    (``read_images``); each distinct stack split into guest frames and marks
    (``split_stacks``); the Python frames of guest entries as shared chains
    (``PythonChains``); stacks placed in the recording's tree (``StackBuilder``),
    sample by sample (``sample_table``); the markers (``timed_markers``)."""
    with _collector_paused():
        return _resolve_phases(raw, modules, discover_allowed, host_callables, meta,
                               host_details, use_tick_pc, python_segments, thread_names,
                               markers, t0_ns)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a profile resolves: the resolve makes
    objects by the hundred thousand (pyelftools' DIEs and line tables among
    them) and frees them whole, so each full collection it triggers scans them
    all for nothing -- on a 3 MB ``-g`` module, 0.5-1 s of a 1.6-2.3 s resolve
    (``benchmarks/lines_cost.py``).  Back on at the end, if it was on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _resolve_phases(raw: Iterable[RawSample], modules: Sequence[ModuleRef],
                    discover_allowed: bool, host_callables: Sequence[Callable[..., object]],
                    meta: RecordingMeta, host_details: bool, use_tick_pc: bool,
                    python_segments: Optional[Mapping[int, EntryFrames]],
                    thread_names: Optional[Mapping[int, str]], markers: Sequence[MarkerRow],
                    t0_ns: int) -> Recording:
    warnings = list(meta.get("warnings", []))
    samples = list(raw)
    stacks = distinct_stacks(samples)
    explicit, resolver, lines_of = read_images(modules, stacks, samples, discover_allowed,
                                               warnings)
    builder = StackBuilder(explicit, lines_of, host_callables, host_details, warnings)
    threads = Threads(thread_names or {}, host_details)
    table = sample_table(samples, stacks, split_stacks(stacks, resolver),
                         PythonChains(python_segments or {}), builder, resolver, threads,
                         use_tick_pc)
    timed = timed_markers(markers, threads, builder.host_label, t0_ns)
    recorded = builder.recorded_modules()
    resolved_meta: RecordingMeta = {**meta, "modules": [m.name for m in recorded],
                                    "warnings": warnings, "threads": threads.rows}
    return Recording(meta=resolved_meta, modules=recorded, host_functions=tuple(builder.hosts),
                     frames=tuple(builder.tree.frames), stack_parent=builder.tree.parent,
                     stack_frame=builder.tree.frame, sample_table=table, markers=timed)


class DistinctStacks(NamedTuple):
    """Phase 1: each distinct raw stack once, and which one each sample has."""

    pcs: List["array[int]"]          # its words: return addresses and marks, innermost first
    depth_limited: List[bool]        # the walk stopped at max_depth
    of_sample: "array[int]"          # sample -> its distinct stack


def distinct_stacks(samples: Sequence[RawSample]) -> DistinctStacks:
    """Stacks are told apart by the capture's 64-bit hash and the depth (so a
    3000-deep stack is not copied or compared per sample)."""
    stacks = DistinctStacks([], [], array("i"))
    index: Dict[Tuple[int, int, bool], int] = {}
    for s in samples:
        key = (s.stack_hash, len(s.pcs), s.depth_limited)
        found = index.get(key)
        if found is None:
            found = index[key] = len(stacks.pcs)
            stacks.pcs.append(array("Q", s.pcs.tobytes()))
            stacks.depth_limited.append(s.depth_limited)
        stacks.of_sample.append(found)
    return stacks


def read_images(modules: Sequence[ModuleRef], stacks: DistinctStacks,
                samples: Sequence[RawSample], discover_allowed: bool, warnings: List[str]
                ) -> Tuple[List[LiveImage], _Resolver, Dict[int, ImageLines]]:
    """Phase 2: the images of the modules given (in their order), those the stacks'
    addresses discover besides, and the source lines of each where its DWARF is
    known (by ``id`` of the image).  An image that cannot be read is a warning."""
    images: List[LiveImage] = []
    lines_of: Dict[int, ImageLines] = {}
    for ref in modules:
        try:
            images.append(image_from_memory(ref.image_start, ref.image_end, ref.name, True,
                                            wt.read_memory, ref.names))
        except ImageError as exc:
            warnings.append(f"module {ref.name or '(unnamed)'} could not be read: {exc}")
            continue
        symbols = images[-1].symbols
        assert isinstance(symbols, SymbolTable)          # read from memory just now
        try:
            found = image_lines(ref, symbols)
        except OtherCode as exc:
            warnings.append(f"module {ref.name or '(unnamed)'}: the binary given for its names "
                            f"is not the build it was compiled from ({exc}): its names were "
                            f"used, its source lines were not")
            continue
        except Exception as exc:     # pyelftools on damaged DWARF: any of its errors
            warnings.append(f"module {ref.name or '(unnamed)'}: its DWARF could not be read, "
                            f"no source lines: {exc}")
            continue
        if found is not None:
            lines_of[id(images[-1])] = found
    explicit = list(images)
    try:
        all_pcs = {pc for pcs in stacks.pcs for pc in pcs if pc < MARK_ENTRY}
        all_pcs.update(s.tick_pc for s in samples if s.tick_pc)
        discovered = discover(all_pcs, images, wt.read_memory, discover_allowed)
    except (OSError, ImageError) as exc:
        warnings.append(f"module discovery failed: {exc}")
        discovered = {}
    for image_range, parts in discovered.items():
        images += parts
        path = _module_files.file_of(image_range)
        if (path is not None and len(parts) == 1 and parts[0].allowed   # (an opaque frame shows neither)
                and isinstance(parts[0].symbols, SymbolTable)):
            found = _file_lines(image_range, path, parts[0].symbols)
            if found is not None:
                lines_of[id(parts[0])] = found
    return explicit, _Resolver(images), lines_of


def _file_lines(image_range: Tuple[int, int], path: str, symbols: SymbolTable
                ) -> Optional[ImageLines]:
    """A discovered image named by the file ``instrument()`` saw it compiled from
    (``_module_files``), and its lines where that file has DWARF.  Nothing is
    taken, and nothing said, where the file is gone or is not that image's code
    (the range was reused by another module): the profile was not asked for it."""
    try:
        binary = wasm_bytes(path)
        names = read_wasm(binary)
        address_map = read_address_map(wt.read_memory, *image_range)
        functions = symbols.function_ranges()
        if (address_map is None or len(names.bodies) != len(functions)
                or code_mismatch(address_map, functions, names)):
            return None
        symbols.name = os.path.basename(path)
        binary, _ = with_external_dwarf(binary, os.path.dirname(path))
        dwarf = module_dwarf(binary)
    except Exception:            # the file, or pyelftools on its DWARF: any of their errors
        return None
    return None if dwarf is None else ImageLines(address_map, dwarf)


class _NotGuest(enum.Enum):
    HOST = 0                  # an address that is no guest function's
    ENTRY = 1                 # a host->guest trampoline's: the stack's root


def _address_kind(resolver: _Resolver, pc: int) -> Union[GuestEntry, _NotGuest]:
    image = resolver.find(pc)
    if image is None:
        return _NotGuest.HOST
    offset = pc - image.text_start
    func = image.symbols.lookup(offset - 1)
    if func is None or func.role != ROLE_WASM:
        return (_NotGuest.ENTRY if func is not None and func.role == ROLE_ENTRY
                else _NotGuest.HOST)
    return GuestFrame(image, offset, func) if image.allowed else OPAQUE


def split_stacks(stacks: DistinctStacks, resolver: _Resolver) -> List[_RawStack]:
    """Phase 3: each distinct stack as guest frames (a module not allowed in the
    profile as one opaque frame per run) and marks; host code that is not a guest
    function drops out, and reaching a host->guest trampoline proves the root."""
    resolved: List[_RawStack] = []
    # pc -> its guest frame (one object per address, so the tree's per-entry cache
    # hits), OPAQUE for a module not allowed, or what the address proves if not a guest's
    by_pc: Dict[int, Union[GuestEntry, _NotGuest]] = {}
    for pcs, limited in zip(stacks.pcs, stacks.depth_limited):
        items: List[StackItem] = []
        complete = not limited
        for pc in pcs:
            if pc >= MARK_ENTRY:
                items.append(pc)
                continue
            where = by_pc.get(pc)
            if where is None and pc not in by_pc:
                where = by_pc[pc] = _address_kind(resolver, pc)
            if where is _NotGuest.ENTRY:
                complete = True              # reached the host->guest boundary
                continue
            if where is _NotGuest.HOST:
                continue
            complete = not limited           # guest frames below: root not yet proven
            if where is OPAQUE:
                if not items or items[-1] is not OPAQUE:
                    items.append(OPAQUE)
                continue
            items.append(where)
        inner = next((i for i, item in enumerate(items) if isinstance(item, int)), len(items))
        guest: List[GuestEntry] = [item for item in items[:inner] if not isinstance(item, int)]
        resolved.append(_RawStack(guest, items[inner:], not complete and bool(items)))
    return resolved


class PythonChains:
    """Phase 4: the Python frames of a sample's entry marks -- its entry's, then
    those of the entries it was made from -- as chains.  Equal chains are one
    chain, so a stack repeated by many calls from the same place is placed in the
    tree once.  The Python frames a host function was running when a tick landed
    in it (its callees) are kept the same way, as an entry made from none: a chain
    of one.  Chain 0 is the empty chain."""

    LONGEST = 1024                  # entries followed from one serial

    def __init__(self, segments: Mapping[int, EntryFrames]):
        self._segments = segments
        self.chains: List[Tuple[PythonSegment, ...]] = [()]
        self._of_serial: Dict[int, int] = {0: 0}
        self._index: Dict[Tuple[object, ...], int] = {(): 0}
        self._reader = PythonFrames()

    def of(self, serial: int) -> int:
        """The chain of entry ``serial``."""
        found = self._of_serial.get(serial)
        if found is None:
            no_entry: EntryFrames = (0, ((), False))
            entries: List[EntryFrames] = []
            link = serial
            while link and len(entries) < self.LONGEST:
                entries.append(self._segments.get(link, no_entry))
                link = entries[-1][0]
            # Code objects compare by value, slowly; the entries keep them alive, so
            # their identities (with the offsets) make the key.
            key = tuple((tuple(map(id, flat[0::2])), flat[1::2], reached)
                        for _, (flat, reached) in entries)
            found = self._index.get(key)
            if found is None:
                found = self._index[key] = len(self.chains)
                self.chains.append(tuple(self._reader.segment(raw) for _, raw in entries))
            self._of_serial[serial] = found
        return found


class StackBuilder:
    """Phase 5: the recording's frame table, stack tree, module table and host
    function table, grown as stacks are placed.  Modules given to the profile come
    first, in their order; a guest frame with source lines gets one tree node per
    call inlined at its address (innermost last)."""

    def __init__(self, explicit: Sequence[LiveImage], lines_of: Dict[int, ImageLines],
                 host_callables: Sequence[Callable[..., object]], host_details: bool,
                 warnings: List[str]):
        self.tree = _Stacks()
        self.hosts: List[HostFunction] = []
        self._lines_of = lines_of
        self._host_callables = host_callables
        self._host_details = host_details
        self._warnings = warnings
        self._module_index: Dict[int, int] = {}          # id(image) -> index in the recording
        self._module_table: List[LiveImage] = []
        for known in explicit:                           # allowed modules always appear
            self.module_of(known)
        # module -> return-address offset -> its source frames
        self._module_lines: Dict[int, Dict[int, Tuple[SourceFrame, ...]]] = {}
        self._host_index: Dict[int, int] = {}
        self._python_index: Dict[int, int] = {}         # id(code) -> host function table row
        self._placed: Dict[Tuple[int, int], Tuple[List[int], int]] = {}
        # id(entry) -> (the entry, kept so its id stays its own; its frame ids)
        self._entry_frames: Dict[int, Tuple[GuestEntry, Tuple[int, ...]]] = {}

    def module_of(self, img: LiveImage) -> int:
        m = self._module_index.get(id(img))
        if m is None:
            m = self._module_index[id(img)] = len(self._module_table)
            self._module_table.append(img)
        return m

    def guest_child(self, node: int, entry: GuestEntry) -> int:
        """The node of a guest frame under ``node`` (and of the calls inlined there)."""
        # Per entry object, its frame ids: a deep stack repeats the same few entries
        # (split_stacks makes one per address), so this is one lookup per frame.
        for frame in self._frame_ids(entry):
            node = self.tree.child_of_id(node, frame)
        return node

    def _frame_ids(self, entry: GuestEntry) -> Tuple[int, ...]:
        """The frame of ``entry`` and those of the calls inlined at its address."""
        known = self._entry_frames.get(id(entry))
        if known is None:
            known = self._entry_frames[id(entry)] = (entry, self._new_frame_ids(entry))
        return known[1]

    def _new_frame_ids(self, entry: GuestEntry) -> Tuple[int, ...]:
        if entry is OPAQUE:
            return (self.tree.frame_id(Frame(FRAME_OPAQUE)),)
        m = self.module_of(entry.image)
        physical = self.tree.frame_id(Frame(FRAME_GUEST, m, entry.offset))
        lines = self._lines_of.get(id(entry.image))
        if lines is None:
            return (physical,)
        known = self._module_lines.setdefault(m, {})
        source = known.get(entry.offset)
        if source is None:
            try:
                found = lines.frames_at(entry.offset - 1)
            except Exception as exc:    # pyelftools on damaged DWARF: any of its errors
                # The samples matter more than the lines: this module keeps none.
                del self._lines_of[id(entry.image)]
                known.clear()
                self._entry_frames.clear()
                self._warnings.append(f"module {entry.image.symbols.name}: its DWARF could "
                                      f"not be read, no source lines: {exc!r}")
                return (physical,)
            source = known[entry.offset] = shared_source_frames(found, self._host_details)
        return (physical,) + tuple(self.tree.frame_id(Frame(FRAME_GUEST, m, entry.offset, depth))
                                   for depth in range(1, len(source)))

    def host_frame(self, callable_index: int) -> Frame:
        h = self._host_index.get(callable_index)
        if h is None:
            h = self._host_index[callable_index] = len(self.hosts)
            self.hosts.append(host_function_info(self._host_callables[callable_index],
                                                 self._host_details))
        return Frame(FRAME_HOST, h)

    def host_label(self, callable_index: int) -> str:
        return host_function_info(self._host_callables[callable_index], self._host_details).label

    def python_frames(self, node: int, segment: PythonSegment) -> int:
        for code, line in segment:
            p = self._python_index.get(id(code))
            if p is None:
                p = self._python_index[id(code)] = len(self.hosts)
                self.hosts.append(python_function_info(code, self._host_details))
            node = self.tree.child(node, Frame(FRAME_PYCODE, p, line))
        return node

    def place(self, raw_id: int, stack: _RawStack, chain: int, chains: PythonChains
              ) -> Tuple[List[int], int]:
        """Tree nodes of distinct stack ``raw_id`` under a chain of Python frames:
        the innermost activation's guest frames (outermost first), and the node
        under them."""
        placed = self._placed.get((raw_id, chain))
        if placed is not None:
            return placed
        links = chains.chains[chain]
        node = self.tree.child(-1, Frame(FRAME_TRUNCATED)) if stack.truncated else -1
        entry = sum(1 for item in stack.outer if isinstance(item, int) and item < MARK_HOST)
        for item in reversed(stack.outer):
            if not isinstance(item, int):
                node = self.guest_child(node, item)
            elif item >= MARK_HOST:
                node = self.tree.child(node, self.host_frame((item & MARK_PAYLOAD) - 1))
            else:
                entry -= 1
                node = self.python_frames(node, links[entry] if entry < len(links) else ())
        base = node
        prefix: List[int] = []
        child_of_id, frame_ids = self.tree.child_of_id, self._frame_ids   # (thousands deep)
        for item in reversed(stack.guest):
            for frame in frame_ids(item):
                node = child_of_id(node, frame)
            prefix.append(node)
        placed = self._placed[(raw_id, chain)] = (prefix, base)
        return placed

    def recorded_modules(self) -> Tuple[ModuleSymbols, ...]:
        """Each module with just the functions its frames name (the lookups made them)."""
        return tuple(_with_lines(_referenced(img), self._module_lines.get(m, {}))
                     for m, img in enumerate(self._module_table))


class Threads:
    """The recording's thread table, a row per kernel thread as samples name them."""

    def __init__(self, names: Mapping[int, str], host_details: bool):
        self.rows: List[Dict[str, Any]] = []
        self._names = names
        self._host_details = host_details
        self._index: Dict[int, int] = {}

    def of(self, tid: int) -> int:
        thread = self._index.get(tid)
        if thread is None:
            thread = self._index[tid] = len(self.rows)
            self.rows.append({"name": self._names.get(tid) or f"thread {thread}",
                              "tid": tid if self._host_details else thread})
        return thread


def sample_table(samples: Sequence[RawSample], stacks: DistinctStacks,
                 resolved: Sequence[_RawStack], chains: PythonChains, builder: StackBuilder,
                 resolver: _Resolver, threads: Threads, use_tick_pc: bool) -> SampleTable:
    """Phase 6: each sample's stack node and flags: its distinct stack under its
    entry's Python frames, moved to where its tick landed (``tick_attribution``),
    ending in the host function (and its callees) or Python it was taken in."""
    table = SampleTable.empty()
    final: Dict[Tuple[int, int, int, int, int], Tuple[int, int]] = {}  # -> (stack, flags)
    tick_frames: Dict[int, Optional[GuestFrame]] = {}
    kept_under: Dict[Tuple[int, int, int], Optional[int]] = {}
    stack_column, flags_column = table.stack, table.flags
    for s, raw_id in zip(samples, stacks.of_sample):
        tick_pc = s.tick_pc if use_tick_pc and s.origin == ORIGIN_GUEST else 0
        chain = chains.of(s.entry)
        callee = chains.of(s.callee) if s.callee else 0
        sample_key = (raw_id, chain, s.origin, tick_pc, callee)
        stack_flags = final.get(sample_key)
        if stack_flags is None:
            r = resolved[raw_id]
            prefix, base = builder.place(raw_id, r, chain, chains)
            flags = SAMPLE_TRUNCATED if r.truncated else 0
            node = prefix[-1] if prefix else base
            if tick_pc and r.guest:
                if tick_pc not in tick_frames:
                    tick_frames[tick_pc] = tick_function(resolver, tick_pc)
                tick_frame = tick_frames[tick_pc]
                if tick_frame is not None:
                    function_key = (raw_id, id(tick_frame.image), tick_frame.function.start)
                    if function_key not in kept_under:
                        kept_under[function_key] = tick_attribution(r.guest, tick_frame)
                    kept = kept_under[function_key]
                    if kept is not None:
                        node = builder.guest_child(prefix[kept - 1] if kept else base,
                                                   tick_frame)
                        flags |= SAMPLE_AT_TICK
            if s.origin > ORIGIN_GUEST:
                node = builder.tree.child(node, builder.host_frame(s.origin - 1))
                for segment in chains.chains[callee]:       # its callees, if read
                    node = builder.python_frames(node, segment)
            elif s.origin == ORIGIN_OUTSIDE:
                node = builder.tree.child(node, Frame(FRAME_PYTHON))
            elif node < 0:
                node = builder.tree.child(node, Frame(FRAME_UNKNOWN))
            stack_flags = final[sample_key] = (node, flags)
        stack_column.append(stack_flags[0])
        flags_column.append(stack_flags[1])
    if samples:                     # the rest are the samples' own fields, as columns
        column = dict(zip(RawSample._fields, zip(*samples)))
        for name in ("time_ns", "cpu_ns", "wall_ns", "ticks", "rss_bytes", "memory_bytes"):
            getattr(table, name).extend(column[name])
        table.thread.extend(map(threads.of, column["tid"]))
    return table


def timed_markers(markers: Sequence[MarkerRow], threads: Threads,
                  host_label: Callable[[int], str], t0_ns: int) -> Tuple[Marker, ...]:
    """Phase 7: the markers in start order, on the profile's clock (from its start),
    a host call named by its host function's label."""
    labels: Dict[int, str] = {}
    timed: List[Marker] = []
    for kind, what, tid, start_ns, end_ns in markers:
        if isinstance(what, int):
            if what not in labels:
                labels[what] = host_label(what)
            what = labels[what]
        timed.append(Marker(kind, what, threads.of(tid), max(0, start_ns - t0_ns),
                            end_ns - t0_ns))
    timed.sort(key=lambda marker: marker.start_ns)
    return tuple(timed)
