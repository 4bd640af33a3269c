"""Source lines and inlined frames from a wasm module's own DWARF custom sections
(or those of the split debug file it names: ``with_external_dwarf``).

A wasm DWARF address is an offset from the start of the code section's
payload (the byte after the section's size); ``code_address`` turns a
wasm-file offset (what ``addrmap`` gives) into one.  pyelftools parses the
sections (``.debug_info``, ``.debug_line``, ...) handed to it as plain
streams with a 32-bit little-endian config; this module builds, once per
module, the sorted line rows and looks up the ``DW_TAG_inlined_subroutine``
tree only for the addresses asked about.  Nothing here imports wasmtime.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import itertools
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .wasmfile import ByteReader, WasmFormatError, uleb128

_CODE_SECTION = 10
_CUSTOM_SECTION = 0


@dataclass(frozen=True)
class SourceFrame:
    """One frame at an address: the function and where in it (0 = unknown line)."""

    function: str
    file: str
    line: int
    column: int
    function_line: int = 0      # where the function is declared (DW_AT_decl_line); 0: unknown


class DwarfError(ValueError):
    """The module's DWARF does not parse."""


def _wasm_sections(wasm: bytes) -> Tuple[Dict[str, bytes], int]:
    """The custom sections by name, and where the code section's payload starts (-1: none)."""
    r = ByteReader(wasm, 8)
    custom: Dict[str, bytes] = {}
    code_start = -1
    while r.pos < len(wasm):
        section, size = r.byte(), r.u32()
        end = r.pos + size
        if section == _CUSTOM_SECTION:
            name = r.name()
            custom.setdefault(name, wasm[r.pos:end])
        elif section == _CODE_SECTION:
            code_start = r.pos
        r.pos = end
    return custom, code_start


# The custom section a module built with its DWARF in a file of its own
# (emscripten's -gseparate-dwarf) names that file by: a length-prefixed URL.
EXTERNAL_DEBUG_INFO = "external_debug_info"


def _custom_section(name: str, payload: bytes) -> bytes:
    body = uleb128(len(name.encode())) + name.encode() + payload
    return bytes([_CUSTOM_SECTION]) + uleb128(len(body)) + body


def with_external_dwarf(wasm: bytes, directory: str) -> Tuple[bytes, Optional[str]]:
    """``wasm`` with the DWARF of the split debug file it names appended as custom
    sections (valid anywhere in a module; the code section, whose start DWARF
    addresses count from, stays where it was), and what went wrong, if anything.

    Only a module without DWARF of its own that names a debug file is changed; a
    relative name is looked up in ``directory`` (the module's own), a URL is not
    fetched.  The debug file must be a wasm file with ``.debug_*`` sections."""
    try:
        custom, _ = read_sections(wasm)
    except DwarfError:
        return wasm, None                  # compiling it says what is wrong
    pointer = custom.get(EXTERNAL_DEBUG_INFO)
    if pointer is None or ".debug_info" in custom:
        return wasm, None
    try:
        r = ByteReader(pointer)
        target = r.take(r.u32()).decode("utf-8")
    except (WasmFormatError, UnicodeDecodeError):
        return wasm, f"its {EXTERNAL_DEBUG_INFO} section is damaged: no source lines"
    if "://" in target:
        return wasm, f"its DWARF is at {target}, which sigprof does not fetch: no source lines"
    path = os.path.join(directory, target)
    try:
        with open(path, "rb") as debug_file:
            debug = debug_file.read()
        debug_sections, _ = _wasm_sections(debug)
    except (OSError, WasmFormatError) as exc:
        return wasm, f"its DWARF file {target} could not be read ({exc}): no source lines"
    dwarf = [_custom_section(name, data) for name, data in debug_sections.items()
             if name.startswith(".debug_")]
    if not dwarf:
        return wasm, f"its DWARF file {target} holds no DWARF: no source lines"
    return wasm + b"".join(dwarf), None


def read_sections(wasm: bytes) -> Tuple[Dict[str, bytes], int]:
    """``_wasm_sections``, a damaged binary raising ``DwarfError``."""
    try:
        return _wasm_sections(wasm)
    except WasmFormatError as exc:
        raise DwarfError(str(exc)) from None


def dwarf_digest(sections: Tuple[Dict[str, bytes], int]) -> Optional[bytes]:
    """What a module's DWARF is identified by (``read_sections``'s answer): a digest
    of its ``.debug_*`` sections and of where its code section starts, which DWARF
    addresses count from -- never of its code, which can be 100 MB -- or None where
    it has no DWARF to read."""
    custom, code_start = sections
    if ".debug_info" not in custom or ".debug_line" not in custom:
        return None
    digest = hashlib.sha256(code_start.to_bytes(8, "little", signed=True))
    for name in sorted(n for n in custom if n.startswith(".debug_")):
        digest.update(name.encode() + b"\0" + len(custom[name]).to_bytes(8, "little"))
        digest.update(custom[name])
    return digest.digest()


