"""The raw recording file (``.sigprof``), written: record once, convert many times.

Layout (all integers little-endian)::

    magic    8 bytes   b"SIGPROF\\x1a"
    version  u16 major, u16 minor, u32 reserved (0)
    section* tag (4 ASCII bytes), u64 payload length, payload, u32 CRC-32 of payload
    end      the section "END " with an empty payload

Sections, each exactly once, in this order (1.0 had all but MEMS and THRD, 1.1
all but THRD):

    META  JSON object: clock, interval, start time, counters, versions, warnings
    MODS  JSON list of modules: name, digest, text_size, functions
          [[start, size, wasm index, role, name, [epoch check offsets]], ...]
          (only the functions the samples reference)
    HOST  JSON list of host functions: name, module, file, line, import names
    FRMS  u32 count, then count x (i32 type, i32 ref, i32 offset): frames.Frame
    STKS  u32 count, then count x i32 parent, then count x i32 frame
    SMPL  u32 count, then columns: time i64, cpu i64, wall i64 (ns),
          stack i32, ticks i32, flags u8
    MEMS  (1.1) u32 count (0, or as SMPL's), then columns: resident set i64,
          guest linear memory i64 (bytes; resident -1 where unknown)
    THRD  (1.2) u32 count (0, or as SMPL's), then the thread column i32: an
          index into META's "threads" list ({name, tid})
    INLN  (1.3) u32 count (as FRMS's), then i32 per frame: frames.Frame.inline
          (0: the compiled function; k: the k-th call inlined at its address)

    MRKS  (1.4) JSON list of timeline markers: [kind, name, thread, start ns,
          end ns] (recording.Marker; thread as THRD's), by start time

1.3 also lets a MODS row hold "lines", where the module's DWARF was known:
[[return-address offset, [[function, file, line, column, function line], ...]
outermost first], ...].  A recording without them is written as 1.2 (INLN and
"lines" are then absent), so a 1.2 reader reads it; a 1.2 reader given a 1.3
file skips both and shows each inlined frame as its compiled function.  Likewise
a recording with markers is 1.4 and one without is not (a 1.3 reader skips MRKS).

Frame type 6 (1.2: Python code) refers to a HOST row and keeps its line as offset.

The reader (``sigprof/rawfile.py``) accepts any 1.x file and skips sections
it does not know (minor versions only add sections).
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from array import array
from typing import TYPE_CHECKING, Any, Dict, List

from .base import Exporter

if TYPE_CHECKING:
    from ..recording import Recording

MAGIC = b"SIGPROF\x1a"
VERSION_MAJOR = 1
VERSION_MINOR = 4          # 1.1 added MEMS; 1.2 THRD, Python-code frames; 1.3 lines; 1.4 MRKS
WITH_LINES_MINOR = 3       # what a recording with source lines and no markers is written as
WITHOUT_LINES_MINOR = 2    # and one with neither
HEADER = struct.Struct("<8sHHI")
SECTION = struct.Struct("<4sQ")
CRC = struct.Struct("<I")
REQUIRED = (b"META", b"MODS", b"HOST", b"FRMS", b"STKS", b"SMPL")
# The sample sections' columns, in file order: (SampleTable field, array typecode).
# The writer below and the reader (``rawfile``) both follow this one table; a
# section written empty (count 0) holds none of its columns.
SAMPLE_COLUMNS = (
    (b"SMPL", (("time_ns", "q"), ("cpu_ns", "q"), ("wall_ns", "q"), ("stack", "i"),
               ("ticks", "i"), ("flags", "B"))),
    (b"MEMS", (("rss_bytes", "q"), ("memory_bytes", "q"))),
    (b"THRD", (("thread", "i"),)),
)


def _le(a: array[int]) -> bytes:
    if sys.byteorder == "big":  # pragma: no cover - CI is little-endian
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def module_rows(rec: "Recording") -> List[Dict[str, Any]]:
    """The MODS section's JSON (the Firefox profile's ``meta.sigprof`` holds it too)."""
    rows = []
    for m in rec.modules:
        row: Dict[str, Any] = {"name": m.name, "digest": m.digest, "text_size": m.text_size,
                               "functions": [[f.start, f.size, f.index, f.role, f.name,
                                              list(f.checks)] for f in m.functions]}
        if m.lines:
            row["lines"] = [[offset, [[s.function, s.file, s.line, s.column, s.function_line]
                                      for s in frames]] for offset, frames in m.lines]
        rows.append(row)
    return rows


def host_rows(rec: "Recording") -> List[Dict[str, Any]]:
    """The HOST section's JSON (likewise)."""
    return [dict(h.__dict__) for h in rec.host_functions]


def dumps(rec: "Recording") -> bytes:
    with_lines = any(m.lines for m in rec.modules) or any(f.inline for f in rec.frames)
    minor = (VERSION_MINOR if rec.markers else WITH_LINES_MINOR if with_lines
             else WITHOUT_LINES_MINOR)
    parts = [HEADER.pack(MAGIC, VERSION_MAJOR, minor, 0)]

    def section(tag: bytes, payload: bytes) -> None:
        parts.append(SECTION.pack(tag, len(payload)))
        parts.append(payload)
        parts.append(CRC.pack(zlib.crc32(payload)))

    def js(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    section(b"META", js(dict(rec.meta)))
    section(b"MODS", js(module_rows(rec)))
    section(b"HOST", js(host_rows(rec)))
    flat = array("i")
    for frame in rec.frames:
        flat.extend(frame[:3])
    section(b"FRMS", struct.pack("<I", len(rec.frames)) + _le(flat))
    section(b"STKS", struct.pack("<I", len(rec.stack_frame)) + _le(array("i", rec.stack_parent))
            + _le(array("i", rec.stack_frame)))
    st = rec.sample_table
    for tag, columns in SAMPLE_COLUMNS:
        first = getattr(st, columns[0][0])         # an optional section's columns may be empty
        section(tag, struct.pack("<I", len(first)) + b"".join(
            _le(array(code, getattr(st, name))) for name, code in columns))
    if with_lines:
        section(b"INLN", struct.pack("<I", len(rec.frames))
                + _le(array("i", (f.inline for f in rec.frames))))
    if rec.markers:
        section(b"MRKS", js([list(marker) for marker in rec.markers]))
    section(b"END ", b"")
    return b"".join(parts)


def render(rec: "Recording", path: str) -> bytes:
    return dumps(rec)


EXPORTER = Exporter("raw", (".sigprof",), "raw recording", render)
