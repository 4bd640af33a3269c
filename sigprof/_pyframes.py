"""The Python frames of a mixed stack: the Python code that called into the guest.

The Python frames above a guest call do not change while it runs, so they are
read once per call, when it returns, and only when a sample was taken during
it: the native capture writes an entry mark into each sample's stack and the
innermost entry's serial into its record, and says, as the call returns,
whether a sample needs the entry and which entry it was made from
(``Capture.guest_exit``).  The frames are
kept as code objects and line numbers until the profile stops, then become
``HostFunction`` rows in the recording (``frames.FRAME_PYCODE`` frames).

A segment reaches from the frame that made the guest call up to, not
including, the host function the guest had called (which its host mark already
shows), or to the thread's outermost frame.  Frames of wasmtime-py and of
sigprof itself are machinery and left out.
"""

from __future__ import annotations

import os
from types import CodeType, FrameType
from typing import Dict, List, Optional, Tuple

import wasmtime

PythonFrame = Tuple[CodeType, int, str]      # code, line, the defining module's name
PythonSegment = Tuple[PythonFrame, ...]      # outermost first
EntryFrames = Tuple[int, PythonSegment]      # the enclosing entry's serial (0: none), frames

_MACHINERY_DIRS = tuple(os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep
                        for m in (wasmtime, __import__("sigprof")))
_is_machinery: Dict[CodeType, bool] = {}


def python_segment(frame: Optional[FrameType], host_call_code: CodeType) -> PythonSegment:
    """The Python frames from ``frame`` outwards, outermost first (see the module doc);
    ``host_call_code`` is the code of sigprof's host-function wrapper."""
    out: List[PythonFrame] = []
    while frame is not None:
        code = frame.f_code
        if code is host_call_code:
            if out:
                out.pop()       # the host function itself (the outermost frame kept below
            break               # the wrapper): its host mark shows it
        machinery = _is_machinery.get(code)
        if machinery is None:
            machinery = _is_machinery[code] = os.path.abspath(
                code.co_filename).startswith(_MACHINERY_DIRS)
        if not machinery:
            out.append((code, frame.f_lineno or code.co_firstlineno,
                        str(frame.f_globals.get("__name__", ""))))
        frame = frame.f_back
    out.reverse()
    return tuple(out)
