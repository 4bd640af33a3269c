"""The raw recording file (``.sigprof``), read: ``load`` and ``loads``.

``load`` also reads a Firefox profile that sigprof wrote (``firefoxfile``).

The layout is described where it is written, ``sigprof/export/raw.py``.  This
reader accepts any 1.x file and skips sections it does not know (minor
versions only add sections).  A newer major version, a bad magic, a checksum
mismatch, a short file, an index out of range, wrong META types, negative
weights or unordered times raise ``RecordingFormatError`` with a one-line
message -- never another exception.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import sys
import zlib
from array import array
from typing import Any, Callable, Dict

from .export.raw import (CRC, HEADER, MAGIC, REQUIRED, SAMPLE_COLUMNS, SECTION, VERSION_MAJOR,
                         VERSION_MINOR)
from .frames import FRAME_GUEST, FRAME_HOST, FRAME_PYCODE, FRAME_TYPES, Frame, HostFunction
from .recording import MARKER_KINDS, Marker, Recording, SampleTable, checked_meta
from .dwarf import SourceFrame
from .frames import Function, ModuleSymbols


class RecordingFormatError(ValueError):
    """The file is not a readable sigprof recording (the message says why)."""


def _from_le(typecode: str, data: bytes) -> array[int]:
    a = array(typecode)
    a.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover
        a.byteswap()
    return a


def loads(data: bytes, source: str = "recording") -> Recording:
    try:
        return _loads(memoryview(data), source)
    except RecordingFormatError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, struct.error, UnicodeDecodeError,
            OverflowError, RecursionError, AttributeError) as exc:
        raise RecordingFormatError(f"{source}: corrupt recording (unreadable data: {exc})") from None


def _loads(data: memoryview, source: str) -> Recording:
    def fail(why: str) -> RecordingFormatError:
        return RecordingFormatError(f"{source}: {why}")

    if len(data) < HEADER.size or bytes(data[:8]) != MAGIC:
        raise fail("not a sigprof recording (bad magic number)")
    _, major, minor, _ = HEADER.unpack_from(data, 0)
    if major > VERSION_MAJOR:
        raise fail(f"recording format version {major}.{minor} is newer than this sigprof reads "
                   f"({VERSION_MAJOR}.{VERSION_MINOR}); upgrade sigprof")
    if major < 1:
        raise fail(f"unknown recording format version {major}.{minor}")
    pos = HEADER.size
    sections: Dict[bytes, memoryview] = {}
    while True:
        if pos + SECTION.size > len(data):
            raise fail("truncated recording (no end marker)")
        tag, length = SECTION.unpack_from(data, pos)
        pos += SECTION.size
        if length > len(data) - pos - CRC.size:
            raise fail(f"truncated recording (section {tag!r} runs past the end of the file)")
        payload = data[pos:pos + length]
        pos += length
        crc, = CRC.unpack_from(data, pos)
        pos += CRC.size
        if zlib.crc32(payload) != crc:
            raise fail(f"corrupt recording (checksum mismatch in section {tag!r})")
        if tag == b"END ":
            break
        if tag in sections:
            raise fail(f"corrupt recording (section {tag!r} appears twice)")
        sections[tag] = payload
    missing = [t.decode() for t in REQUIRED if t not in sections]
    if missing:
        raise fail(f"corrupt recording (missing sections: {', '.join(missing)})")

    try:
        meta = checked_meta(json.loads(bytes(sections[b"META"]).decode()))
    except ValueError as exc:
        raise fail(f"corrupt recording ({exc})") from None
    modules = tuple(module_from_row(m) for m in json.loads(bytes(sections[b"MODS"]).decode()))
    hosts = tuple(host_from_row(h) for h in json.loads(bytes(sections[b"HOST"]).decode()))

    frames_raw = sections[b"FRMS"]
    n_frames = _count(frames_raw, 12, fail, "FRMS")
    flat = _from_le("i", bytes(frames_raw[4:]))
    inline = sections.get(b"INLN")
    depths = array("i", [0] * n_frames)
    if inline is not None:
        if _count(inline, 4, fail, "INLN") != n_frames:
            raise fail("corrupt recording (INLN does not match the frames)")
        depths = _from_le("i", bytes(inline[4:]))
    frames = tuple(Frame(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2], depths[i])
                   for i in range(n_frames))
    for frame in frames:
        if frame.type == FRAME_GUEST and not (0 <= frame.ref < len(modules) and frame.offset >= 0):
            raise fail("corrupt recording (frame refers to a missing module)")
        if frame.type in (FRAME_HOST, FRAME_PYCODE) and not 0 <= frame.ref < len(hosts):
            raise fail("corrupt recording (frame refers to a missing host function)")
        if frame.inline < 0 or (frame.inline and frame.type != FRAME_GUEST):
            raise fail("corrupt recording (an inlined frame that is not a guest frame)")
        if frame.type not in FRAME_TYPES:
            raise fail(f"corrupt recording (unknown frame type {frame.type})")

    stacks_raw = sections[b"STKS"]
    n_stacks = _count(stacks_raw, 8, fail, "STKS")
    parent = _from_le("i", bytes(stacks_raw[4:4 + 4 * n_stacks]))
    stack_frame = _from_le("i", bytes(stacks_raw[4 + 4 * n_stacks:]))
    for i in range(n_stacks):
        if not -1 <= parent[i] < i or not 0 <= stack_frame[i] < n_frames:
            raise fail("corrupt recording (stack table index out of range)")

    columns: Dict[str, array[int]] = {}
    n = 0
    for tag, fields in SAMPLE_COLUMNS:
        columns_raw = sections.get(tag)
        if columns_raw is None:
            continue                          # an older minor version: not written
        sizes = [array(code).itemsize for _, code in fields]
        count = _count(columns_raw, sum(sizes), fail, tag.decode())
        if tag == b"SMPL":
            n = count
        elif count not in (0, n):
            raise fail(f"corrupt recording ({tag.decode()} does not match the samples)")
        offset = 4
        for (name, code), size in zip(fields, sizes):
            columns[name] = _from_le(code, bytes(columns_raw[offset:offset + size * count]))
            offset += size * count
    table = dataclasses.replace(SampleTable.empty(), **columns)
    known_threads = len(meta.get("threads") or [])
    if any(not 0 <= t < known_threads for t in table.thread):
        raise fail("corrupt recording (sample refers to a missing thread)")
    for s in table.stack:
        if not -1 <= s < n_stacks:
            raise fail("corrupt recording (sample refers to a missing stack)")
    if any(v < 0 for v in table.cpu_ns) or any(v < 0 for v in table.wall_ns):
        raise fail("corrupt recording (negative sample time)")
    if any(b < a for a, b in zip(table.time_ns, table.time_ns[1:])):
        raise fail("corrupt recording (samples out of time order)")
    markers = tuple(marker_from_row(row, known_threads)
                    for row in json.loads(bytes(sections.get(b"MRKS", b"[]")).decode()))
    return Recording(meta=meta, modules=modules, host_functions=hosts, frames=frames,
                     stack_parent=parent, stack_frame=stack_frame, sample_table=table,
                     markers=markers)


def marker_from_row(row: Any, threads: int) -> Marker:
    """A marker from its row, [kind, name, thread, start ns, end ns]; ValueError
    where it is not one."""
    kind, name, thread, start_ns, end_ns = row
    marker = Marker(str(kind), str(name), int(thread), int(start_ns), int(end_ns))
    if not (marker.kind in MARKER_KINDS and 0 <= marker.thread < max(threads, 1)
            and 0 <= marker.start_ns <= marker.end_ns):
        raise ValueError(f"a marker out of range: {row!r}"[:200])
    return marker


def _count(payload: memoryview, item_size: int, fail: Callable[[str], Exception],
           tag: str) -> int:
    if len(payload) < 4:
        raise fail(f"corrupt recording (section {tag} too short)")
    n: int = struct.unpack_from("<I", payload, 0)[0]
    if len(payload) != 4 + n * item_size:
        raise fail(f"corrupt recording (section {tag} has the wrong size for {n} entries)")
    return n


def module_from_row(m: Dict[str, Any]) -> ModuleSymbols:
    functions = tuple(Function(int(f[0]), int(f[1]), str(f[4]), int(f[2]), str(f[3]),
                               tuple(int(c) for c in (f[5] if len(f) > 5 else ())))
                      for f in m["functions"])
    if any(f.start < 0 or f.size < 0 for f in functions):
        raise ValueError("negative function offset")
    lines = tuple((int(offset), tuple(SourceFrame(str(f[0]), str(f[1]), int(f[2]), int(f[3]),
                                                  int(f[4])) for f in frames))
                  for offset, frames in m.get("lines", ()))
    return ModuleSymbols(str(m["name"]), str(m["digest"]), int(m["text_size"]),
                         tuple(sorted(functions, key=lambda f: (f.start, f.size))),
                         tuple(sorted(lines, key=lambda row: row[0])))


def host_from_row(h: Dict[str, Any]) -> HostFunction:
    return HostFunction(name=str(h["name"]), module=str(h.get("module", "")),
                        file=str(h.get("file", "")), line=int(h.get("line", 0)),
                        import_module=str(h.get("import_module", "")),
                        import_name=str(h.get("import_name", "")))


def load(path: str) -> Recording:
    """Read a recording: a raw ``.sigprof`` file, or a Firefox profile sigprof wrote
    (``.json``, ``.json.gz``: see ``sigprof.firefoxfile``), told apart by their
    first bytes.  ``RecordingFormatError`` or ``OSError`` on trouble."""
    with open(path, "rb") as f:
        data = f.read()
    return recording_from_bytes(data, source=path)


def recording_from_bytes(data: bytes, source: str) -> Recording:
    """What ``load`` reads, from the file's bytes (``source`` names the file)."""
    if not data:
        raise RecordingFormatError(f"{source}: the file is empty (damaged, or still being "
                                   f"written), not a recording")
    if data[:len(MAGIC)] == MAGIC:
        return loads(data, source=source)
    if data[:2] == b"\x1f\x8b" or data.lstrip()[:1] == b"{":
        from . import firefoxfile                 # it reads through this module
        return firefoxfile.loads(data, source=source)
    raise RecordingFormatError(f"{source}: neither a sigprof recording nor a JSON profile (not "
                               f"a sigprof recording: it begins with neither a recording's "
                               f"magic number nor a JSON object)")
