"""The Python frames of a mixed stack: the Python code that called into the guest.

The Python frames above a guest call do not change while it runs, so they are
read once per call, when it returns, and only when a sample was taken during
it: the native capture writes an entry mark into each sample's stack and the
innermost entry's serial into its record, and says, as the call returns,
whether a sample needs the entry and which entry it was made from
(``Capture.guest_exit``).  Then ``read_entry`` takes the raw frames -- code
objects and instruction offsets, walked in C (``_csigprof.python_stack``) --
and the rest waits for the profile to stop: ``PythonFrames`` turns them into
frames with lines, once per distinct code and offset.

A segment reaches from the frame that made the guest call up to, not
including, the host function the guest had called (which its host mark already
shows), or to the thread's outermost frame.  Frames of wasmtime-py and of
sigprof itself are machinery and left out.
"""

from __future__ import annotations

import os
from types import CodeType, FrameType
from typing import Dict, List, Optional, Tuple, cast

import wasmtime

from . import _native

RawEntry = Tuple[Tuple[object, ...], bool]   # (code, offset, ...) innermost first; reached
                                             # the host-call wrapper
EntryFrames = Tuple[int, RawEntry]           # the enclosing entry's serial (0: none), frames
PythonFrame = Tuple[CodeType, int]           # code, line
PythonSegment = Tuple[PythonFrame, ...]      # outermost first

_MACHINERY_DIRS = tuple(os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep
                        for m in (wasmtime, __import__("sigprof")))


def read_entry(frame: Optional[FrameType], host_call_code: CodeType) -> RawEntry:
    """The raw Python frames from ``frame`` out to sigprof's host-function wrapper
    (``host_call_code``) or the thread's outermost frame."""
    return cast(RawEntry, _native.extension().python_stack(frame, host_call_code))


def read_thread_entry(native_tid: int, host_call_code: CodeType) -> Optional[RawEntry]:
    """``read_entry`` of another thread, from the frame it is running now (None: no
    Python thread has that id).  One C call under the GIL: a walk over another
    thread's frames in Python can outlive them and crash CPython 3.11
    (``_native_src/pyframes.c``)."""
    return cast(Optional[RawEntry],
                _native.extension().thread_python_stack(native_tid, host_call_code))


def read_innermost_in_python(frame: FrameType) -> RawEntry:
    """The one frame ``frame`` of another thread, without the C extension (the
    pure-Python capture's): its callers are not walked, for the reason above."""
    return (frame.f_code, frame.f_lasti), False


def read_entry_in_python(frame: Optional[FrameType], host_call_code: CodeType) -> RawEntry:
    """``read_entry`` of the calling thread without the C extension (the pure-Python
    capture's)."""
    flat: List[object] = []
    walking = frame
    while walking is not None:
        if walking.f_code is host_call_code:
            return tuple(flat), True
        flat.extend((walking.f_code, walking.f_lasti))
        walking = walking.f_back
    return tuple(flat), False


class PythonFrames:
    """Raw entries -> segments of (code, line), with the machinery left out."""

    def __init__(self) -> None:
        self._machinery: Dict[int, bool] = {}      # id(code) -> wasmtime's or sigprof's
        self._lines: Dict[Tuple[int, int], int] = {}

    def segment(self, raw: RawEntry) -> PythonSegment:
        flat, reached_wrapper = raw
        kept: List[PythonFrame] = []
        for i in range(0, len(flat), 2):
            code, offset = flat[i], flat[i + 1]
            assert isinstance(code, CodeType) and isinstance(offset, int)
            if not self._is_machinery(code):
                kept.append((code, self._line(code, offset)))
        if reached_wrapper and kept:
            kept.pop()          # the host function itself: its host mark shows it
        kept.reverse()
        return tuple(kept)

    def _is_machinery(self, code: CodeType) -> bool:
        found = self._machinery.get(id(code))
        if found is None:
            found = self._machinery[id(code)] = os.path.abspath(
                code.co_filename).startswith(_MACHINERY_DIRS)
        return found

    def _line(self, code: CodeType, offset: int) -> int:
        key = (id(code), offset)
        line = self._lines.get(key)
        if line is None:
            line = next((n for start, end, n in code.co_lines()
                         if start <= offset < end and n is not None), code.co_firstlineno)
            self._lines[key] = line
        return line
