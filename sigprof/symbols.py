"""Module images -> function tables.

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

The ELF is parsed with pyelftools (section headers, symbol table, string
tables, all bounds-checked), which beats hand-rolled struct code.

Module names: given by the user, else recovered from the module's name
section as wasmtime stores it (see ``_name_from_info``), else a stable
placeholder derived from a digest of the code.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import re
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

KIND_WASM = "wasm"            # a guest function
KIND_ENTRY = "entry"          # host -> guest trampoline
KIND_EXIT = "exit"            # guest -> host trampoline
KIND_BUILTIN = "builtin"      # a wasmtime runtime helper
KIND_OTHER = "other"

_FUNCTION_RE = re.compile(r"^wasm\[(\d+)\]::function\[(\d+)\](?:::(.*))?$", re.S)


class ImageError(ValueError):
    """The bytes are not a wasmtime compiled-module image."""


@dataclass(frozen=True)
class Function:
    start: int          # offset of the function's first byte in .text
    size: int
    name: str           # display name
    index: int          # wasm function index; -1 for non-guest code
    kind: str
    # Return-address offsets (from ``start``) of the function's epoch checks:
    # the entry check first, then one per loop header.  Empty if unknown.
    checks: Tuple[int, ...] = ()

    @property
    def loop_free(self) -> bool:
        return len(self.checks) == 1


@dataclass(frozen=True)
class ModuleSymbols:
    """One module's function table: everything conversion needs, host-free."""

    name: str
    digest: str                     # sha256 of .text: identifies the code, not the host
    text_size: int
    functions: Tuple[Function, ...]  # sorted by start

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", [f.start for f in self.functions])

    def lookup(self, offset: int) -> Optional[Function]:
        """The function whose code contains ``offset``, if any."""
        i = bisect.bisect_right(self._starts, offset) - 1  # type: ignore[attr-defined]
        if i >= 0:
            f = self.functions[i]
            if f.start <= offset < f.start + max(f.size, 1):
                return f
        return None


@dataclass(frozen=True)
class ParsedImage:
    text_offset: int               # where .text starts within the image
    symbols: ModuleSymbols
    name_hint: Optional[str]       # the module's own name, if recovered


def _display_name(symbol: str) -> Tuple[str, int, str]:
    m = _FUNCTION_RE.match(symbol)
    if m:
        index = int(m.group(2))
        name = m.group(3) or f"wasm-function[{index}]"
        return name, index, KIND_WASM
    if "array_to_wasm_trampoline" in symbol:
        return symbol, -1, KIND_ENTRY
    if "wasm_to_array_trampoline" in symbol:
        return symbol, -1, KIND_EXIT
    if symbol.startswith("wasmtime_builtin"):
        return symbol, -1, KIND_BUILTIN
    return symbol, -1, KIND_OTHER


def parse_image(image: bytes, name: Optional[str] = None) -> ParsedImage:
    """Parse a compiled-module image; ``name`` overrides the recovered one."""
    try:
        elf = ELFFile(io.BytesIO(image))
        if elf.get_section_by_name(".wasmtime.engine") is None:
            raise ImageError("not a wasmtime module image (no .wasmtime.engine section)")
        text = elf.get_section_by_name(".text")
        symtab = elf.get_section_by_name(".symtab")
        if text is None or symtab is None:
            raise ImageError("module image has no .text or .symtab")
        text_index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".text")
        text_offset = text["sh_offset"]
        text_size = text["sh_size"]
        raw_symbols = []
        for sym in symtab.iter_symbols():
            if sym["st_info"]["type"] != "STT_FUNC" or sym["st_shndx"] != text_index:
                continue
            raw_symbols.append((sym["st_value"], sym["st_size"], sym.name))
        info = elf.get_section_by_name(".wasmtime.info")
        hint = _name_from_info(info.data()) if info is not None else None
        text_bytes = image[text_offset:text_offset + text_size]
        epoch_builtin = next((start for start, _, name in raw_symbols
                              if name == "wasmtime_builtin_new_epoch"), None)
        functions = []
        for start, size, symbol in raw_symbols:
            display, index, kind = _display_name(symbol)
            checks = (epoch_checks(text_bytes, start, size, epoch_builtin)
                      if kind == KIND_WASM and epoch_builtin is not None else ())
            functions.append(Function(start, size, display, index, kind, checks))
    except (ELFError, struct.error, StopIteration, KeyError) as exc:
        raise ImageError(f"cannot parse module image: {exc}") from None
    functions.sort(key=lambda f: (f.start, f.size))
    digest = hashlib.sha256(text_bytes).hexdigest()
    final = name or hint or f"wasm-{digest[:8]}"
    return ParsedImage(text_offset, ModuleSymbols(final, digest, text_size, tuple(functions)), hint)


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


def _read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise ValueError("bad varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _name_from_info(data: bytes) -> Optional[str]:
    """The module's name-section name from wasmtime 50's ``.wasmtime.info``.

    That section is wasmtime's own serialisation (postcard) of the compiled
    module's metadata.  It begins with a string pool -- a zero byte, a varint
    count, then length-prefixed UTF-8 strings -- followed by the module name
    as an optional 1-based index into the pool.  This layout is wasmtime's
    internal detail, checked against wasmtime 50 by the tests; anything that
    does not fit returns None and the caller falls back to a placeholder.
    """
    try:
        if not data or data[0] != 0:
            return None
        count, pos = _read_varint(data, 1)
        if count > 1_000_000:
            return None
        pool: List[str] = []
        for _ in range(count):
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                return None
            pool.append(data[pos:pos + length].decode("utf-8"))
            pos += length
        if pos >= len(data) or data[pos] == 0:
            return None
        if data[pos] != 1:
            return None
        index, _ = _read_varint(data, pos + 1)
        if 1 <= index <= len(pool) and pool[index - 1]:
            return pool[index - 1]
    except (ValueError, UnicodeDecodeError):
        return None
    return None


# --- live images: address ranges in this process -------------------------------

@dataclass(frozen=True)
class LiveImage:
    """A module image mapped in this process (host addresses: never saved)."""

    text_start: int
    text_end: int
    symbols: ModuleSymbols
    allowed: bool            # named in the profile, or collapsed to an opaque frame


def image_from_memory(start: int, end: int, name: Optional[str], allowed: bool,
                      read_memory) -> LiveImage:
    parsed = parse_image(read_memory(start, end - start), name)
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

    def __init__(self, read_memory, maps: Optional[List[Mapping]] = None):
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
                parsed = parse_image(self._read(candidate, size))
            except ImageError:
                continue
            if candidate + parsed.text_offset == m.start:
                found = (candidate, candidate + size)
            break
        self._by_exec_start[m.start] = found
        return found


def discover(pcs: Iterable[int], known: Sequence[LiveImage], read_memory,
             allowed: bool) -> List[LiveImage]:
    """Images (beyond ``known``) that hold any of ``pcs``."""
    starts = sorted((img.text_start, img.text_end) for img in known)
    finder: Optional[ImageFinder] = None
    found: Dict[Tuple[int, int], LiveImage] = {}
    for pc in sorted(set(pcs)):
        i = bisect.bisect_right(starts, (pc, float("inf"))) - 1
        if i >= 0 and starts[i][0] <= pc < starts[i][1]:
            continue
        if any(img.text_start <= pc < img.text_end for img in found.values()):
            continue
        if finder is None:
            finder = ImageFinder(read_memory)
        bounds = finder.image_range(pc)
        if bounds is not None and bounds not in found:
            found[bounds] = image_from_memory(bounds[0], bounds[1], None, allowed, read_memory)
    return list(found.values())
