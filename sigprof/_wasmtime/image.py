"""Module images -> function tables, read straight from memory, only as far as needed.

wasmtime compiles each module into an ELF object that it maps into memory
as-is (``wasmtime_module_image_range`` gives its bounds).  Its ``.symtab``
names every function of the ``.text`` section:

* ``wasm[M]::function[N]::NAME`` (or without ``::NAME``) -- guest function N;
* ``wasm[M]::array_to_wasm_trampoline[N]`` -- host -> guest entry;
* ``signatures[S]::wasm_to_array_trampoline`` -- guest -> host exit;
* ``wasmtime_builtin_*`` -- runtime helpers (the epoch check lands in one).

So a raw PC resolves exactly: which image (module), which function, and its
offset -- with no debug info and no guessing.  Offsets are relative to the
start of ``.text``; they are what the profile stores, never host addresses.

Nothing here runs before the guest does: after the run, ``read_image`` reads
the ELF header, the section headers, ``.symtab`` and its string table (and
``.wasmtime.info`` for the module's name) straight from the mapped image --
never a copy of the whole image -- into flat arrays.  A ``Function`` object
(and the scan of its code for epoch checks) is made only when a sample's PC
looks it up, so a 100k-function module costs what its symbol table costs to
read, and a recording holds only the functions its samples reference.  Every
offset and size read from the image is checked against the image's bounds.

Module names: given by the user, else recovered from the module's name
section as wasmtime stores it (see ``_name_from_info``), else a stable
placeholder derived from a digest of the code.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import struct
from array import array
from operator import itemgetter
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..frames import (ROLE_BUILTIN, ROLE_ENTRY, ROLE_EXIT, ROLE_OTHER, ROLE_WASM, Function,
                      ModuleSymbols, unnamed_function)
from ..wasmfile import ByteReader, WasmFormatError, WasmInfo, uleb128

_FUNCTION_RE = re.compile(r"^wasm\[(\d+)\]::function\[(\d+)\](?:::(.*))?$", re.S)
_ENTRY_RE = re.compile(r"^wasm\[\d+\]::array_to_wasm_trampoline\[(\d+)\]$")
_EPOCH_BUILTIN = b"wasmtime_builtin_new_epoch"
# wasmtime cuts the name in a function's ELF symbol at this many characters (38-50)
ELF_NAME_LIMIT = 96

ReadMemory = Callable[[int, int], bytes]


class ImageError(ValueError):
    """The bytes are not a wasmtime compiled-module image."""


def _display_name(symbol: str) -> Tuple[str, int, str]:
    m = _FUNCTION_RE.match(symbol)
    if m:
        index = int(m.group(2))
        name = m.group(3) or unnamed_function(index)
        return name, index, ROLE_WASM
    if "array_to_wasm_trampoline" in symbol:
        return symbol, -1, ROLE_ENTRY
    if "wasm_to_array_trampoline" in symbol:
        return symbol, -1, ROLE_EXIT
    if symbol.startswith("wasmtime_builtin"):
        return symbol, -1, ROLE_BUILTIN
    return symbol, -1, ROLE_OTHER


# --- reading the ELF image ------------------------------------------------------

_EHDR = struct.Struct("<4sBBBBBxxxxxxxHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_STT_FUNC = 2


class _Sections:
    """The section headers of an ELF64 little-endian image at ``start`` (bounds-checked)."""

    def __init__(self, read: ReadMemory, start: int, size: int):
        self.read, self.start, self.size = read, start, size
        if size < _EHDR.size:
            raise ImageError("not a wasmtime module image (too small)")
        h = _EHDR.unpack(read(start, _EHDR.size))
        if h[0] != b"\x7fELF" or h[1] != 2 or h[2] != 1:
            raise ImageError("not a wasmtime module image (not a 64-bit little-endian ELF)")
        shoff, shentsize, shnum, shstrndx = h[11], h[16], h[17], h[18]
        if shentsize != _SHDR.size or not 0 < shnum < 65536 or shstrndx >= shnum:
            raise ImageError("cannot parse module image: bad section header table")
        raw = self._bytes(shoff, shnum * shentsize)
        self.headers = [_SHDR.unpack_from(raw, i * _SHDR.size) for i in range(shnum)]
        names = self.data(shstrndx)
        self.index: Dict[str, int] = {}
        for i, hdr in enumerate(self.headers):
            end = names.find(b"\0", hdr[0])
            if end >= 0:
                self.index.setdefault(names[hdr[0]:end].decode("utf-8", "replace"), i)

    def _bytes(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ImageError("cannot parse module image: a section lies outside the image")
        return self.read(self.start + offset, size)

    def offset_size(self, i: int) -> Tuple[int, int]:
        hdr = self.headers[i]
        if hdr[4] + hdr[5] > self.size:
            raise ImageError("cannot parse module image: a section lies outside the image")
        return hdr[4], hdr[5]

    def data(self, i: int) -> bytes:
        return self._bytes(*self.offset_size(i))


class SymbolTable:
    """One live image's functions as flat arrays; ``Function`` objects made on lookup.

    A guest function's name, in order of preference: the names a wasm binary
    gives (``names``: the module's own file, or a build of it with names); the
    module's name section as wasmtime keeps it (``.name.wasm``: names as
    written, spaces and all, found by wasmtime's own table); wasmtime's ELF
    symbol (which turns characters it does not allow into ``?`` and cuts long
    names short); for an unnamed function, its export name -- the
    module's own (``.wasmtime.info``), else the binary's.
    """

    def __init__(self, name: str, text_offset: int, text_size: int, starts: array[int],
                 sizes: array[int], name_offsets: array[int], strtab: bytes,
                 epoch_builtin: Optional[int], read_code: Callable[[int, int], bytes],
                 digest: Callable[[], str], name_data: Callable[[], bytes],
                 names: Optional[WasmInfo] = None,
                 info_data: Callable[[], Tuple[bytes, bool]] = lambda: (b"", True),
                 component_part: bool = False):
        self.name = name
        self.component_part = component_part     # one core module of a component's image
        self.text_offset = text_offset
        self.text_size = text_size
        self._starts, self._sizes, self._name_offsets = starts, sizes, name_offsets
        self._strtab = strtab
        self._epoch_builtin = epoch_builtin
        self._read_code = read_code
        self._digest = digest
        self._name_data = name_data
        self._names = names
        self._info_data = info_data
        self._section_names: Optional[Dict[int, str]] = None
        self._exports: Optional[Dict[int, str]] = None
        self._made: Dict[int, Function] = {}

    def __len__(self) -> int:
        return len(self._starts)

    def lookup(self, offset: int) -> Optional[Function]:
        """The function whose code contains ``offset``, if any."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0 or not self._starts[i] <= offset < self._starts[i] + max(self._sizes[i], 1):
            return None
        f = self._made.get(i)
        if f is None:
            f = self._made[i] = self._function(i)
        return f

    def function_at(self, i: int) -> Function:
        """The ``i``-th function by address (for listing a whole table)."""
        return self.lookup(self._starts[i])  # type: ignore[return-value]

    def _symbol(self, i: int) -> str:
        at = self._name_offsets[i]
        end = self._strtab.find(b"\0", at)
        return self._strtab[at:end if end >= 0 else len(self._strtab)].decode("utf-8", "replace")

    def _function(self, i: int) -> Function:
        start, size = self._starts[i], self._sizes[i]
        display, index, role = _display_name(self._symbol(i))
        if role == ROLE_WASM:
            display = self._guest_name(index, display)
        checks: Tuple[int, ...] = ()
        if role == ROLE_WASM and self._epoch_builtin is not None:
            checks = epoch_checks(self._read_code(start, size), 0, size,
                                  self._epoch_builtin - start)
        return Function(start, size, display, index, role, checks)

    def _guest_name(self, index: int, symbol_name: str) -> str:
        unnamed = symbol_name == unnamed_function(index)
        if self._names is not None:
            given = self._names.function_names.get(index)
            if given:
                return given
            unnamed = True                    # that build names it not: neither do we
        elif "?" in symbol_name or len(symbol_name) >= ELF_NAME_LIMIT:
            symbol_name = self._recovered_names().get(index, symbol_name)
        if unnamed:
            exported = self.exported_functions().get(index)
            if exported is None and self._names is not None:
                exported = self._names.exported_functions.get(index)
            return exported or unnamed_function(index)
        return symbol_name

    def function_indices(self) -> List[int]:
        """The wasm indices of the module's defined functions (each has code here)."""
        return sorted(index for index, _, _ in self.function_ranges())

    def function_ranges(self) -> List[Tuple[int, int, int]]:
        """Each defined function's (wasm index, .text offset, size), by address."""
        found = []
        for i in range(len(self._starts)):
            match = _FUNCTION_RE.match(self._symbol(i))
            if match:
                found.append((int(match.group(2)), self._starts[i], self._sizes[i]))
        return found

    def exported_functions(self) -> Dict[int, str]:
        """Function index -> export name, as the compiled module keeps its exports.

        Read from wasmtime's own metadata (``_exports_from_info``), so checked here
        against the image: every exported function is entered from the host, so it
        has an entry trampoline of its index; if any has none, the layout was not
        what the reader expects and no export names are used."""
        if self._exports is None:
            exports = _exports_from_info(*self._info_data())
            entries = set()
            for i in range(len(self._starts)):
                match = _ENTRY_RE.match(self._symbol(i))
                if match:
                    entries.add(int(match.group(1)))
            self._exports = exports if set(exports) <= entries else {}
        return self._exports

    def _recovered_names(self) -> Dict[int, str]:
        """Names as written, from ``.name.wasm``, for the functions whose ELF name
        wasmtime changed (it turns a run of characters it does not allow into one
        ``?`` and cuts a name at ``ELF_NAME_LIMIT`` characters): wasmtime's own
        table of where each name lies (``function_name_table``), else the
        in-order match (``_names_in_order``)."""
        if self._section_names is None:
            named = []
            for i in range(len(self._starts)):
                match = _FUNCTION_RE.match(self._symbol(i))
                if match and match.group(3):
                    named.append((int(match.group(1)), int(match.group(2)), match.group(3)))
            data = self._name_data()
            names: Optional[Dict[int, str]] = None
            if named and len({module for module, _, _ in named}) == 1:   # a core module

                def decoded(table: Dict[int, Tuple[int, int]]) -> Dict[int, str]:
                    return {index: data[at:at + length].decode("utf-8", "replace")
                            for index, (at, length) in table.items()}

                def made_from(table: Dict[int, Tuple[int, int]]) -> bool:
                    """The table these symbols were made with: each symbol's name
                    begins with its table name up to the symbol's first ``?``."""
                    given = decoded(table)
                    return all(given.get(index, "").startswith(elf.split("?")[0])
                               for _, index, elf in named)

                table = function_name_table(self._info_data()[0], len(data),
                                            max(index for _, index, _ in named),
                                            whole=not self.component_part, fits=made_from,
                                            names_of=decoded)
                if table is not None:
                    names = decoded(table)
            self._section_names = names if names is not None else _names_in_order(
                [(index, elf) for _, index, elf in named], data)
        return self._section_names

    def referenced(self) -> ModuleSymbols:
        """What a recording keeps: the functions looked up so far, and the module's identity."""
        functions = tuple(sorted(self._made.values(), key=lambda f: (f.start, f.size)))
        return ModuleSymbols(self.name, self._digest(), self.text_size, functions)


@dataclass(frozen=True)
class ParsedImage:
    text_offset: int               # where .text starts within the image
    symbols: SymbolTable
    name_hint: Optional[str]       # the module's own name, if recovered


def read_image(read: ReadMemory, start: int, end: int, name: Optional[str] = None,
               names: Optional[WasmInfo] = None) -> ParsedImage:
    """Read the function table of the image mapped at ``[start, end)``.

    ``read(address, size)`` copies memory.  ``name`` overrides the recovered module
    name; ``names`` (a wasm binary's) the function names.
    """
    try:
        sections = _Sections(read, start, end - start)
        if ".wasmtime.engine" not in sections.index:
            raise ImageError("not a wasmtime module image (no .wasmtime.engine section)")
        if ".text" not in sections.index or ".symtab" not in sections.index:
            raise ImageError("module image has no .text or .symtab")
        text_index = sections.index[".text"]
        text_offset, text_size = sections.offset_size(text_index)
        symtab_index = sections.index[".symtab"]
        strtab_index = sections.headers[symtab_index][6]
        if strtab_index >= len(sections.headers):
            raise ImageError("cannot parse module image: bad string table link")
        strtab = sections.data(strtab_index)
        symtab = sections.data(symtab_index)
        at = strtab.find(b"\0" + _EPOCH_BUILTIN + b"\0")
        builtin_name = at + 1 if at >= 0 else -1
        # Each 24-byte entry as three little-endian words: st_name | st_info << 32 |
        # st_other << 40 | st_shndx << 48, then st_value, then st_size.
        entries = len(symtab) // _SYM.size
        words = memoryview(symtab[:entries * _SYM.size]).cast("Q")
        first = words[0::3].tolist()
        values = words[1::3].tolist()
        sizes = words[2::3].tolist()
        keep = [i for i, w in enumerate(first)
                if (w >> 32) & 0xF == _STT_FUNC and w >> 48 == text_index]
        keep.sort(key=values.__getitem__)          # by address
        starts, lengths = _pick(values, keep), _pick(sizes, keep)
        name_offsets = [w & 0xFFFFFFFF for w in _pick(first, keep)]
        epoch_builtin = next((starts[k] for k, at in enumerate(name_offsets)
                              if at == builtin_name), None)
        pooled = _compiled_by_major(sections) >= _FIRST_POOLED_INFO_MAJOR
        info = sections.index.get(".wasmtime.info")
        hint = _name_from_info(sections.data(info), pooled) if info is not None else None
        name_index = sections.index.get(".name.wasm")
    except struct.error as exc:
        raise ImageError(f"cannot parse module image: {exc}") from None
    text_start = start + text_offset

    def read_code(offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > text_size:
            return b""
        return read(text_start + offset, size)

    def digest() -> str:
        # The compiled code's identity: its symbol table (every function's name,
        # offset and size) and its size -- a few MB where .text can be 100.
        return hashlib.sha256(symtab + strtab + text_size.to_bytes(8, "little")).hexdigest()

    def name_data() -> bytes:
        return sections.data(name_index) if name_index is not None else b""

    def info_data() -> Tuple[bytes, bool]:
        return (sections.data(info) if info is not None else b""), pooled

    final = name or (names.module_name if names else None) or hint or f"wasm-{digest()[:8]}"
    table = SymbolTable(final, text_offset, text_size, array("Q", starts), array("Q", lengths),
                        array("I", name_offsets), strtab, epoch_builtin, read_code, digest,
                        name_data, names, info_data)
    return ParsedImage(text_offset, table, hint)


def _pick(column: List[int], rows: List[int]) -> List[int]:
    """``[column[i] for i in rows]``, in C."""
    if len(rows) < 2:
        return [column[i] for i in rows]
    return list(itemgetter(*rows)(column))


def epoch_checks(text: bytes, start: int, size: int, builtin: int) -> Tuple[int, ...]:
    """Return-address offsets of the direct calls to the epoch builtin in a function.

    Cranelift compiles each epoch check (function entry, loop headers) to an
    inline compare and an out-of-line ``call rel32`` to the module's
    ``wasmtime_builtin_new_epoch`` trampoline; the slow paths are laid out in
    the order the checks were made, so the entry check comes first.  A byte
    0xE8 whose 32-bit displacement lands exactly on the builtin is such a
    call.  (x86-64 code; on other architectures no checks are found and the
    tick-PC correction is simply not applied.)
    """
    sites = []
    find = text.find
    end = min(start + size, len(text)) - 4
    i = find(b"\xE8", start, end)
    while i >= 0:
        rel, = struct.unpack_from("<i", text, i + 1)
        if i + 5 + rel == builtin:
            sites.append(i + 5 - start)
        i = find(b"\xE8", i + 1, end)
    return tuple(sites)


# wasmtime's own serialisation (postcard) of a compiled module's metadata.  Its
# strings are inline (a varint length, then UTF-8) up to wasmtime 42; from 43 they
# are gathered into a string pool at the front and referred to by 1-based index.
_FIRST_POOLED_INFO_MAJOR = 43


def _compiled_by_major(sections: _Sections) -> int:
    """The major version of the wasmtime that compiled the image, or -1.

    ``.wasmtime.engine`` begins with the module-version strategy (0: wasmtime's
    own version) and that version as a postcard string, e.g. ``"38"``."""
    index = sections.index.get(".wasmtime.engine")
    try:
        r = ByteReader(sections.data(index) if index is not None else b"")
        if r.byte() != 0:
            return -1
        digits = r.take(r.u32()).split(b".", 1)[0]
    except (WasmFormatError, ImageError):
        return -1
    return int(digits) if digits.isdigit() else -1


def _name_from_info(data: bytes, pooled: bool) -> Optional[str]:
    """The module's name-section name from ``.wasmtime.info``.

    The section begins with a zero byte, then (``pooled``) the string pool -- a
    varint count of length-prefixed strings -- and the module name as an
    optional index into it, or (inline) the name as an optional string.
    (Postcard's varints are unsigned LEB128, as in wasm.)  This layout is
    wasmtime's internal detail, checked against each release by the tests;
    anything that does not fit returns None and the caller falls back to a
    placeholder.
    """
    try:
        return _InfoReader(data, pooled).head()
    except (WasmFormatError, UnicodeDecodeError):
        return None


class _InfoReader:
    """Reads ``.wasmtime.info``'s strings in either layout (see ``_name_from_info``)."""

    def __init__(self, data: bytes, pooled: bool):
        self.r = ByteReader(data)
        self.pooled = pooled
        self.pool: List[str] = []

    def head(self) -> Optional[str]:
        """Past the pool (if any) and the module name; returns the name."""
        r = self.r
        if r.byte() != 0:
            raise WasmFormatError("not a module's metadata")
        if self.pooled:
            count = r.u32()
            if count > 1_000_000:
                raise WasmFormatError("implausible string pool")
            self.pool = [r.take(r.u32()).decode("utf-8") for _ in range(count)]
        present = r.byte()
        if present not in (0, 1):
            raise WasmFormatError("not an optional name")
        return (self.string() or None) if present else None

    def string(self) -> str:
        r = self.r
        if not self.pooled:
            return r.take(r.u32()).decode("utf-8")
        index = r.u32()
        if not 1 <= index <= len(self.pool):
            raise WasmFormatError("string outside the pool")
        return self.pool[index - 1]


_ENTITY_FUNCTION = 0        # wasmtime's EntityIndex::Function


def _exports_from_info(data: bytes, pooled: bool) -> Dict[int, str]:
    """Function index -> its first export name, from ``.wasmtime.info``.

    After the pool and the name (``_InfoReader.head``) come the module's
    initializers -- each an import: variant 0, two strings (module, field) and an
    entity index (kind varint, index varint) -- then its exports: a count, and per
    export a string and an entity index.  wasmtime's internal layout again:
    anything that does not fit gives no names, and the caller checks the indices
    against the image.
    """
    try:
        info = _InfoReader(data, pooled)
        info.head()
        r = info.r
        for _ in range(r.u32()):
            if r.byte() != 0:                  # the one initializer kind: an import
                return {}
            info.string(), info.string()
            r.u32(), r.u32()
        out: Dict[int, str] = {}
        for _ in range(r.u32()):
            name = info.string()
            kind, index = r.u32(), r.u32()
            if kind == _ENTITY_FUNCTION:
                out.setdefault(index, name)
        return out
    except (WasmFormatError, UnicodeDecodeError):
        return {}


def _names_in_order(named: List[Tuple[int, str]], data: bytes) -> Dict[int, str]:
    """The fallback where wasmtime's table is not found: ``.name.wasm`` holds every
    named function's name, concatenated in index order -- imported functions'
    first (imports take the lowest indices), though only defined functions have
    ELF symbols.  Where each ELF name has as many characters as its name, with
    ``?`` for each character wasmtime replaced, the defined functions' names are
    the last ``sum(len(ELF names))`` characters, matched in order; if any
    character disagrees the ELF names are kept."""
    text = data.decode("utf-8", "replace")
    pos = len(text) - sum(len(elf) for _, elf in named)
    if pos < 0:
        return {}
    recovered: Dict[int, str] = {}
    for index, elf in sorted(named):
        real = text[pos:pos + len(elf)]
        if len(real) != len(elf) or any(e != "?" and e != c for e, c in zip(elf, real)):
            return {}
        recovered[index] = real
        pos += len(elf)
    return recovered


# A varint (postcard's unsigned LEB128): continuation bytes, then a last byte < 0x80.
_VARINT = rb"[\x80-\xff]{0,4}[\x00-\x7f]"


def _varint_before(data: bytes, end: int) -> Optional[Tuple[int, int]]:
    """The varint that ends at ``end`` read backwards, as (value, its start): its
    last byte is below 0x80 and the bytes before it in it are not, so where one
    ends is where the one before it ends too."""
    last = end - 1
    if last < 0 or data[last] >= 0x80:
        return None
    start = last
    while start > 0 and last - start < 4 and data[start - 1] >= 0x80:
        start -= 1
    value = 0
    for byte in reversed(data[start:end]):
        value = (value << 7) | (byte & 0x7F)
    return value, start


def function_name_table(info: bytes, name_data_size: int, last_named: int,
                        whole: bool = True,
                        fits: Callable[[Dict[int, Tuple[int, int]]], bool] = lambda table: True,
                        names_of: Callable[[Dict[int, Tuple[int, int]]], object] = lambda table: table
                        ) -> Optional[Dict[int, Tuple[int, int]]]:
    """wasmtime's table of the module's function names, from ``.wasmtime.info``:
    function index -> (offset, length) of its name in ``.name.wasm``.

    wasmtime writes the table (``CompiledModuleInfo::func_names``, a postcard list
    of (index, offset, length) by index) after the whole ``Module``, whose layout
    differs by release, so it is found rather than parsed to: a module's names
    are one span of ``.name.wasm`` in index order, so the table's last entry is
    the highest-indexed named function (``last_named``, which the ELF symbols
    tell), and read backwards from there entry by entry its lengths and offsets
    must chain down and its indices fall, to a point preceded by the entry count.
    A core module's image holds one table, whose span is the whole section from 0
    (``whole``); a component's holds one per core module, their spans in module
    order across the one section, so a part's table may start and end anywhere
    (and the longest reading of each place is taken).  A place that reads so and
    ``fits`` (the caller's check against the symbols) is the table; none, or two
    whose ``names_of`` differ (two core modules of one component with the same
    names are one answer), is None, and the caller keeps what it had.  Checked against
    38.0.0, 44.0.0, 47.0.1 and 50.0.1."""
    if name_data_size <= 0:
        return None
    found: Optional[Dict[int, Tuple[int, int]]] = None
    last = re.compile(re.escape(uleb128(last_named)) + b"(?=(" + _VARINT + _VARINT + b"))")
    for match in last.finditer(info):
        read = _table_ending_at(info, match.end() + len(match.group(1)),
                                name_data_size if whole else None)
        if read is None or (whole and read[0] != 0) or last_named not in read[1]:
            continue
        table = read[1]
        if max(at + length for at, length in table.values()) > name_data_size or not fits(table):
            continue
        if found is not None and names_of(found) != names_of(table):
            return None                       # ambiguous: trust neither
        found = table
    return found


def _table_ending_at(info: bytes, end: int, names_end: Optional[int]
                     ) -> Optional[Tuple[int, Dict[int, Tuple[int, int]]]]:
    """The longest table whose entries end at byte ``end`` of ``info`` and whose
    names end at ``names_end`` (None: wherever its last entry says), as (where its
    first name starts, the table)."""
    entries: List[Tuple[int, int, int]] = []
    longest = 0                       # entries in the longest reading with its count before it
    expected_end, pos = names_end, end
    while expected_end is None or expected_end > 0:
        fields = []
        for _ in range(3):
            read = _varint_before(info, pos)
            if read is None:
                break
            fields.append(read[0])
            pos = read[1]
        if len(fields) < 3:
            break
        length, offset, index = fields
        if expected_end is None:
            expected_end = offset + length
        if offset + length != expected_end or (entries and index >= entries[-1][0]):
            break
        entries.append((index, offset, length))
        expected_end = offset
        count = _varint_before(info, pos)
        if count is not None and count[0] == len(entries):
            longest = len(entries)
    if not longest:
        return None
    return entries[longest - 1][1], {index: (offset, length)
                                     for index, offset, length in entries[:longest]}


# --- live images: address ranges in this process -------------------------------

@dataclass(frozen=True)
class LiveImage:
    """A module image mapped in this process (host addresses: never saved)."""

    text_start: int
    text_end: int
    symbols: "SymbolTable | ModuleSymbols"   # anything with .name and .lookup(offset)
    allowed: bool            # named in the profile, or collapsed to an opaque frame


def image_from_memory(start: int, end: int, name: Optional[str], allowed: bool,
                      read_memory: ReadMemory, names: Optional[WasmInfo] = None) -> LiveImage:
    parsed = read_image(read_memory, start, end, name, names)
    text_start = start + parsed.text_offset
    return LiveImage(text_start, text_start + parsed.symbols.text_size, parsed.symbols, allowed)



@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    path: str


def read_maps(path: str = "/proc/self/maps") -> List[Mapping]:
    maps = []
    with open(path) as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = parts[0].split("-")
            maps.append(Mapping(int(lo, 16), int(hi, 16), parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return maps


def _is_shared_object(path: str) -> bool:
    """Mappings of libraries and executables hold no wasmtime images.

    Anonymous mappings (JIT-compiled modules) and files mapped by
    ``Module.deserialize_file`` are the places to look.
    """
    if not path:
        return False
    if path.startswith("["):
        return True
    base = path.rsplit("/", 1)[-1]
    return ".so" in base or "python" in base


class ImageFinder:
    """Finds wasmtime module images that contain given PCs, without Module objects.

    For a PC in an executable mapping, the image's ELF header sits a few pages
    below the start of that mapping (.text is page-aligned after a few small
    sections).  Candidates are checked for the ELF magic and a
    ``.wasmtime.engine`` section, and accepted only if their ``.text`` starts
    exactly at that mapping.  Memory is read only where /proc/self/maps says it
    is mapped and readable.
    """

    MAX_PAGES_BACK = 16
    PAGE = 4096

    def __init__(self, read_memory: ReadMemory, maps: Optional[List[Mapping]] = None):
        self._read = read_memory
        self._maps = maps if maps is not None else read_maps()
        self._starts = [m.start for m in self._maps]
        self._by_exec_start: Dict[int, Optional[Tuple[int, int]]] = {}

    def _mapping(self, address: int) -> Optional[Mapping]:
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and self._maps[i].start <= address < self._maps[i].end:
            return self._maps[i]
        return None

    def _readable(self, start: int, end: int) -> bool:
        address = start
        while address < end:
            m = self._mapping(address)
            if m is None or "r" not in m.perms:
                return False
            address = m.end
        return True

    def image_range(self, pc: int) -> Optional[Tuple[int, int]]:
        """(image start, image end) of the wasmtime image holding ``pc``, if any."""
        m = self._mapping(pc)
        if m is None or "x" not in m.perms or _is_shared_object(m.path):
            return None
        if m.start in self._by_exec_start:
            return self._by_exec_start[m.start]
        found = None
        for k in range(1, self.MAX_PAGES_BACK + 1):
            candidate = m.start - k * self.PAGE
            if not self._readable(candidate, candidate + 64):
                break
            header = self._read(candidate, 64)
            if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                continue
            shoff, = struct.unpack_from("<Q", header, 0x28)
            shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
            size = shoff + shentsize * shnum
            if not 64 <= size <= 1 << 31 or not self._readable(candidate, candidate + size):
                continue
            try:
                sections = _Sections(self._read, candidate, size)
                text = sections.index.get(".text")
                if ".wasmtime.engine" not in sections.index or text is None:
                    continue
                text_offset, _ = sections.offset_size(text)
            except (ImageError, struct.error):
                continue
            if candidate + text_offset == m.start:
                found = (candidate, candidate + size)
            break
        self._by_exec_start[m.start] = found
        return found


def discover(pcs: Iterable[int], known: Sequence[LiveImage], read_memory: ReadMemory,
             allowed: bool) -> Dict[Tuple[int, int], List[LiveImage]]:
    """Images (beyond ``known``) that hold any of ``pcs``: by image range, its live
    images (a component's several)."""
    starts = sorted((img.text_start, img.text_end) for img in known)
    finder: Optional[ImageFinder] = None
    found: Dict[Tuple[int, int], List[LiveImage]] = {}
    for pc in sorted(set(pcs)):
        i = bisect.bisect_right(starts, (pc, float("inf"))) - 1
        if i >= 0 and starts[i][0] <= pc < starts[i][1]:
            continue
        if any(img.text_start <= pc < img.text_end for parts in found.values() for img in parts):
            continue
        if finder is None:
            finder = ImageFinder(read_memory)
        bounds = finder.image_range(pc)
        if bounds is not None and bounds not in found:
            found[bounds] = images_from_memory(bounds[0], bounds[1], allowed, read_memory)
    return found


# --- components: one image, several core modules ---------------------------------

def images_from_memory(start: int, end: int, allowed: bool,
                       read_memory: ReadMemory) -> List[LiveImage]:
    """The image at ``[start, end)`` as live images: one for a core module's image; for a
    component's (whose ELF holds every core module's code, ``wasm[N]::...`` for core
    module N), one per run of a core module's functions, named after that module, and
    one per run of the component's shared code (trampolines), named after the image."""
    parsed = read_image(read_memory, start, end)
    text_start = start + parsed.text_offset
    table = parsed.symbols
    return [LiveImage(text_start + base, text_start + base + part.text_size, part, allowed)
            for base, part in core_module_parts(table)]


def core_module_parts(table: SymbolTable) -> List[Tuple[int, SymbolTable]]:
    """``table`` split by core module: (offset of the part in .text, its table); the
    whole table alone when all its guest functions belong to one core module.

    wasmtime lays a component's code out as each core module's functions in module
    order, then the trampolines; the split follows the symbols as laid out, so
    each part is one contiguous run and the parts tile .text."""
    keys = []
    for i in range(len(table._starts)):
        match = _FUNCTION_RE.match(table._symbol(i))
        keys.append(int(match.group(1)) if match else None)
    modules = sorted({k for k in keys if k is not None})
    if len(modules) <= 1:
        return [(0, table)]
    info, pooled = table._info_data()
    # Before wasmtime 43 the strings are inline: no pool to find, and the parts numbered.
    names = _core_module_names(info, len(modules)) if pooled else None
    runs: List[Tuple[Optional[int], int]] = []          # (core module or None, first symbol)
    for i, key in enumerate(keys):
        if not runs or runs[-1][0] != key:
            runs.append((key, i))
    parts = []
    for r, (key, first) in enumerate(runs):
        last = runs[r + 1][1] if r + 1 < len(runs) else len(keys)
        base = 0 if r == 0 else table._starts[first]
        end = table._starts[last] if last < len(keys) else table.text_size
        name = (names[modules.index(key)] if names else f"{table.name}::wasm[{key}]") \
            if key is not None else table.name
        parts.append((base, _part_table(table, name, base, end, first, last)))
    return parts


def _part_table(table: SymbolTable, name: str, base: int, end: int, first: int,
                last: int) -> SymbolTable:
    """Symbols ``[first, last)`` of ``table``, covering .text ``[base, end)``, as a table
    of their own whose offsets count from ``base``."""
    whole_digest = table._digest

    def read_code(offset: int, size: int) -> bytes:
        return table._read_code(base + offset, size) if 0 <= offset <= end - base - size else b""

    def digest() -> str:
        return hashlib.sha256(f"{whole_digest()}:{base}:{end}".encode()).hexdigest()

    builtin = table._epoch_builtin
    return SymbolTable(name, table.text_offset + base, end - base,
                       array("Q", (s - base for s in table._starts[first:last])),
                       table._sizes[first:last], table._name_offsets[first:last], table._strtab,
                       builtin - base if builtin is not None else None, read_code, digest,
                       table._name_data, None, table._info_data, component_part=True)


def _core_module_names(data: bytes, modules: int) -> Optional[List[str]]:
    """The core modules' names from a component's ``.wasmtime.info``, in module order.

    wasmtime 50 serialises a component's artifacts with each core module's compiled
    info in module order; in each, a string pool (varint count, length-prefixed
    strings) is followed by the module's name as ``Some`` (1) and a 1-based index
    into that pool (see ``_InfoReader``; the byte before the pool is a field that
    varies).  Those are found by scanning for a pool of printable, non-empty
    strings followed by such a name.  Used only when exactly one is found per core
    module (every module named, no stray match); otherwise None and parts are
    numbered."""
    names = []
    at = 0
    while at < len(data):
        try:
            r = ByteReader(data, at)
            count = r.u32()
            pool: List[str] = []
            while 0 < count <= len(data) - r.pos and len(pool) < count:
                text = r.take(r.u32()).decode("utf-8")
                if not text or not text.isprintable():
                    break
                pool.append(text)
            if pool and len(pool) == count and r.byte() == 1:
                index = r.u32()
                if 1 <= index <= count:
                    names.append(pool[index - 1])
                    at = r.pos
                    continue
        except (WasmFormatError, UnicodeDecodeError):
            pass
        at += 1
    return names if len(names) == modules else None
