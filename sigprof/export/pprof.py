"""Recording -> pprof (gzipped ``profile.proto``), as ``go tool pprof``, Pyroscope and Parca read it.

Spec: google/pprof ``proto/profile.proto``.  The encoder is the few lines of
protobuf wire format the message needs (varints, length-delimited fields,
packed repeated integers), written here rather than taken from the
``protobuf`` package: the profile is one flat message of integers and
strings, the package would be a runtime dependency of every install for it,
and its generated code is tied to protobuf's own release line.

What goes where:

* sample types ``samples/count`` and ``cpu/nanoseconds`` (``wall/nanoseconds``
  for the wall clock), the latter the default; the period is the sampling
  interval in the same unit;
* one Location per interned frame (a guest frame is one return address): a
  guest frame's address is its ``.text`` offset placed in its module's
  Mapping, which has functions but no file, so tools never try to
  symbolize it again; Python and host frames have no address and no mapping;
* one Function per function, named as ``record``'s summary names it (``work
  [app.wasm]``: pprof merges functions by name, and two modules' ``work`` are
  not one function), Python host functions and Python code with their file
  and first line, the pseudo frames under their own names;
* a ``thread`` label on every sample; the profile's warnings as comments.

One pprof Sample per distinct stack and thread, its count and weight summed (as Go's
CPU profiles are), so a profile grows with its stacks, not its samples.
"""

from __future__ import annotations

import gzip
from typing import TYPE_CHECKING, Dict, List, Tuple

from ..frames import FRAME_GUEST, FRAME_HOST, FRAME_PYCODE
from .base import Exporter

if TYPE_CHECKING:
    from ..recording import Recording

# A module's mapping starts at (index + 1) << MAPPING_SHIFT, so the mappings of
# different modules never overlap (.text offsets are below 4 GiB).
MAPPING_SHIFT = 32

