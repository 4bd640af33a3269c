"""Timeline markers: the host calls and guest calls of a profile long enough to see.

The Firefox Profiler's Marker Chart shows what sampling cannot: when each call
began and ended.  Every host call and guest call is timed (two
``time.monotonic_ns`` reads, the clock sample times use); one that lasts at least
``MARKER_MIN_NS`` is kept, up to ``MARKER_CAPACITY`` per profile, so a guest
making millions of short host calls costs two clock reads per call and no
memory.  The log's columns are allocated with the profile (33 bytes a row), so
keeping markers allocates nothing while the guest runs.  A guest call is named
by the export called (``export_name``)."""

from __future__ import annotations

import itertools
import threading
from array import array
from types import FrameType
from typing import Dict, List, Optional, Tuple, Union

from .defaults import MARKER_CAPACITY, MARKER_MIN_NS
from .recording import GUEST_CALL, HOST_CALL, MARKER_KINDS

__all__ = ["GUEST_CALL", "HOST_CALL", "MarkerLog", "export_name"]

# What a guest call is named when the export is not known: entered by instantiation
# (a start function), or through a function not fetched as an export.
INSTANTIATION, UNNAMED_GUEST_CALL = "(instantiation)", "(guest call)"
# The attribute sigprof gives a wasmtime-py function fetched as an export.
EXPORT_NAME_ATTRIBUTE = "_sigprof_export_name"

# (kind, host id or export name, native thread id, start ns, end ns); monotonic times
MarkerRow = Tuple[str, Union[int, str], int, int, int]

get_native_id = threading.get_native_id

KIND_CODES = {kind: code for code, kind in enumerate(MARKER_KINDS, 1)}


class MarkerLog:
    """One profile's markers, in columns allocated when the profile is made, so a
    long run of slow calls grows no memory.  Appended from any thread: a row's
    index comes from ``itertools.count`` (atomic under the GIL) and its kind is
    written last, so ``rows`` skips a row another thread is still writing."""

    __slots__ = ("min_ns", "capacity", "_next_index", "_kinds", "_whats", "_threads",
                 "_starts_ns", "_ends_ns", "_name_index", "_new_name")

    def __init__(self, min_ns: int = MARKER_MIN_NS, capacity: int = MARKER_CAPACITY):
        self.min_ns = min_ns
        self.capacity = capacity
        self._next_index = itertools.count()
        self._kinds = bytearray(capacity)            # 0: not written; else KIND_CODES
        self._whats = array("q", bytes(8 * capacity))  # host id, or the index _name_index gave
        self._threads = array("q", bytes(8 * capacity))
        self._starts_ns = array("q", bytes(8 * capacity))
        self._ends_ns = array("q", bytes(8 * capacity))
        # an export's name, interned: as many as the guests have exports
        self._name_index: Dict[str, int] = {}
        self._new_name = threading.Lock()

    def add(self, kind: str, what: Union[int, str], start_ns: int, end_ns: int) -> None:
        index = next(self._next_index)
        if index >= self.capacity:
            return                                   # rows() counts it as dropped
        if isinstance(what, str):
            named = self._name_index.get(what)
            if named is None:
                with self._new_name:
                    named = self._name_index.setdefault(what, len(self._name_index))
            what = named
        self._whats[index] = what
        self._threads[index] = get_native_id()
        self._starts_ns[index] = start_ns
        self._ends_ns[index] = end_ns
        self._kinds[index] = KIND_CODES[kind]

    def rows(self) -> Tuple[List[MarkerRow], int]:
        """The markers written so far and how many were past the capacity."""
        reserved = next(self._next_index)        # this read reserves one index itself
        names = {named: name for name, named in self._name_index.items()}
        rows: List[MarkerRow] = []
        for index in range(min(reserved, self.capacity)):
            code = self._kinds[index]
            if code:
                kind = MARKER_KINDS[code - 1]
                what = self._whats[index]
                rows.append((kind, names[what] if kind == GUEST_CALL else what,
                             self._threads[index], self._starts_ns[index], self._ends_ns[index]))
        return rows, max(0, reserved - self.capacity)


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
