"""wasmtime's ``.wasmtime.addrmap``: text offset in a module image -> offset in the wasm file.

Cranelift records, for each compiled instruction that came from a wasm
instruction, the byte offset of that instruction in the original wasm binary;
wasmtime stores these as a sorted list of ``(text_offset, file_pos)`` entries,
where each entry covers the text from its own offset up to the next entry's and
``file_pos == NO_POSITION`` marks generated code with no wasm source.  Text
offsets are relative to the image's ``.text`` (as sigprof's frames are).

Two encodings, by the wasmtime that compiled the image
(crates/environ/src/compile/address_map.rs):

* before 47: ``count: u32``, then ``count`` u32 text offsets, then ``count``
  u32 file positions (all little-endian);
* from 47: ``entry_count: u32``, ``block_count: u32``, an index of
  ``(first_offset: u32, block_pos: u32)`` per block, then the block bodies.
  A block holds up to 128 entries; each is a ULEB token ``pc_delta << 1 |
  is_none``, and, unless ``is_none``, the position: the block's first one as
  an absolute ULEB, later ones as SLEB deltas from the previous position.

Decoding happens once per module, for the whole section, into two flat arrays:
lookups are then a bisect.  Nothing here imports wasmtime.
"""

from __future__ import annotations

import bisect
import struct
import sys
from array import array
from typing import Optional, Tuple

from .image import ImageError, ReadMemory, _compiled_by_major, _Sections

NO_POSITION = 0xFFFFFFFF            # wasmtime's FilePos::none()
FIRST_BLOCKED_MAJOR = 47            # the first wasmtime writing the block encoding
_BLOCK_SIZE = 128                   # wasmtime's ADDRMAP_BLOCK_SIZE


class AddrMapError(ValueError):
    """The section does not decode in the format its wasmtime version writes."""


class AddressMap:
    """Sorted ``(text_offset, file_pos)`` entries; ``file_position`` answers one PC."""

    def __init__(self, text_offsets: "array[int]", file_positions: "array[int]"):
        self.text_offsets = text_offsets
        self.file_positions = file_positions

    def __len__(self) -> int:
        return len(self.text_offsets)

    def file_position(self, text_offset: int) -> Optional[int]:
        """The wasm-file offset of the instruction ``text_offset`` was compiled
        from, or None (before the first entry, or generated code)."""
        i = bisect.bisect_right(self.text_offsets, text_offset) - 1
        if i < 0:
            return None
        pos = self.file_positions[i]
        return None if pos == NO_POSITION else pos


def decode(section: bytes, compiled_by_major: int) -> AddressMap:
    """Decode ``.wasmtime.addrmap`` as written by wasmtime ``compiled_by_major``."""
    if compiled_by_major >= FIRST_BLOCKED_MAJOR:
        return _decode_blocked(section)
    return _decode_arrays(section)


def read_address_map(read: ReadMemory, start: int, end: int) -> Optional[AddressMap]:
    """The address map of the module image mapped at ``[start, end)``, or None
    if it has none (wasmtime configured without address maps)."""
    try:
        sections = _Sections(read, start, end - start)
        index = sections.index.get(".wasmtime.addrmap")
        if index is None:
            return None
        return decode(sections.data(index), _compiled_by_major(sections))
    except struct.error as exc:
        raise ImageError(f"cannot parse module image: {exc}") from None


def _decode_arrays(section: bytes) -> AddressMap:
    if len(section) < 4:
        raise AddrMapError("address map shorter than its count")
    count, = struct.unpack_from("<I", section, 0)
    if 4 + 8 * count != len(section):
        raise AddrMapError(f"address map of {len(section)} bytes cannot hold {count} entries")
    offsets = array("I", section[4:4 + 4 * count])
    positions = array("I", section[4 + 4 * count:])
    if sys.byteorder == "big":
        offsets.byteswap()
        positions.byteswap()
    return AddressMap(offsets, positions)


def _decode_blocked(section: bytes) -> AddressMap:
    if len(section) < 8:
        raise AddrMapError("address map shorter than its header")
    entries, blocks = struct.unpack_from("<II", section, 0)
    bodies = 8 + 8 * blocks
    if bodies > len(section) or blocks != -(-entries // _BLOCK_SIZE):
        raise AddrMapError(f"address map header ({entries} entries, {blocks} blocks) "
                           f"does not fit its {len(section)} bytes")
    offsets, positions = array("I"), array("I")
    for block in range(blocks):
        first, at = struct.unpack_from("<II", section, 8 + 8 * block)
        pc, pos = first, -1
        at += bodies
        for _ in range(min(_BLOCK_SIZE, entries - block * _BLOCK_SIZE)):
            token, at = _uleb(section, at)
            pc += token >> 1
            if token & 1:
                offsets.append(pc)
                positions.append(NO_POSITION)
                continue
            if pos < 0:
                pos, at = _uleb(section, at)
            else:
                delta, at = _sleb(section, at)
                pos += delta
            if not 0 <= pos < NO_POSITION or pc > 0xFFFFFFFF:
                raise AddrMapError("address map entry outside 32 bits")
            offsets.append(pc)
            positions.append(pos)
    return AddressMap(offsets, positions)


def _uleb(data: bytes, at: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise AddrMapError("address map ends inside a LEB128 number")
        b = data[at]
        at += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, at


def _sleb(data: bytes, at: int) -> Tuple[int, int]:
    start = at
    value, at = _uleb(data, at)
    bits = 7 * (at - start)
    if data[at - 1] & 0x40:
        value -= 1 << bits
    return value, at
