"""Mangled Rust and C++ names, made readable for display.

Recordings keep every name as the module wrote it; reports and exports show
this module's rendering.  The work is done by maintained implementations of
each scheme rather than by hand: Rust's legacy (``_ZN...17h<hash>E``) and v0
(``_R...``) schemes by ``rust-demangler`` (a port of rustc-demangle), C++
(Itanium, ``_Z...``) by libstdc++'s own ``__cxa_demangle`` through ``cxxfilt``.
Like rustc-demangle's alternate form, Rust names lose their ``::h<hash>``
suffix.  A name either cannot read is shown as it is.  ``cxxfilt`` finds and
loads libstdc++ (running ``ldconfig`` to do so), so that happens at the first
C++ name, not at import.

``short_name`` makes the short form a flame graph labels its boxes with: the
qualified name without template arguments, function parameters, return type
or qualifiers (``ns::Class::method`` for ``int ns::Class<T>::method(int, char
const*) const``; ``<Vec as Debug>``-style Rust impls keep their ``as``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Optional

import rust_demangler

_RUST_LEGACY = re.compile(r"^_ZN.*17h[0-9a-f]{16}E$")
_RUST_HASH = re.compile(r"::h[0-9a-f]{16}$")


@lru_cache(maxsize=None)
def _load_cxx() -> Optional[Callable[[str], str]]:
    try:
        import cxxfilt
        cxxfilt.demangle("_Z1fv")
        return cxxfilt.demangle  # type: ignore[no-any-return]
    except Exception:             # no libstdc++ to load: C++ names stay mangled
        return None


@lru_cache(maxsize=65536)
def display_name(name: str) -> str:
    """``name`` demangled for display, or ``name`` itself."""
    try:
        if name.startswith("_R") or _RUST_LEGACY.match(name):
            return _RUST_HASH.sub("", str(rust_demangler.demangle(name)))
        cxx = _load_cxx() if name.startswith("_Z") else None
        if cxx is not None:
            return cxx(name)
    except Exception:             # not a well-formed mangled name after all
        pass
    return name


# --- short names ------------------------------------------------------------------------------

# Longest first, so `operator<<=` is not read as `operator<<` followed by `=`.
_OPERATOR_TOKENS = sorted(
    ("<=>", "->*", "<<=", ">>=", "()", "[]", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||",
     "++", "--", "->", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", ",", "+", "-", "*", "/",
     "%", "^", "&", "|", "~", "!", "=", "<", ">", '""'), key=len, reverse=True)
_OPENERS = {"<": ">", "(": ")", "[": "]", "{": "}"}
# `typeinfo for X`, `non-virtual thunk to X`, ...: kept, and X shortened.
_SPECIAL_PREFIX = re.compile(r"^((?:[A-Za-z-]+ )+(?:to|for) )")
_CLONE_SUFFIX = re.compile(r"(?: \[clone [^\]]*\])+$")
_TRAILING_QUALIFIERS = re.compile(r"\)(?: ?(?:const|volatile|noexcept|&&|&))*$")


def _ident(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def _skip(text: str, i: int) -> int:
    """The index just past the bracket group that opens at ``text[i]``.  ``<``/``>`` pair only
    with each other (a `>` inside parentheses is an expression's, not a template's end)."""
    stack = [_OPENERS[text[i]]]
    i += 1
    while stack:
        if i >= len(text):
            raise ValueError("unbalanced brackets")
        ch = text[i]
        if ch in _OPENERS:
            stack.append(_OPENERS[ch])
        elif ch == stack[-1]:
            stack.pop()
        elif ch in ")]}":
            while stack and stack[-1] != ch:     # an unclosed `<` inside: a less-than
                stack.pop()
            if not stack:
                raise ValueError("unbalanced brackets")
            stack.pop()
        i += 1
    return i


def _strip_generics(text: str) -> str:
    """``text`` without the template/generic argument lists that follow a name (and a
    turbofish's ``::``); a ``<`` that opens a path (``<T as Trait>``) stays."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<" and out and (_ident(out[-1]) or "".join(out[-2:]) == "::"):
            if "".join(out[-2:]) == "::":
                del out[-2:]
            i = _skip(text, i)
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _without_groups(text: str) -> str:
    """``text`` without any bracketed group: ``(int)#1`` -> ``#1``."""
    out, i = [], 0
    while i < len(text):
        if text[i] in _OPENERS:
            i = _skip(text, i)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _qualified_name(text: str) -> str:
    """The ``a::b::c`` path of ``[return type ]qualified-name`` (parameters already gone),
    each part without its template arguments."""
    parts: list[str] = []
    part: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if (text.startswith("operator", i) and (i == 0 or not _ident(text[i - 1]))
                and (i + 8 == len(text) or not _ident(text[i + 8]))):
            rest = text[i + 8:]
            if rest.startswith(" "):        # conversion, new, delete: the rest names it
                part.append("operator " + _strip_generics(rest.strip()))
                break
            token = next((t for t in _OPERATOR_TOKENS if rest.startswith(t)), "")
            part.append("operator" + token)
            i += 8 + len(token)
            while token == '""' and i < len(text) and _ident(text[i]):   # operator""_km
                part.append(text[i])
                i += 1
            after = i + 1 if text.startswith(" <", i) else i     # operator<< <char_traits>
            if text.startswith("<", after):
                i = _skip(text, after)
            continue
        if ch == "<":
            end = _skip(text, i)
            if not part and not parts:      # Rust's <T as Trait>::method, <[T]>::len
                part.append("<" + _strip_generics(text[i + 1:end - 1]) + ">")
            i = end                         # else template arguments, or a turbofish's
        elif ch == "(":
            end = _skip(text, i)
            if not part:                    # (anonymous namespace)
                part.append(text[i:end])
            i = end                         # else an enclosing function's parameters
        elif ch == "{":
            end = _skip(text, i)
            group = text[i:end]             # {lambda(int)#1}, {{closure}}, {closure#0}
            part.append("{lambda" + _without_groups(group[7:-1]) + "}"
                        if group.startswith("{lambda") else group)
            i = end
        elif ch == "[":                     # [abi:cxx11]
            i = _skip(text, i)
        elif text.startswith("::", i):
            parts.append("".join(part))
            part = []
            i += 2
        elif ch == " ":                     # what came before was the return type
            parts, part = [], []
            i += 1
        elif ch in ">)]}":
            raise ValueError("unbalanced brackets")
        else:
            part.append(ch)
            i += 1
    parts.append("".join(part))
    return "::".join(p for p in parts if p)


@lru_cache(maxsize=65536)
def short_name(name: str) -> str:
    """A demangled C++ or Rust name without template arguments, parameters, return type and
    qualifiers, for labels: ``ns::Class::method`` for ``int ns::Class<T>::method(int, char
    const*) const``, ``Foo::operator()``, ``f::{lambda#1}``, ``<Vec as core::fmt::Debug>::fmt``.
    Any other name, and one this cannot take apart, is returned as it is."""
    if not any(c in name for c in "(<:"):
        return name
    try:
        prefix = _SPECIAL_PREFIX.match(name)
        rest = name[prefix.end():] if prefix else name
        rest = _CLONE_SUFFIX.sub("", rest)
        qualifiers = _TRAILING_QUALIFIERS.search(rest)
        if qualifiers:                      # drop `(parameters) const &` from the end
            depth, i = 0, qualifiers.start()
            while True:
                depth += {")": 1, "(": -1}.get(rest[i], 0)
                if depth == 0:
                    break
                i -= 1
                if i < 0:
                    raise ValueError("unbalanced parentheses")
            rest = rest[:i]
        short = _qualified_name(rest)
    except ValueError:
        return name
    return (prefix.group(1) if prefix else "") + short if short else name
