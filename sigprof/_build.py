"""Raw ring contents + live module images -> an immutable ``Recording``.

This runs once, after sampling stopped, in the process that sampled (the PCs
are meaningful only here).  It is the one place where host addresses exist
next to module names; what it returns has only module-relative offsets.

Per sample, ``backtrace()`` wrote native return addresses innermost first:
the sampler's own frames, the interpreter, wasmtime, then the guest's frames,
the host->guest trampoline, and the Python caller below.  Only PCs inside a
module image's ``.text`` are kept:

* guest functions become frames (or one opaque frame per run of frames from
  modules the user did not allow);
* trampolines and builtins are machinery and are dropped, but an entry
  trampoline outermost proves the guest stack is complete;
* a sample whose ``backtrace()`` filled all ``max_depth`` words without
  reaching that entry trampoline lost its root: it gets a ``(truncated
  stack)`` root frame and the truncated flag.
"""

from __future__ import annotations

import bisect
import os
from array import array
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import _imports, _wasmtime as wt
from ._ring import KIND_GUEST, KIND_OUTSIDE, RawSample
from .recording import (FRAME_GUEST, FRAME_HOST, FRAME_OPAQUE, FRAME_PYTHON, FRAME_TRUNCATED,
                        FRAME_UNKNOWN, SAMPLE_AT_TICK, SAMPLE_TRUNCATED, HostFunction, Recording,
                        SampleTable, intern_stack)
from .symbols import (KIND_ENTRY, KIND_WASM, ImageError, LiveImage, discover,
                      image_from_memory)


def explicit_images(modules: Sequence[Tuple[Optional[str], object]]) -> List[LiveImage]:
    images = []
    for name, module in modules:
        start, end = wt.module_image_range(module)  # type: ignore[arg-type]
        images.append(image_from_memory(start, end, name, True, wt.read_memory))
    return images


def host_function_info(func: Callable, host_details: bool) -> HostFunction:
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


_OPAQUE = ("opaque",)


def at_tick(guest: List[Tuple], resolver: "_Resolver", tick_pc: int) -> Optional[List[Tuple]]:
    """The guest stack where the tick landed, from the stack at the epoch check.

    Epoch sampling takes the stack at the first check after a tick: the entry
    of the next function called, or the next loop header.  The tick handler
    recorded the interrupted PC, so the function the tick really landed in
    (F) is known; with the check's kind (the leaf's entry check, or a loop
    header) the stack at the tick follows:

    * F is the leaf, at a loop header: same stack, exact PC;
    * F is an ancestor of the leaf, which is at its entry check: F called
      down to the leaf after the tick -> cut the stack back to F;
    * F is not on the stack, the leaf at its entry check: F returned before
      the leaf was called -> F replaces the leaf;
    * F is not on the stack, the leaf at a loop header: F was called from the
      leaf and returned -> F goes under the leaf.

    Returns None (keep the check's stack) when the tick was not in allowed
    guest code, the leaf's checks are unknown, or the case is inconsistent.
    Frames get return-address semantics, so the tick PC is stored plus one.
    """
    img = resolver.find(tick_pc)
    if img is None or not img.allowed:
        return None
    tick_offset = tick_pc - img.text_start
    f = img.symbols.lookup(tick_offset)
    if f is None or f.kind != KIND_WASM:
        return None
    leaf = guest[0]
    if leaf is _OPAQUE or not leaf[2].checks:
        return None
    leaf_img, leaf_offset, leaf_func = leaf
    at_entry = leaf_offset - leaf_func.start == leaf_func.checks[0]
    tick_frame = (img, tick_offset + 1, f)

    def same(entry) -> bool:
        return entry is not _OPAQUE and entry[0] is img and entry[2].start == f.start

    deeper = next((k for k in range(1, len(guest)) if same(guest[k])), None)
    if same(leaf) and not at_entry:
        return [tick_frame] + guest[1:]
    if not at_entry:
        return None if deeper is not None else [tick_frame] + guest
    if deeper is not None:
        return [tick_frame] + guest[deeper + 1:]
    return [tick_frame] + guest[1:]


