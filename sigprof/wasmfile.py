"""What a wasm binary says about its names and its imports, read without compiling it.

Spec: the WebAssembly core specification, binary format (sections 1-12), and
its appendix "Custom Sections: Name Section" (subsection 0: the module's name,
1: function names).  Read: the type and function sections (each function's
parameter and result types), the import section (what the module needs, and
how many function indices imports take), the export section, and the name
section.  Every length is checked; anything malformed raises
``WasmFormatError`` with one line.  Function indices count imports first, as
wasmtime's symbols (``wasm[M]::function[N]``) do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple


MAGIC = b"\0asm"
_TYPE, _IMPORT, _FUNCTION, _EXPORT, _CODE, _CUSTOM = 1, 2, 3, 7, 10, 0
_KIND_NAMES = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}
# Value types by their one-byte encoding (core spec 5.3; the GC, exception-handling
# and stack-switching proposals add the reference shorthands), as wasmtime spells them.
_NUMBER_TYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128"}
_HEAP_TYPES = {0x70: "func", 0x6F: "extern", 0x6E: "any", 0x6D: "eq", 0x6C: "i31",
               0x6B: "struct", 0x6A: "array", 0x69: "exn", 0x68: "cont", 0x71: "none",
               0x72: "noextern", 0x73: "nofunc", 0x74: "noexn", 0x75: "nocont"}
_SHORTHAND_NAMES = {0x71: "nullref", 0x72: "nullexternref", 0x73: "nullfuncref",
                    0x74: "nullexnref", 0x75: "nullcontref"}
_REF_NULL, _REF = 0x63, 0x64
_FUNC_TYPE, _STRUCT_TYPE, _ARRAY_TYPE = 0x60, 0x5F, 0x5E
_REC_GROUP, _SUB, _SUB_FINAL = 0x4E, 0x50, 0x4F
_PACKED_TYPES = (0x78, 0x77)       # i8, i16: struct and array fields only


class WasmFormatError(ValueError):
    """Not a wasm binary or WAT this reader understands (the message says why)."""


class Import(NamedTuple):
    module: str
    name: str
    kind: str            # "func", "table", "memory", "global", "tag"


class FuncSignature(NamedTuple):
    params: Tuple[str, ...]                  # "i32", "v128", "externref", "(ref null 3)" ...
    results: Tuple[str, ...]


class WasmInfo(NamedTuple):
    imports: List[Import]
    exports: Dict[str, Tuple[str, int]]      # export name -> (kind, index)
    function_names: Dict[int, str]           # from the name section
    module_name: Optional[str]
    # Function index (imports first) -> its signature; empty when the type section
    # uses an encoding this reader does not know (the binary may still be valid).
    function_types: Tuple[FuncSignature, ...] = ()
    # Each defined function's body as [start, end) offsets in the file, in order:
    # what a build's address map must point into (``_resolve.code_mismatch``).
    bodies: Tuple[Tuple[int, int], ...] = ()

    def signature(self, export: str) -> Optional[FuncSignature]:
        """The parameter and result types of an exported function, if known."""
        kind, index = self.exports.get(export, ("", -1))
        if kind != "func" or not 0 <= index < len(self.function_types):
            return None
        return self.function_types[index]

    @property
    def exported_functions(self) -> Dict[int, str]:
        """Function index -> its first export name."""
        out: Dict[int, str] = {}
        for name, (kind, index) in self.exports.items():
            if kind == "func":
                out.setdefault(index, name)
        return out


def uleb128(value: int) -> bytes:
    """``value`` as an unsigned LEB128 (wasm's integers; postcard's varints)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


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

    def peek(self) -> int:
        """The next byte, not consumed."""
        if self.pos >= self.end:
            raise WasmFormatError("unexpected end of the wasm binary")
        return self.data[self.pos]

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

    def s33(self) -> int:
        """A signed LEB128 of up to 33 bits (a heap type: negative for the abstract ones)."""
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value - (1 << shift) if b & 0x40 else value
            if shift > 35:
                raise WasmFormatError("malformed LEB128 integer in the wasm binary")

    def limits(self) -> None:
        flags = self.byte()
        self.u32()
        if flags & 1:
            self.u32()


