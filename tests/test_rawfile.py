"""The raw recording format: round trips, and corrupt input always gives the documented error."""

from __future__ import annotations

import struct
import zlib

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings, strategies as st

import sigprof
from sigprof.export import raw
from sigprof import rawfile
from sigprof.rawfile import RecordingFormatError


@pytest.fixture(scope="module")
def recording_bytes():
    """A real recording with wasm frames, a host frame, pseudo frames and truncation."""
    from conftest import Guest, link_host
    engine = sigprof.engine()
    host, rec = Guest(engine, "host"), Guest(engine, "recursion")
    store = wasmtime.Store(engine)
    ih = link_host(store, host.module)
    ir = wasmtime.Instance(store, rec.module, [])
    with sigprof.profile(store, max_depth=40) as prof:
        ih.exports(store)["run"](store, 4, 3_000_000, 100_000, 0)
        ir.exports(store)["rec"](store, 50, 30_000_000)
    assert prof.samples > 3
    return raw.dumps(prof.recording), prof.recording


def _same(a, b):
    assert dict(a.meta) == dict(b.meta)
    assert a.modules == b.modules
    assert a.host_functions == b.host_functions
    assert a.frames == b.frames
    assert list(a.stack_parent) == list(b.stack_parent)
    assert list(a.stack_frame) == list(b.stack_frame)
    for col in ("time_ns", "cpu_ns", "wall_ns", "stack", "ticks", "flags"):
        assert list(getattr(a.sample_table, col)) == list(getattr(b.sample_table, col))


def test_round_trip_keeps_everything(recording_bytes):
    data, original = recording_bytes
    _same(rawfile.loads(data), original)
    assert raw.dumps(rawfile.loads(data)) == data


def test_every_truncation_is_refused_cleanly(recording_bytes):
    data, _ = recording_bytes
    step = max(1, len(data) // 400)
    for cut in list(range(0, len(data), step)) + [len(data) - 1]:
        with pytest.raises(RecordingFormatError):
            rawfile.loads(data[:cut])


def test_a_newer_major_version_says_so(recording_bytes):
    data, _ = recording_bytes
    newer = bytearray(data)
    newer[8:10] = struct.pack("<H", rawfile.VERSION_MAJOR + 1)
    with pytest.raises(RecordingFormatError, match="newer than this sigprof reads"):
        rawfile.loads(bytes(newer))


def test_unknown_sections_of_a_newer_minor_version_are_skipped(recording_bytes):
    data, original = recording_bytes
    extra = b"ZZZZ" + struct.pack("<Q", 3) + b"abc" + struct.pack("<I", zlib.crc32(b"abc"))
    end = data.rindex(b"END ")
    newer = bytearray(data[:end] + extra + data[end:])
    newer[10:12] = struct.pack("<H", rawfile.VERSION_MINOR + 1)
    _same(rawfile.loads(bytes(newer)), original)


def _sections(data: bytes):
    pos = raw.HEADER.size
    out = []
    while True:
        tag, length = raw.SECTION.unpack_from(data, pos)
        out.append((tag, pos + raw.SECTION.size, length))
        pos += raw.SECTION.size + length + 4
        if tag == b"END ":
            return out


def _with_payload(data: bytes, index: int, payload: bytes) -> bytes:
    """Replace one section's payload and fix its length and checksum."""
    tag, start, length = _sections(data)[index]
    head = data[:start - raw.SECTION.size]
    tail = data[start + length + 4:]
    return (head + raw.SECTION.pack(tag, len(payload)) + payload
            + struct.pack("<I", zlib.crc32(payload)) + tail)


SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@SETTINGS
@given(st.data())
def test_random_damage_loads_or_raises_the_documented_error(recording_bytes, data):
    raw, _ = recording_bytes
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "overwrite"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del buf[pos:pos + data.draw(st.integers(1, 16))]
        else:
            chunk = data.draw(st.binary(min_size=1, max_size=16))
            buf[pos:pos + len(chunk)] = chunk
    try:
        rawfile.loads(bytes(buf))
    except RecordingFormatError:
        pass


@SETTINGS
@given(st.data())
def test_damage_behind_a_valid_checksum_is_still_caught(recording_bytes, data):
    """Corrupt a section's content but fix its checksum: validation must catch it."""
    raw, _ = recording_bytes
    sections = _sections(raw)
    index = data.draw(st.integers(0, len(sections) - 2))
    tag, start, length = sections[index]
    payload = bytearray(raw[start:start + length])
    for _ in range(data.draw(st.integers(1, 6))):
        if not payload:
            break
        pos = data.draw(st.integers(0, len(payload) - 1))
        payload[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()) and payload:
        del payload[data.draw(st.integers(0, len(payload) - 1)):]
    damaged = _with_payload(raw, index, bytes(payload))
    try:
        rec = rawfile.loads(damaged)
    except RecordingFormatError:
        return
    # What loads must be usable: every exporter runs without error.
    rec.to_firefox()
    rec.to_collapsed()
    rec.report()


@SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused(blob):
    with pytest.raises(RecordingFormatError):
        rawfile.loads(blob)


# Every key recording.RecordingMeta declares is checked against its declared type.
@pytest.mark.parametrize("field, value", [("interval_s", "fast"), ("clock", 3),
                                          ("duration_ns", None), ("dropped", True),
                                          ("versions", []), ("use_tick_pc", 1),
                                          ("threads", {}), ("tick_source", 4)])
def test_meta_with_wrong_types_is_refused(recording_bytes, field, value):
    import json
    raw, _ = recording_bytes
    meta = json.loads(raw[_sections(raw)[0][1]:][:_sections(raw)[0][2]])
    meta[field] = value
    damaged = _with_payload(raw, 0, json.dumps(meta).encode())
    with pytest.raises(RecordingFormatError, match=field):
        rawfile.loads(damaged)


def test_samples_must_be_in_time_order_with_positive_weights(recording_bytes):
    from array import array
    raw, _ = recording_bytes
    index = [t for t, _, _ in _sections(raw)].index(b"SMPL")
    _, start, length = _sections(raw)[index]
    payload = bytearray(raw[start:start + length])
    n, = struct.unpack_from("<I", payload, 0)
    times = array("q", bytes(payload[4:4 + 8 * n]))
    times[0], times[1] = times[1] + 1, times[0]
    payload[4:4 + 8 * n] = times.tobytes()
    with pytest.raises(RecordingFormatError, match="time order"):
        rawfile.loads(_with_payload(raw, index, bytes(payload)))
    payload = bytearray(raw[start:start + length])
    cpu = array("q", bytes(payload[4 + 8 * n:4 + 16 * n]))
    cpu[0] = -5
    payload[4 + 8 * n:4 + 16 * n] = cpu.tobytes()
    with pytest.raises(RecordingFormatError, match="negative"):
        rawfile.loads(_with_payload(raw, index, bytes(payload)))


def test_load_reports_the_file_name(tmp_path):
    path = tmp_path / "x.sigprof"
    path.write_bytes(b"SIGPROF\x1a\x01\x00")
    with pytest.raises(RecordingFormatError, match="x.sigprof"):
        sigprof.load(path)
