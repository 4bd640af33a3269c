"""Timeline markers: the host calls and guest calls of a profile long enough to see.

The Firefox Profiler's Marker Chart shows what sampling cannot: when each call
began and ended.  Every host call and guest call is timed (two
``time.monotonic_ns`` reads, the clock sample times use); one that lasts at least
``MARKER_MIN_NS`` is kept, up to ``MARKER_CAPACITY`` per profile, so a guest
making millions of short host calls costs two clock reads per call and no
memory.  A guest call is named by the export called (``export_name``)."""

from __future__ import annotations

import threading
from types import FrameType
from typing import List, Optional, Tuple, Union

from .defaults import MARKER_CAPACITY, MARKER_MIN_NS
from .recording import GUEST_CALL, HOST_CALL

__all__ = ["GUEST_CALL", "HOST_CALL", "MarkerLog", "export_name"]

# What a guest call is named when the export is not known: entered by instantiation
# (a start function), or through a function not fetched as an export.
INSTANTIATION, UNNAMED_GUEST_CALL = "(instantiation)", "(guest call)"
# The attribute sigprof gives a wasmtime-py function fetched as an export.
EXPORT_NAME_ATTRIBUTE = "_sigprof_export_name"

# (kind, host id or export name, native thread id, start ns, end ns); monotonic times
MarkerRow = Tuple[str, Union[int, str], int, int, int]

get_native_id = threading.get_native_id


class MarkerLog:
    """One profile's markers; appended from any thread (``list.append`` holds the GIL)."""

    __slots__ = ("min_ns", "capacity", "rows", "dropped")

    def __init__(self, min_ns: int = MARKER_MIN_NS, capacity: int = MARKER_CAPACITY):
        self.min_ns = min_ns
        self.capacity = capacity
        self.rows: List[MarkerRow] = []
        self.dropped = 0

    def add(self, kind: str, what: Union[int, str], start_ns: int, end_ns: int) -> None:
        if len(self.rows) >= self.capacity:
            self.dropped += 1
        else:
            self.rows.append((kind, what, get_native_id(), start_ns, end_ns))


def export_name(caller: Optional[FrameType]) -> str:
    """The name of the export a guest call entered, from the wasmtime-py frames that
    made it (``caller`` is the innermost): the first whose ``self`` was fetched as an
    export.  Read only for a call that became a marker: ``f_locals`` costs a dict."""
    frame, depth = caller, 0
    while frame is not None and depth < 3:
        owner = frame.f_locals.get("self")
        name = getattr(owner, EXPORT_NAME_ATTRIBUTE, None)
        if isinstance(name, str):
            # a component function's post-return is entered through it too
            return f"{name} (post-return)" if frame.f_code.co_name == "post_return" else name
        if frame.f_code.co_name in ("__init__", "instantiate"):
            return INSTANTIATION
        frame, depth = frame.f_back, depth + 1
    return UNNAMED_GUEST_CALL
