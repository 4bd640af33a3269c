"""Which wasm import (module.field) each Python host function was defined as.

wasmtime-py keeps only the callable for a host function; the import's name is
known at ``Linker.define_func`` time and nowhere else.  ``install()`` -- called
by ``sigprof.engine()`` and by the first profile's start, not at import --
wraps that one method (through the seam, ``_wasmtime``) to remember the name
next to the callable, weakly where the callable allows it, so profiles can
label host frames ``fn [env.log]``.  Functions defined before either call, or
made with ``Func(store, type, fn)`` (which has no import name until linked),
keep just their Python name.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Optional, Tuple

from . import _wasmtime as wt

_weak: "weakref.WeakKeyDictionary[Callable[..., Any], Tuple[str, str]]" = weakref.WeakKeyDictionary()
_strong: Dict[int, Tuple[Callable[..., Any], str, str]] = {}   # callables refusing weak references


def _remember(func: Callable[..., Any], module: str, name: str) -> None:
    try:
        _weak[func] = (module, name)
    except TypeError:
        _strong[id(func)] = (func, module, name)


def install() -> None:
    wt.install_define_func_hook(_remember)


def import_name(func: Callable[..., Any]) -> Optional[Tuple[str, str]]:
    try:
        found = _weak.get(func)
    except TypeError:
        found = None
    if found is not None:
        return found
    entry = _strong.get(id(func))
    if entry is not None and entry[0] is func:
        return entry[1], entry[2]
    return None
