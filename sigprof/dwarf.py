"""Source lines and inlined frames from a wasm module's own DWARF custom sections.

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
import io
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .wasmfile import ByteReader, WasmFormatError

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


class ModuleDwarf:
    """File, line, column and inlined frames for the addresses of one module."""

    def __init__(self, wasm: bytes):
        from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DWARFInfo, DwarfConfig
        try:
            custom, self.code_start = _wasm_sections(wasm)
        except WasmFormatError as exc:
            raise DwarfError(str(exc)) from None

        def section(name: str) -> Optional[Any]:
            data = custom.get(name)
            if data is None:
                return None
            return DebugSectionDescriptor(io.BytesIO(data), name, 0, len(data), 0)

        names = ["info", "aranges", "abbrev", "frame", None, "str", "loc", "ranges", "line",
                 "pubtypes", "pubnames", "addr", "str_offsets", "line_str", "loclists",
                 "rnglists", "sup", None, "types"]
        self.has_dwarf = ".debug_info" in custom and ".debug_line" in custom
        self._info = DWARFInfo(DwarfConfig(little_endian=True, machine_arch="wasm32",
                                           default_address_size=4),
                               *[section(".debug_" + n) if n else None for n in names])
        self._rows: Optional[Tuple[List[int], List[Tuple[str, int, int, bool]]]] = None
        self._cu_ranges: Optional[List[Tuple[int, int, Any]]] = None

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
                files = _file_names(program, cu)
                for entry in program.get_entries():
                    state = entry.state
                    if state is None:
                        continue
                    # An end of sequence sorts before a row at the same address.
                    rows.append((state.address, 0 if state.end_sequence else 1,
                                 (files.get(state.file, "??"), state.line, state.column,
                                  state.end_sequence)))
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
        line = self.line_at(address)
        if line is None:
            return []
        chain = self._die_chain(address)
        if not chain:
            return [SourceFrame("??", *line)]
        frames = []
        for outer, inner in zip(chain, chain[1:]):
            attrs = inner.attributes
            files = _file_names(self._info.line_program_for_CU(inner.cu), inner.cu)
            call_file = attrs["DW_AT_call_file"].value if "DW_AT_call_file" in attrs else 0
            frames.append(SourceFrame(
                _die_name(outer), files.get(call_file, "??"),
                attrs["DW_AT_call_line"].value if "DW_AT_call_line" in attrs else 0,
                attrs["DW_AT_call_column"].value if "DW_AT_call_column" in attrs else 0,
                _decl_line(outer)))
        frames.append(SourceFrame(_die_name(chain[-1]), *line, _decl_line(chain[-1])))
        return frames

    def _die_chain(self, address: int) -> List[Any]:
        """The subprogram holding ``address``, then the inlined subroutines within it."""
        for lo, hi, cu in self._cus():
            if lo > address:
                break
            if not lo <= address < hi:
                continue
            chain: List[Any] = []
            children = list(cu.get_top_DIE().iter_children())
            while children:
                for die in children:
                    wanted = ("DW_TAG_subprogram",) if not chain else (
                        "DW_TAG_inlined_subroutine", "DW_TAG_lexical_block")
                    if die.tag in wanted and self._contains(die, address):
                        if die.tag != "DW_TAG_lexical_block":
                            chain.append(die)
                        children = list(die.iter_children())
                        break
                else:
                    children = []
            if chain:
                return chain
        return []


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
    map (text offset -> wasm file offset) composed with the wasm's DWARF; results
    cached per text offset, since a profile asks about the same PCs again and again."""

    def __init__(self, address_map: Any, dwarf: ModuleDwarf):
        self._map = address_map
        self._dwarf = dwarf
        self._cache: Dict[int, Tuple[SourceFrame, ...]] = {}

    def frames_at(self, text_offset: int) -> Tuple[SourceFrame, ...]:
        """Outermost first; empty where the code has no wasm position or no DWARF."""
        found = self._cache.get(text_offset)
        if found is None:
            position = self._map.file_position(text_offset)
            found = () if position is None else tuple(
                self._dwarf.frames_at(self._dwarf.code_address(position)))
            self._cache[text_offset] = found
        return found
