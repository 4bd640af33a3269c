"""Mangled Rust and C++ names, made readable for display.

Recordings keep every name as the module wrote it; reports and exports show
this module's rendering.  The work is done by maintained implementations of
each scheme rather than by hand: Rust's legacy (``_ZN...17h<hash>E``) and v0
(``_R...``) schemes by ``rust-demangler`` (a port of rustc-demangle), C++
(Itanium, ``_Z...``) by libstdc++'s own ``__cxa_demangle`` through ``cxxfilt``.
Like rustc-demangle's alternate form, Rust names lose their ``::h<hash>``
suffix.  A name either cannot read is shown as it is.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Optional

import rust_demangler

_RUST_LEGACY = re.compile(r"^_ZN.*17h[0-9a-f]{16}E$")
_RUST_HASH = re.compile(r"::h[0-9a-f]{16}$")


def _load_cxx() -> Optional[Callable[[str], str]]:
    try:
        import cxxfilt
        cxxfilt.demangle("_Z1fv")
        return cxxfilt.demangle  # type: ignore[no-any-return]
    except Exception:             # no libstdc++ to load: C++ names stay mangled
        return None


_cxx = _load_cxx()


@lru_cache(maxsize=65536)
def display_name(name: str) -> str:
    """``name`` demangled for display, or ``name`` itself."""
    try:
        if name.startswith("_R") or _RUST_LEGACY.match(name):
            return _RUST_HASH.sub("", str(rust_demangler.demangle(name)))
        if name.startswith("_Z") and _cxx is not None:
            return _cxx(name)
    except Exception:             # not a well-formed mangled name after all
        pass
    return name
