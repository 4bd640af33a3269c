"""What a recording's frames are: their types, the host functions they name, and labels.

A recording interns each distinct frame once as a ``Frame``; its stacks and
samples refer to frames by index.  ``FunctionRef`` is what a frame means at
function level -- the unit of every report -- and renders the one label each
output uses.  A guest frame's function comes from its module's ``ModuleSymbols``:
the function table a recording keeps (read from wasmtime's image by
``_wasmtime.image``, or from a file by ``rawfile``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Tuple

from .dwarf import SourceFrame

# Frame types (Frame.type).
FRAME_GUEST = 0      # index: module; offset: .text offset of the return address
FRAME_HOST = 1       # index: host function
FRAME_PYTHON = 2     # Python code outside the guest (the caller's side)
FRAME_OPAQUE = 3     # code of a module the user did not allow into the profile
FRAME_TRUNCATED = 4  # the stack was deeper than max_depth; its root is missing
FRAME_UNKNOWN = 5    # guest code that could not be resolved to a function
FRAME_PYCODE = 6     # Python code that called the guest; index: host function table row
                     # (the Python function), offset: the line it was at
FRAME_TYPES = range(FRAME_GUEST, FRAME_PYCODE + 1)

# Sample flags (bits).
SAMPLE_TRUNCATED = 1  # the stack's root was cut off
SAMPLE_AT_TICK = 2    # re-attributed from the epoch check to where the tick landed

PSEUDO_FRAME_NAMES = {
    FRAME_PYTHON: "(python, outside the guest)",
    FRAME_OPAQUE: "(other wasm module)",
    FRAME_TRUNCATED: "(truncated stack)",
    FRAME_UNKNOWN: "(unresolved wasm code)",
}
_PSEUDO_KINDS = {FRAME_PYTHON: "python", FRAME_OPAQUE: "opaque", FRAME_TRUNCATED: "truncated",
                 FRAME_UNKNOWN: "unknown"}


class Frame(NamedTuple):
    """One interned frame.  Guest frames keep return-address offsets, so lookups
    subtract one: a call at the very end of a function is not charged to the next."""

    type: int
    ref: int = 0        # module (guest) or host function table row (host, Python code)
    offset: int = 0     # guest: .text offset of the return address; Python code: line
    inline: int = 0     # guest: 0 the compiled function, k the k-th call the compiler
                        # inlined into it at that address (its DWARF frames, outermost first)


def pseudo_kind(frame_type: int) -> str:
    return _PSEUDO_KINDS.get(frame_type, "unknown")


@dataclass(frozen=True)
class HostFunction:
    """A Python function in the profile: one the guest imported, or one on the
    Python side of a mixed stack (no import names)."""

    name: str                      # qualified name, e.g. "Plugin.log"
    module: str = ""               # the Python module defining it
    file: str = ""                 # file name (base name unless host details are on)
    line: int = 0
    import_module: str = ""        # the wasm import's module.field, where known
    import_name: str = ""

    @property
    def label(self) -> str:
        if self.import_module or self.import_name:
            return f"{self.name} [{self.import_module}.{self.import_name}]"
        return self.name


@dataclass(frozen=True)
class FunctionRef:
    """What a frame means at function level: the unit of every report."""

    kind: str            # "wasm", "host", "py" (Python code), "python" (Python outside the
                         # guest, no frames known), "opaque", "truncated", "unknown"
    name: str
    module: str          # module (wasm) or Python module (host); "" for pseudo frames
    key: Tuple[object, ...]   # identity: two wasm modules' `work` stay distinct
    # wasm, from DWARF: the function's source file ("": unknown) and the line it is
    # declared at (0: unknown); what it is, not which function: not compared.
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)

    @property
    def where(self) -> str:
        """`` (file:line)`` where the source is known, else empty."""
        if not self.file:
            return ""
        return f" ({self.file}:{self.line})" if self.line else f" ({self.file})"

    def label(self, form: str = "report") -> str:
        """``report``: ``name  [module]`` (``[python]`` for host functions);
        ``summary``: ``name [module]`` for guest functions, else the name (Python
        code: ``name [file]``);
        ``collapsed``: ``module!name`` for guest functions, without the
        characters that separate frames and lines in that format."""
        name = self.name + self.where
        if form == "collapsed":
            label = f"{self.module}!{name}" if self.kind == "wasm" else name
            return label.replace(";", ":").replace("\n", " ").replace("\r", " ")
        if form == "summary":
            return f"{name} [{self.module}]" if self.kind in ("wasm", "py") else name
        where = (self.module if self.kind in ("wasm", "py")
                 else "python" if self.kind == "host" else "")
        return f"{name}  [{where}]" if where else name


# --- the functions guest frames name -------------------------------------------------

ROLE_WASM = "wasm"            # a guest function (the roles of a function in an image)
ROLE_ENTRY = "entry"          # host -> guest trampoline
ROLE_EXIT = "exit"            # guest -> host trampoline
ROLE_BUILTIN = "builtin"      # a wasmtime runtime helper
ROLE_OTHER = "other"


def unnamed_function(index: int) -> str:
    """What a guest function is called where nothing names it."""
    return f"wasm-function[{index}]"


@dataclass(frozen=True)
class Function:
    start: int          # offset of the function's first byte in .text
    size: int
    name: str           # display name
    index: int          # wasm function index; -1 for non-guest code
    role: str           # ROLE_WASM (a guest function), ROLE_ENTRY, ROLE_EXIT, ...
    # Return-address offsets (from ``start``) of the function's epoch checks:
    # the entry check first, then one per loop header.  Empty if unknown.
    checks: Tuple[int, ...] = ()

    @property
    def loop_free(self) -> bool:
        return len(self.checks) == 1


@dataclass(frozen=True)
class ModuleSymbols:
    """One module's function table as a recording keeps it: host-free, only what it needs."""

    name: str
    digest: str                     # sha256 of the symbol table and code size: the code's identity
    text_size: int
    functions: Tuple[Function, ...]  # sorted by start
    # Where the module's DWARF was known: (return-address offset, its source frames
    # outermost first) for each sampled guest frame that has them, sorted by offset.
    lines: Tuple[Tuple[int, Tuple[SourceFrame, ...]], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", [f.start for f in self.functions])
        object.__setattr__(self, "_lines", dict(self.lines))

    def source_frames(self, offset: int) -> Tuple[SourceFrame, ...]:
        """The source frames of the guest frame with return address ``offset``
        (outermost first), empty where unknown."""
        found: Tuple[SourceFrame, ...] = self._lines.get(offset, ())  # type: ignore[attr-defined]
        return found

    def lookup(self, offset: int) -> Optional[Function]:
        """The function whose code contains ``offset``, if any."""
        i = bisect.bisect_right(self._starts, offset) - 1  # type: ignore[attr-defined]
        if i >= 0:
            f = self.functions[i]
            if f.start <= offset < f.start + max(f.size, 1):
                return f
        return None
