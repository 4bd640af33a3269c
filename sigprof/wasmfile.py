"""What a wasm binary says about its names and its imports, read without compiling it.

Spec: the WebAssembly core specification, binary format (sections 1-12), and
its appendix "Custom Sections: Name Section" (subsection 0: the module's name,
1: function names).  Read: the type and function sections (each function's
signature), the import section (what the module needs, and how many function
indices imports take), the export section (functions only), and the name
section.  Every length is checked; anything malformed raises
``WasmFormatError`` with one line.  Function indices count imports first, as
wasmtime's symbols (``wasm[M]::function[N]``) do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple


MAGIC = b"\0asm"
_TYPE, _IMPORT, _FUNCTION, _EXPORT, _CUSTOM = 1, 2, 3, 7, 0
_VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128",
             0x70: "funcref", 0x6F: "externref"}
Signature = Tuple[Tuple[str, ...], Tuple[str, ...]]      # (params, results)
_KIND_NAMES = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


class WasmFormatError(ValueError):
    """Not a wasm binary or WAT this reader understands (the message says why)."""


class Import(NamedTuple):
    module: str
    name: str
    kind: str            # "func", "table", "memory", "global", "tag"


class WasmInfo(NamedTuple):
    imports: List[Import]
    exports: Dict[str, Tuple[str, int]]      # export name -> (kind, index)
    function_names: Dict[int, str]           # from the name section
    module_name: Optional[str]
    # Every function's signature by index, imports first; None where the type
    # section holds what this reader does not parse (GC types).
    function_types: Optional[List[Signature]] = None

    @property
    def exported_functions(self) -> Dict[int, str]:
        """Function index -> its first export name."""
        out: Dict[int, str] = {}
        for name, (kind, index) in self.exports.items():
            if kind == "func":
                out.setdefault(index, name)
        return out


class ByteReader:
    """Bytes, LEB128 integers and names from ``data[pos:end]``; ``WasmFormatError`` past the end."""

    def __init__(self, data: bytes, pos: int = 0, end: Optional[int] = None):
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WasmFormatError("unexpected end of the wasm binary")
        self.pos += 1
        return self.data[self.pos - 1]

    def u32(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise WasmFormatError("malformed LEB128 integer in the wasm binary")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise WasmFormatError("a length in the wasm binary runs past its end")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def name(self) -> str:
        return self.take(self.u32()).decode("utf-8", "replace")

    def limits(self) -> None:
        flags = self.byte()
        self.u32()
        if flags & 1:
            self.u32()


def _import_desc(r: ByteReader, func_types: List[int]) -> str:
    kind = r.byte()
    if kind == 0:                # func: type index
        func_types.append(r.u32())
    elif kind == 1:              # table: reftype, limits
        r.byte()
        r.limits()
    elif kind == 2:              # memory: limits (flags may mark 64-bit/shared)
        r.limits()
    elif kind == 3:              # global: valtype (a reftype may be two bytes), mut
        if r.byte() in (0x63, 0x64):
            r.u32()
        r.byte()
    elif kind == 4:              # tag: attribute, type index
        r.byte()
        r.u32()
    else:
        raise WasmFormatError(f"unknown import kind {kind}")
    return _KIND_NAMES[kind]


def read_wasm(data: bytes) -> WasmInfo:
    """Imports, function exports and names of a wasm binary."""
    if data[:4] != MAGIC or len(data) < 8:
        raise WasmFormatError("not a WebAssembly binary (no \\0asm magic number)")
    r = ByteReader(data, 8)
    imports: List[Import] = []
    exports: Dict[str, Tuple[str, int]] = {}
    names: Dict[int, str] = {}
    module_name: Optional[str] = None
    types: Optional[List[Signature]] = []
    func_types: List[int] = []           # type index of each function, imports first
    while r.pos < r.end:
        section, size = r.byte(), r.u32()
        body = ByteReader(data, r.pos, r.pos + size)
        r.take(size)
        if section == _IMPORT:
            for _ in range(body.u32()):
                module, field = body.name(), body.name()
                imports.append(Import(module, field, _import_desc(body, func_types)))
        elif section == _TYPE:
            types = _types(body)
        elif section == _FUNCTION:
            func_types.extend(body.u32() for _ in range(body.u32()))
        elif section == _EXPORT:
            for _ in range(body.u32()):
                name, kind, index = body.name(), body.byte(), body.u32()
                exports[name] = (_KIND_NAMES.get(kind, "other"), index)
        elif section == _CUSTOM and body.name() == "name":
            module_name, names = _name_section(body)
    signatures = None
    if types is not None and all(t < len(types) for t in func_types):
        signatures = [types[t] for t in func_types]
    return WasmInfo(imports, exports, names, module_name, signatures)


def _types(r: ByteReader) -> Optional[List[Signature]]:
    """The type section's function types (None: it holds others, which are not read)."""
    out: List[Signature] = []
    for _ in range(r.u32()):
        if r.byte() != 0x60:
            return None
        params: List[str] = []
        results: List[str] = []
        for into in (params, results):
            for _ in range(r.u32()):
                valtype = _VALTYPES.get(r.byte())
                if valtype is None:
                    return None
                into.append(valtype)
        out.append((tuple(params), tuple(results)))
    return out


def _name_section(r: ByteReader) -> Tuple[Optional[str], Dict[int, str]]:
    module_name: Optional[str] = None
    names: Dict[int, str] = {}
    try:
        while r.pos < r.end:
            kind, size = r.byte(), r.u32()
            sub = ByteReader(r.data, r.pos, r.pos + size)
            r.take(size)
            if kind == 0:
                module_name = sub.name()
            elif kind == 1:
                for _ in range(sub.u32()):
                    index = sub.u32()
                    names[index] = sub.name()
    except WasmFormatError:
        pass       # a damaged name section only costs names, as in wasmtime
    return module_name, names


def wasm_bytes(source: "str | bytes | os.PathLike[str]") -> bytes:
    """The binary of a wasm or WAT file (a path), or of wasm/WAT given as bytes.

    WAT that does not parse raises ``WasmFormatError`` with wasmtime's message,
    its location in the source's own name (``bad.wat:3:4``) and its excerpt.
    """
    where = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if data[:4] == MAGIC:
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not _looks_like_wat(text):
        raise WasmFormatError("neither a wasm binary (no \\0asm header) nor WAT text "
                              "(text starting with `(`)")
    import wasmtime        # WAT needs wasmtime's parser; reading binaries needs nothing
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise WasmFormatError(_located(str(exc), where)) from None


def _looks_like_wat(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines()]
    code = next((line for line in lines if line and not line.startswith(";;")), "")
    return code.startswith("(")


def _located(message: str, where: str) -> str:
    """wasmtime's ``msg / --> <anon>:L:C / excerpt`` as ``where:L:C: msg / excerpt``."""
    lines = message.rstrip().splitlines()
    for k, line in enumerate(lines):
        if line.strip().startswith("--> <anon>:"):
            position = line.strip()[len("--> <anon>:"):]
            excerpt = [x for x in lines[k + 1:] if x.strip() not in ("", "|")]
            return "\n".join([f"{where}:{position}: {lines[0]}"] + excerpt)
    return f"{where}: {lines[0] if lines else 'not valid WAT'}"


def read_names(source: "str | bytes | os.PathLike[str]") -> WasmInfo:
    """``read_wasm`` of a wasm or WAT file, or of its bytes."""
    return read_wasm(wasm_bytes(source))