class ModuleDwarf:
    """File, line, column and inlined frames for the addresses of one module."""

    def __init__(self, wasm: bytes, sections: Optional[Tuple[Dict[str, bytes], int]] = None):
        """``sections``: ``read_sections(wasm)``, where the caller has read them already."""
        from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DWARFInfo, DwarfConfig
        custom, self.code_start = sections if sections is not None else read_sections(wasm)

        def section(name: str) -> Optional[Any]:
            data = custom.get(name)
            if data is None:
                return None
            return DebugSectionDescriptor(io.BytesIO(data), name, 0, len(data), 0)

        names = ["info", "aranges", "abbrev", "frame", None, "str", "loc", "ranges", "line",
                 "pubtypes", "pubnames", "addr", "str_offsets", "line_str", "loclists",
                 "rnglists", "sup", None, "types"]
        self.has_dwarf = ".debug_info" in custom and ".debug_line" in custom
        self._debug_line = custom.get(".debug_line", b"")
        self._info = DWARFInfo(DwarfConfig(little_endian=True, machine_arch="wasm32",
                                           default_address_size=4),
                               *[section(".debug_" + n) if n else None for n in names])
        self._rows: Optional[Tuple[List[int], List[Tuple[str, int, int, bool]]]] = None
        self._cu_ranges: Optional[List[Tuple[int, int, Any]]] = None
        self._cu_starts: List[int] = []
        self._cu_reach: List[int] = []      # the furthest any span up to this index reaches
        # per CU (by offset), made at its first lookup: its subprograms' address
        # spans by start, and its line program's file names
        self._subprograms: Dict[int, Tuple[List[int], List[Tuple[int, int, Any]]]] = {}
        self._files: Dict[int, Dict[int, str]] = {}
        self._frames: Dict[int, List[SourceFrame]] = {}      # address -> frames_at's answer

    def code_address(self, file_offset: int) -> int:
        """The DWARF address of the instruction at ``file_offset`` in the wasm file."""
        return file_offset - self.code_start

    def _line_rows(self) -> Tuple[List[int], List[Tuple[str, int, int, bool]]]:
        """Every line-table row of every CU, sorted by address; an end of sequence
        is a row that says "no line" (its flag True)."""
        if self._rows is None:
            rows: List[Tuple[int, int, Tuple[str, int, int, bool]]] = []
            for cu in self._info.iter_CUs():
                program = self._info.line_program_for_CU(cu)
                if program is None:
                    continue
                files = self._files_of(cu)
                for address, file, line, column, end_sequence in _line_program_rows(
                        self._debug_line, program.program_start_offset,
                        program.program_end_offset, program.header):
                    # An end of sequence sorts before a row at the same address.
                    rows.append((address, 0 if end_sequence else 1,
                                 (files.get(file, "??"), line, column, end_sequence)))
            rows.sort(key=lambda row: (row[0], row[1]))
            self._rows = ([a for a, _, _ in rows], [r for _, _, r in rows])
        return self._rows

    def line_at(self, address: int) -> Optional[Tuple[str, int, int]]:
        """(file, line, column) of the line-table row covering ``address``."""
        addresses, rows = self._line_rows()
        i = bisect.bisect_right(addresses, address) - 1
        if i < 0 or rows[i][3]:
            return None
        return rows[i][0], rows[i][1], rows[i][2]

    def _cus(self) -> List[Tuple[int, int, Any]]:
        if self._cu_ranges is None:
            spans = []
            for cu in self._info.iter_CUs():
                top = cu.get_top_DIE()
                for lo, hi in self._ranges(top):
                    spans.append((lo, hi, cu))
            self._cu_ranges = sorted(spans, key=lambda s: (s[0], s[1]))
            self._cu_starts = [lo for lo, _, _ in self._cu_ranges]
            self._cu_reach = list(itertools.accumulate((hi for _, hi, _ in self._cu_ranges),
                                                       max))
        return self._cu_ranges

    def _ranges(self, die: Any) -> List[Tuple[int, int]]:
        attrs = die.attributes
        if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
            lo = attrs["DW_AT_low_pc"].value
            high = attrs["DW_AT_high_pc"]
            hi = high.value if high.form == "DW_FORM_addr" else lo + high.value
            return [(lo, hi)]
        if "DW_AT_ranges" in attrs:
            from elftools.dwarf.ranges import BaseAddressEntry
            lists = self._info.range_lists()
            if lists is None:
                return []
            base = attrs["DW_AT_low_pc"].value if "DW_AT_low_pc" in attrs else 0
            top = die.cu.get_top_DIE().attributes
            base = top["DW_AT_low_pc"].value if "DW_AT_low_pc" in top else base
            out = []
            for entry in lists.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=die.cu):
                if isinstance(entry, BaseAddressEntry):
                    base = entry.base_address
                else:
                    out.append((base + entry.begin_offset, base + entry.end_offset))
            return out
        return []

    def _contains(self, die: Any, address: int) -> bool:
        return any(lo <= address < hi for lo, hi in self._ranges(die))

    def frames_at(self, address: int) -> List[SourceFrame]:
        """The frames at ``address``, outermost first: the physical function,
        then each call inlined into it down to the innermost; empty if unknown.
        As ``llvm-symbolizer --inlines`` (which prints them innermost first)."""
        found = self._frames.get(address)
        if found is None:
            found = self._frames[address] = self._frames_at(address)
        return found

    def _frames_at(self, address: int) -> List[SourceFrame]:
        line = self.line_at(address)
        if line is None:
            return []
        chain = self._die_chain(address)
        if not chain:
            return [SourceFrame("??", *line)]
        frames = []
        for outer, inner in zip(chain, chain[1:]):
            attrs = inner.attributes
            files = self._files_of(inner.cu)
            call_file = attrs["DW_AT_call_file"].value if "DW_AT_call_file" in attrs else 0
            frames.append(SourceFrame(
                _die_name(outer), files.get(call_file, "??"),
                attrs["DW_AT_call_line"].value if "DW_AT_call_line" in attrs else 0,
                attrs["DW_AT_call_column"].value if "DW_AT_call_column" in attrs else 0,
                _decl_line(outer)))
        frames.append(SourceFrame(_die_name(chain[-1]), *line, _decl_line(chain[-1])))
        return frames

    def _files_of(self, cu: Any) -> Dict[int, str]:
        found = self._files.get(cu.cu_offset)
        if found is None:
            found = self._files[cu.cu_offset] = _file_names(self._info.line_program_for_CU(cu), cu)
        return found

    def _subprograms_of(self, cu: Any) -> Tuple[List[int], List[Tuple[int, int, Any]]]:
        """The CU's subprograms (its top DIE's children) as address spans by start,
        read once: a lookup is then a bisect, not a walk of every function."""
        found = self._subprograms.get(cu.cu_offset)
        if found is None:
            spans = sorted(((lo, hi, die) for die in cu.get_top_DIE().iter_children()
                            if die.tag == "DW_TAG_subprogram" for lo, hi in self._ranges(die)
                            if hi > lo), key=lambda span: (span[0], span[1]))
            found = self._subprograms[cu.cu_offset] = ([lo for lo, _, _ in spans], spans)
        return found

    def _die_chain(self, address: int) -> List[Any]:
        """The subprogram holding ``address``, then the inlined subroutines within it."""
        cus = self._cus()
        # The CU spans that start at or before ``address``, nearest first: a CU
        # names each of its functions' ranges, so there are as many as functions.
        last = bisect.bisect_right(self._cu_starts, address)
        for k in range(last - 1, -1, -1):
            _, hi, cu = cus[k]
            if not address < hi:
                if self._cu_reach[k] <= address:
                    break                     # no span this early reaches the address
                continue
            starts, spans = self._subprograms_of(cu)
            i = bisect.bisect_right(starts, address) - 1
            if i < 0 or not address < spans[i][1]:    # subprograms do not overlap
                continue
            chain: List[Any] = [spans[i][2]]
            children = list(chain[0].iter_children())
            while children:
                for die in children:
                    if (die.tag in ("DW_TAG_inlined_subroutine", "DW_TAG_lexical_block")
                            and self._contains(die, address)):
                        if die.tag != "DW_TAG_lexical_block":
                            chain.append(die)
                        children = list(die.iter_children())
                        break
                else:
                    children = []
            return chain
        return []


