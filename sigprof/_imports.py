"""Which wasm import (module.field) each Python host function was defined as.

wasmtime-py keeps only the callable for a host function; the import's name is
known at ``Linker.define_func`` time and nowhere else.  Importing sigprof wraps
that one method to remember the name next to the callable (weakly where the
callable allows it), so profiles can label host frames ``fn [env.log]``.
Functions made with ``Func(store, type, fn)`` have no import name until they
are linked, and keep just their Python name.
"""

from __future__ import annotations

import weakref
from typing import Callable, Dict, Optional, Tuple

import wasmtime

_weak: "weakref.WeakKeyDictionary[Callable, Tuple[str, str]]" = weakref.WeakKeyDictionary()
_strong: Dict[int, Tuple[Callable, str, str]] = {}   # callables that refuse weak references

_original_define_func = wasmtime.Linker.define_func


def _define_func(self, module, name, ty, func, access_caller=False):
    try:
        _weak[func] = (module, name)
    except TypeError:
        _strong[id(func)] = (func, module, name)
    return _original_define_func(self, module, name, ty, func, access_caller)


_define_func.__doc__ = _original_define_func.__doc__
_define_func.__wrapped__ = _original_define_func  # type: ignore[attr-defined]

if getattr(wasmtime.Linker.define_func, "__wrapped__", None) is None:
    wasmtime.Linker.define_func = _define_func  # type: ignore[method-assign]


def import_name(func: Callable) -> Optional[Tuple[str, str]]:
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