# profile.proto field numbers.
_PROFILE_SAMPLE_TYPE, _PROFILE_SAMPLE, _PROFILE_MAPPING, _PROFILE_LOCATION = 1, 2, 3, 4
_PROFILE_FUNCTION, _PROFILE_STRING_TABLE, _PROFILE_TIME_NANOS = 5, 6, 9
_PROFILE_DURATION_NANOS, _PROFILE_PERIOD_TYPE, _PROFILE_PERIOD = 10, 11, 12
_PROFILE_COMMENT, _PROFILE_DEFAULT_SAMPLE_TYPE = 13, 14


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1                 # int64 fields: two's complement, as protobuf does
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Message:
    """One protobuf message being written: fields appended in order."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def scalar(self, field: int, value: int) -> "_Message":
        if value:                          # proto3: a zero scalar is the default, not written
            self.buf += _varint(field << 3) + _varint(value)
        return self

    def blob(self, field: int, data: bytes) -> "_Message":
        self.buf += _varint(field << 3 | 2) + _varint(len(data)) + data
        return self

    def message(self, field: int, sub: "_Message") -> "_Message":
        return self.blob(field, bytes(sub.buf))

    def packed(self, field: int, values: List[int]) -> "_Message":
        if values:
            self.blob(field, b"".join(_varint(v) for v in values))
        return self


class _Strings:
    """The string table: index 0 is the empty string, as the spec requires."""

    def __init__(self) -> None:
        self.index: Dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.index)
        return found


def _value_type(strings: _Strings, kind: str, unit: str) -> _Message:
    return _Message().scalar(1, strings(kind)).scalar(2, strings(unit))


def convert(rec: "Recording") -> bytes:
    """The uncompressed ``Profile`` message."""
    strings = _Strings()
    profile = _Message()
    weight_kind = "wall" if rec.weights_ns() is rec.sample_table.wall_ns else "cpu"
    profile.message(_PROFILE_SAMPLE_TYPE, _value_type(strings, "samples", "count"))
    profile.message(_PROFILE_SAMPLE_TYPE, _value_type(strings, weight_kind, "nanoseconds"))

    function_ids: Dict[Tuple[object, ...], int] = {}
    functions: List[_Message] = []

    def function_id(frame_index: int) -> int:
        ref = rec.function(frame_index)
        found = function_ids.get(ref.key)
        if found is None:
            found = function_ids[ref.key] = len(function_ids) + 1
            frame = rec.frames[frame_index]
            file, first_line = (ref.file, ref.line) if ref.file else (ref.module, 0)
            if frame.type in (FRAME_HOST, FRAME_PYCODE):
                host = rec.host_functions[frame.ref]
                file, first_line = host.file, host.line
            # The source file has a field of its own: the name without it.
            name = strings(ref.label("summary") if not ref.file else f"{ref.name} [{ref.module}]")
            functions.append(_Message().scalar(1, found).scalar(2, name).scalar(3, name)
                             .scalar(4, strings(file)).scalar(5, first_line))
        return found

    # A guest frame and the calls inlined at its address (frames of their own in the
    # recording, right under it) are one Location: its Lines innermost first.
    frame_of = {frame: i for i, frame in enumerate(rec.frames)}
    locations: Dict[int, int] = {}          # frame index -> location id
    for frame_index, frame in enumerate(rec.frames):
        if frame.inline:
            continue
        location = _Message().scalar(1, frame_index + 1)
        line = _Message().scalar(1, function_id(frame_index))
        if frame.type == FRAME_GUEST:
            location.scalar(2, frame.ref + 1).scalar(3, (frame.ref + 1 << MAPPING_SHIFT) + frame.offset)
            sources = rec.modules[frame.ref].source_frames(frame.offset)
            for depth in range(len(sources) - 1, 0, -1):
                inlined = frame_of.get(frame._replace(inline=depth))
                if inlined is not None:
                    location.message(4, _Message().scalar(1, function_id(inlined))
                                     .scalar(2, sources[depth].line))
            if sources:
                line.scalar(2, sources[0].line)
        elif frame.type == FRAME_PYCODE:
            line.scalar(2, frame.offset)         # the line the Python code was at
        location.message(4, line)
        locations[frame_index] = frame_index + 1
        profile.message(_PROFILE_LOCATION, location)

    for index, module in enumerate(rec.modules):
        base = index + 1 << MAPPING_SHIFT
        profile.message(_PROFILE_MAPPING, _Message().scalar(1, index + 1).scalar(2, base)
                        .scalar(3, base + max(module.text_size, 1)).scalar(5, strings(module.name))
                        .scalar(6, strings(module.digest)).scalar(7, 1))
    for function in functions:
        profile.message(_PROFILE_FUNCTION, function)

    thread_names = [str(t.get("name", "")) for t in rec.meta.get("threads") or []] or [""]
    thread_key = strings("thread")
    thread_column = rec.sample_table.thread
    # Samples of one stack on one thread are one pprof Sample (count, weight summed), as
    # Go's own CPU profiles are: pprof has no per-sample time to lose, and a profile then
    # grows with its distinct stacks, not its samples.
    totals: Dict[Tuple[int, int], List[int]] = {}
    for i, (stack, weight_ns) in enumerate(zip(rec.sample_table.stack, rec.weights_ns())):
        total = totals.setdefault((stack, thread_column[i] if thread_column else 0), [0, 0])
        total[0] += 1
        total[1] += weight_ns
    for (stack, thread_index), (count, weight_ns) in totals.items():
        ids = [locations[f] for f in reversed(rec.stack_frames(stack)) if f in locations
               ] if stack >= 0 else []
        sample = _Message().packed(1, ids).packed(2, [count, weight_ns])
        thread = thread_names[thread_index]
        if thread:
            sample.message(3, _Message().scalar(1, thread_key).scalar(2, strings(thread)))
        profile.message(_PROFILE_SAMPLE, sample)

    comments = [strings(f"warning: {w}") for w in rec.meta.get("warnings", [])]
    profile.scalar(_PROFILE_TIME_NANOS, int(rec.meta.get("start_unix_ns", 0)))
    profile.scalar(_PROFILE_DURATION_NANOS, int(rec.meta.get("duration_ns", 0)))
    profile.message(_PROFILE_PERIOD_TYPE, _value_type(strings, weight_kind, "nanoseconds"))
    profile.scalar(_PROFILE_PERIOD, round(rec.interval * 1e9))
    for comment in comments:
        profile.scalar(_PROFILE_COMMENT, comment)
    profile.scalar(_PROFILE_DEFAULT_SAMPLE_TYPE, strings(weight_kind))
    # The string table last: every string above has been interned by now.
    for text in strings.index:
        profile.blob(_PROFILE_STRING_TABLE, text.encode())
    return bytes(profile.buf)


def render(rec: "Recording", path: str) -> bytes:
    return gzip.compress(convert(rec), compresslevel=6, mtime=0)   # 9 costs more, saves little


EXPORTER = Exporter("pprof", (".pb.gz", ".pprof"), "pprof profile (go tool pprof, Pyroscope, "
                    "Parca)", render)