def build(raw: Iterable[RawSample], explicit: Sequence[LiveImage], discover_allowed: bool,
          host_callables: Sequence[Callable], meta: dict, host_details: bool = False,
          discovery: bool = True, use_tick_pc: bool = True) -> Recording:
    samples = list(raw)
    images = list(explicit)
    if discovery:
        pcs = {pc for s in samples for pc in s.pcs}
        try:
            images += discover(pcs, images, wt.read_memory, discover_allowed)
        except (OSError, ImageError) as exc:
            meta.setdefault("warnings", []).append(f"module discovery failed: {exc}")
    resolver = _Resolver(images)

    module_index: Dict[int, int] = {}           # id(image) -> index in the recording
    modules: List = []
    for img in explicit:                        # allowed modules always appear, in given order
        module_index[id(img)] = len(modules)
        modules.append(img.symbols)

    host_index: Dict[int, int] = {}
    hosts: List[HostFunction] = []
    frame_index: Dict[Tuple[int, int, int], int] = {}
    frames: List[Tuple[int, int, int]] = []
    stack_index: Dict[Tuple[int, int], int] = {}
    stack_parent, stack_frame = array("i"), array("i")
    table = SampleTable(array("q"), array("q"), array("q"), array("i"), array("i"), array("B"))

    def frame_id(key: Tuple[int, int, int]) -> int:
        found = frame_index.get(key)
        if found is None:
            found = frame_index[key] = len(frames)
            frames.append(key)
        return found

    for s in samples:
        guest: List[Tuple] = []               # leaf first: (img, offset, func) or OPAQUE
        complete = not s.depth_limited
        for pc in s.pcs:
            img = resolver.find(pc)
            if img is None:
                continue
            offset = pc - img.text_start
            func = img.symbols.lookup(offset - 1)
            if func is None or func.kind != KIND_WASM:
                if func is not None and func.kind == KIND_ENTRY:
                    complete = True          # reached the host->guest boundary
                continue
            complete = not s.depth_limited   # guest frames below: root not yet proven
            if not img.allowed:
                if not guest or guest[-1] is not _OPAQUE:
                    guest.append(_OPAQUE)
                continue
            guest.append((img, offset, func))
        flags = 0
        if use_tick_pc and s.kind == KIND_GUEST and s.tick_pc and guest:
            corrected = at_tick(guest, resolver, s.tick_pc)
            if corrected is not None:
                guest = corrected
                flags |= SAMPLE_AT_TICK
        leaf_first: List[int] = []
        for entry in guest:
            if entry is _OPAQUE:
                leaf_first.append(frame_id((FRAME_OPAQUE, 0, 0)))
                continue
            img, offset, _ = entry
            m = module_index.get(id(img))
            if m is None:
                m = module_index[id(img)] = len(modules)
                modules.append(img.symbols)
            leaf_first.append(frame_id((FRAME_GUEST, m, offset)))
        root_first = leaf_first[::-1]
        if not complete and root_first:
            root_first.insert(0, frame_id((FRAME_TRUNCATED, 0, 0)))
            flags |= SAMPLE_TRUNCATED
        if s.kind > KIND_GUEST:
            callable_index = s.kind - 1
            h = host_index.get(callable_index)
            if h is None:
                h = host_index[callable_index] = len(hosts)
                hosts.append(host_function_info(host_callables[callable_index], host_details))
            root_first.append(frame_id((FRAME_HOST, h, 0)))
        elif s.kind == KIND_OUTSIDE:
            root_first.append(frame_id((FRAME_PYTHON, 0, 0)))
        elif not root_first:
            root_first.append(frame_id((FRAME_UNKNOWN, 0, 0)))
        stack = intern_stack(root_first, stack_index, stack_parent, stack_frame)
        table.time_ns.append(s.time_ns)
        table.cpu_ns.append(s.cpu_ns)
        table.wall_ns.append(s.wall_ns)
        table.stack.append(stack)
        table.ticks.append(s.ticks)
        table.flags.append(flags)

    meta["modules"] = [m.name for m in modules]
    return Recording(meta=meta, modules=tuple(modules), host_functions=tuple(hosts),
                     frames=tuple(frames), stack_parent=stack_parent, stack_frame=stack_frame,
                     sample_table=table)
