"""wasmtime's .wasmtime.addrmap in both encodings (before 47: arrays; from 47: delta blocks)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sigprof import frames
from sigprof._wasmtime import addrmap, image as symbols
from sigprof.wasmfile import ByteReader

GUESTS = Path(__file__).parent / "guests"
NONE = addrmap.NO_POSITION

# recursion.wat compiled by wasmtime 44 and 47 (tests/guests/addrmap_wt*.cwasm,
# made with `Module(engine, wasm).serialize()` in /work/venvs/wt44.0.0 and
# wt47.0.1); both cranelifts emit the same code for it, so both sections must
# decode to these entries.
RECURSION_ENTRIES = [
    (0, NONE), (28, 44), (36, 57), (42, 60), (47, NONE), (53, 63), (58, NONE), (64, 48),
    (69, 64), (74, NONE), (96, NONE), (100, 67), (105, NONE), (125, 100), (133, 105)]


def _image(version: int) -> bytes:
    return (GUESTS / f"addrmap_wt{version}.cwasm").read_bytes()


def _function_bodies(wasm: bytes) -> list[tuple[int, int]]:
    """[start, end) in the file of each defined function's body."""
    r = ByteReader(wasm, 8)
    while r.pos < len(wasm):
        section, size = r.byte(), r.u32()
        if section != 10:
            r.take(size)
            continue
        bodies = []
        for _ in range(r.u32()):
            length = r.u32()
            bodies.append((r.pos, r.pos + length))
            r.take(length)
        return bodies
    return []


@pytest.mark.parametrize("version", [44, 47])
def test_both_encodings_decode_to_the_same_entries(version):
    data = _image(version)
    sections = symbols._Sections(lambda a, n: data[a:a + n], 0, len(data))
    assert symbols._compiled_by_major(sections) == version
    amap = addrmap.read_address_map(lambda a, n: data[a:a + n], 0, len(data))
    assert amap is not None
    assert list(zip(amap.text_offsets, amap.file_positions)) == RECURSION_ENTRIES


@pytest.mark.parametrize("version", [44, 47])
def test_each_function_maps_into_its_own_body(version):
    data = _image(version)
    read = lambda a, n: data[a:a + n]  # noqa: E731
    amap = addrmap.read_address_map(read, 0, len(data))
    table = symbols.read_image(read, 0, len(data)).symbols
    bodies = _function_bodies((GUESTS / "addrmap.wasm").read_bytes())
    checked = 0
    for i in range(len(table)):
        f = table.function_at(i)
        if f.role != frames.ROLE_WASM:
            continue
        lo, hi = bodies[f.index]
        for pc in range(f.start, f.start + f.size):
            pos = amap.file_position(pc)
            if pos is not None:
                assert lo <= pos < hi, (f.name, pc, pos)
                checked += 1
    assert checked > 0


def test_lookup_covers_up_to_the_next_entry():
    amap = addrmap.decode(_image_section(47), 47)
    assert amap.file_position(27) is None        # generated prologue
    assert amap.file_position(28) == 44
    assert amap.file_position(35) == 44
    assert amap.file_position(36) == 57
    assert amap.file_position(10**6) == 105      # the last entry covers the rest


def _image_section(version: int) -> bytes:
    data = _image(version)
    sections = symbols._Sections(lambda a, n: data[a:a + n], 0, len(data))
    return sections.data(sections.index[".wasmtime.addrmap"])


def _uleb(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(0x80 | value & 0x7F)
        value >>= 7
    return bytes(out + bytes([value]))


def _sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            return bytes(out + bytes([byte]))
        out.append(byte | 0x80)


def _encode_blocked(entries: list[tuple[int, int]]) -> bytes:
    """wasmtime 47's AddressMapSection::seal_block/finish, transcribed."""
    index, bodies = bytearray(), bytearray()
    for b in range(0, len(entries), 128):
        block = entries[b:b + 128]
        index += struct.pack("<II", block[0][0], len(bodies))
        prev_pc, prev_pos = block[0][0], None
        for pc, pos in block:
            bodies += _uleb((pc - prev_pc) << 1 | (pos == NONE))
            prev_pc = pc
            if pos == NONE:
                continue
            bodies += _uleb(pos) if prev_pos is None else _sleb(pos - prev_pos)
            prev_pos = pos
    return struct.pack("<II", len(entries), len(index) // 8) + bytes(index) + bytes(bodies)


def _encode_arrays(entries: list[tuple[int, int]]) -> bytes:
    return (struct.pack("<I", len(entries)) + b"".join(struct.pack("<I", pc) for pc, _ in entries)
            + b"".join(struct.pack("<I", pos) for _, pos in entries))


def test_many_blocks_with_backward_positions_and_gaps():
    # As wasmtime's own many_blocks test: forward and backward moves, none
    # entries at block boundaries, big deltas that need multi-byte LEBs.
    entries = [(i * 3 + (i // 300) * 100_000,
                NONE if i % 3 == 0 else 20_000 + i if i % 3 == 1 else 20_000 - i)
               for i in range(1000)]
    for version, data in ((47, _encode_blocked(entries)), (46, _encode_arrays(entries))):
        amap = addrmap.decode(data, version)
        assert list(zip(amap.text_offsets, amap.file_positions)) == entries
        for pc, pos in entries:
            assert amap.file_position(pc + 1) == (None if pos == NONE else pos)


@pytest.mark.parametrize("version,data", [
    (47, b"\x01\0\0\0"),                                   # header cut short
    (47, struct.pack("<II", 5, 2) + b"\0" * 16),           # 5 entries are one block
    (47, struct.pack("<IIII", 2, 1, 0, 0) + b"\x02"),      # body ends mid-entry
    (47, struct.pack("<IIII", 1, 1, 0, 0) + b"\x80"),      # LEB runs off the end
    (44, struct.pack("<I", 3) + b"\0" * 8),                # count larger than the arrays
])
def test_malformed_sections_raise_one_error_type(version, data):
    with pytest.raises(addrmap.AddrMapError):
        addrmap.decode(data, version)


def test_the_running_wasmtime_writes_a_map_that_decodes():
    wasmtime = pytest.importorskip("wasmtime")
    wasm = (GUESTS / "addrmap.wasm").read_bytes()
    image = wasmtime.Module(wasmtime.Engine(), wasm).serialize()
    read = lambda a, n: image[a:a + n]  # noqa: E731
    amap = addrmap.read_address_map(read, 0, len(image))
    assert amap is not None and len(amap) > 0
    bodies = _function_bodies(wasm)
    positions = {p for p in amap.file_positions if p != NONE}
    assert positions and all(any(lo <= p < hi for lo, hi in bodies) for p in positions)