def _value_type(r: ByteReader) -> str:
    code = r.byte()
    if code in _NUMBER_TYPES:
        return _NUMBER_TYPES[code]
    if code in _SHORTHAND_NAMES:
        return _SHORTHAND_NAMES[code]
    if code in _HEAP_TYPES:
        return _HEAP_TYPES[code] + "ref"
    if code in (_REF_NULL, _REF):
        heap = r.s33()
        shown = _HEAP_TYPES.get(heap & 0x7F, "?") if heap < 0 else str(heap)
        return f"(ref {'null ' if code == _REF_NULL else ''}{shown})"
    raise WasmFormatError(f"unknown value type 0x{code:02x}")


def _types(r: ByteReader) -> List[Optional[FuncSignature]]:
    """The type section: a signature per function type, None for struct and array types."""
    out: List[Optional[FuncSignature]] = []

    def composite() -> None:
        form = r.byte()
        if form in (_SUB, _SUB_FINAL):
            for _ in range(r.u32()):
                r.u32()                                    # supertypes
            form = r.byte()
        if form == _FUNC_TYPE:
            params = tuple(_value_type(r) for _ in range(r.u32()))
            out.append(FuncSignature(params, tuple(_value_type(r) for _ in range(r.u32()))))
        elif form in (_STRUCT_TYPE, _ARRAY_TYPE):
            for _ in range(r.u32() if form == _STRUCT_TYPE else 1):
                if r.peek() in _PACKED_TYPES:
                    r.byte()
                else:
                    _value_type(r)
                r.byte()                                   # mutability
            out.append(None)
        else:
            raise WasmFormatError(f"unknown type form 0x{form:02x}")

    for _ in range(r.u32()):
        if r.peek() == _REC_GROUP:
            r.byte()
            for _ in range(r.u32()):
                composite()
        else:
            composite()
    return out


def _import_desc(r: ByteReader, function_type_indices: List[int]) -> str:
    kind = r.byte()
    if kind == 0:                # func: type index
        function_type_indices.append(r.u32())
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
    types: Optional[List[Optional[FuncSignature]]] = []
    function_type_indices: List[int] = []        # per function index, imports first
    bodies: List[Tuple[int, int]] = []
    while r.pos < r.end:
        section, size = r.byte(), r.u32()
        body = ByteReader(data, r.pos, r.pos + size)
        r.take(size)
        if section == _TYPE:
            try:
                types = _types(body)
            except WasmFormatError:
                types = None                     # a proposal this reader does not know
        elif section == _IMPORT:
            for _ in range(body.u32()):
                module, field = body.name(), body.name()
                imports.append(Import(module, field, _import_desc(body, function_type_indices)))
        elif section == _FUNCTION:
            function_type_indices.extend(body.u32() for _ in range(body.u32()))
        elif section == _EXPORT:
            for _ in range(body.u32()):
                name, kind, index = body.name(), body.byte(), body.u32()
                exports[name] = (_KIND_NAMES.get(kind, "other"), index)
        elif section == _CODE:
            for _ in range(body.u32()):
                body_size = body.u32()
                if body.pos + body_size > body.end:
                    raise WasmFormatError("a function body runs past the code section")
                bodies.append((body.pos, body.pos + body_size))
                body.pos += body_size              # (not take(): no copy of the code)
        elif section == _CUSTOM and body.name() == "name":
            module_name, names = _name_section(body)
    return WasmInfo(imports, exports, names, module_name,
                    _signatures(types, function_type_indices), tuple(bodies))


def _signatures(types: Optional[List[Optional[FuncSignature]]],
                type_indices: List[int]) -> Tuple[FuncSignature, ...]:
    """Each function's signature, or none at all if any is unknown."""
    out = []
    for index in type_indices:
        signature = types[index] if types is not None and 0 <= index < len(types) else None
        if signature is None:
            return ()
        out.append(signature)
    return tuple(out)


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