# Standard line-program opcodes (DWARF 5, section 6.2.5.2) and extended ones.
_LNS_COPY, _LNS_ADVANCE_PC, _LNS_ADVANCE_LINE, _LNS_SET_FILE, _LNS_SET_COLUMN = 1, 2, 3, 4, 5
_LNS_CONST_ADD_PC, _LNS_FIXED_ADVANCE_PC = 8, 9
_LNE_END_SEQUENCE, _LNE_SET_ADDRESS = 1, 2


def _line_program_rows(data: bytes, start: int, end: int, header: Any
                       ) -> Iterator[Tuple[int, int, int, int, bool]]:
    """The rows of the line program in ``data[start:end]`` as (address, file, line,
    column, end of sequence): DWARF's line state machine, run here on the bytes
    -- pyelftools' own decoder builds an object per opcode and was most of a big
    module's resolve time.  ``header`` is pyelftools' parse of the program's
    header.  Only what a row says is tracked (no is_stmt, op_index or ISA: wasm
    has none of them that matter here)."""
    min_length = header["minimum_instruction_length"]
    line_base, line_range = header["line_base"], header["line_range"]
    opcode_base = header["opcode_base"]
    operand_counts = list(header["standard_opcode_lengths"])
    r = ByteReader(data, start, end)
    address, file, line, column = 0, 1, 1, 0
    while r.pos < end:
        opcode = r.byte()
        if opcode >= opcode_base:                       # a special opcode: advance and row
            adjusted = opcode - opcode_base
            address += (adjusted // line_range) * min_length
            line += line_base + adjusted % line_range
            yield address, file, line, column, False
        elif opcode == 0:                               # an extended opcode
            length = r.u32()
            after = r.pos + length
            sub = r.byte() if length else 0
            if sub == _LNE_END_SEQUENCE:
                yield address, file, line, column, True
                address, file, line, column = 0, 1, 1, 0
            elif sub == _LNE_SET_ADDRESS:
                address = int.from_bytes(r.take(after - r.pos), "little")
            r.pos = after
        elif opcode == _LNS_COPY:
            yield address, file, line, column, False
        elif opcode == _LNS_ADVANCE_PC:
            address += r.u32() * min_length
        elif opcode == _LNS_ADVANCE_LINE:
            line += r.s33()
        elif opcode == _LNS_SET_FILE:
            file = r.u32()
        elif opcode == _LNS_SET_COLUMN:
            column = r.u32()
        elif opcode == _LNS_CONST_ADD_PC:
            address += ((255 - opcode_base) // line_range) * min_length
        elif opcode == _LNS_FIXED_ADVANCE_PC:
            address += int.from_bytes(r.take(2), "little")
        else:                                           # negate_stmt, set_isa, ...: operands
            for _ in range(operand_counts[opcode - 1] if opcode - 1 < len(operand_counts) else 0):
                r.u32()


def _die_and_origins(die: Any) -> Iterator[Any]:
    """``die``, then the DIEs it refers to as its abstract origin or specification
    (at most 8: a chain that long is damaged, not deep)."""
    for _ in range(8):
        yield die
        attrs = die.attributes
        key = next((k for k in ("DW_AT_abstract_origin", "DW_AT_specification")
                    if k in attrs), None)
        if key is None:
            return
        die = die.get_DIE_from_attribute(key)


def _die_name(die: Any) -> str:
    """A DIE's linkage or plain name, following abstract origins and specifications."""
    for d in _die_and_origins(die):
        attrs = d.attributes
        for key in ("DW_AT_linkage_name", "DW_AT_name"):
            if key in attrs:
                value = attrs[key].value
                return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return "??"


def _decl_line(die: Any) -> int:
    """The line a DIE's function is declared at, following abstract origins; 0: unknown."""
    for d in _die_and_origins(die):
        if "DW_AT_decl_line" in d.attributes:
            return int(d.attributes["DW_AT_decl_line"].value)
    return 0


def _file_names(program: Any, cu: Any) -> Dict[int, str]:
    """Line-program file number -> path, joined with its directory and the CU's
    compilation directory as llvm-symbolizer prints it."""
    header = program.header
    version = header["version"]
    dirs = [d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d)
            for d in header["include_directory"]]
    top = cu.get_top_DIE().attributes
    comp_dir = top["DW_AT_comp_dir"].value.decode("utf-8", "replace") if "DW_AT_comp_dir" in top else ""
    out: Dict[int, str] = {}
    for n, entry in enumerate(header["file_entry"]):
        name = entry.name.decode("utf-8", "replace") if isinstance(entry.name, bytes) else str(entry.name)
        index = entry.dir_index
        if version >= 5:
            directory = dirs[index] if index < len(dirs) else ""
            number = n
        else:
            directory = dirs[index - 1] if 0 < index <= len(dirs) else comp_dir
            number = n + 1
        if not os.path.isabs(directory) and comp_dir:
            directory = os.path.join(comp_dir, directory) if directory else comp_dir
        out[number] = name if os.path.isabs(name) else os.path.join(directory, name)
    return out


class ImageLines:
    """Source frames for text offsets of one compiled module image: its address
    map (text offset -> wasm file offset) composed with the wasm's DWARF, whose
    answers ``ModuleDwarf`` keeps per address (the resolver asks once per offset)."""

    def __init__(self, address_map: Any, dwarf: ModuleDwarf):
        self._map = address_map
        self._dwarf = dwarf

    def frames_at(self, text_offset: int) -> Tuple[SourceFrame, ...]:
        """Outermost first; empty where the code has no wasm position or no DWARF."""
        position = self._map.file_position(text_offset)
        return () if position is None else tuple(
            self._dwarf.frames_at(self._dwarf.code_address(position)))
