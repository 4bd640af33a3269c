"""Every wasmtime-py module that calls ``enter_wasm`` (or anything named like it:
a successor) is hooked while a profile runs; a module that is not is guest code
sigprof would silently not profile.  The callers are found in wasmtime-py's
installed sources, so a release that adds one fails here."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path
from typing import Dict, List

import wasmtime

import sigprof

PACKAGE = Path(wasmtime.__file__).parent


def enter_wasm_callers() -> Dict[str, List[ast.Call]]:
    """Module name -> its calls to a name starting with ``enter_wasm``."""
    found: Dict[str, List[ast.Call]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_bindings.py":         # generated C declarations, no calls
            continue
        tree = ast.parse(path.read_text(), str(path))
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Name) and node.func.id.startswith("enter_wasm")]
        if calls:
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            found[".".join(parts)] = calls
    return found


def test_wasmtime_py_enters_wasm_somewhere():
    callers = enter_wasm_callers()
    assert "wasmtime._func" in callers, callers
    if importlib.util.find_spec("wasmtime.component") is not None:    # from wasmtime-py 39
        assert "wasmtime.component._func" in callers, callers


def test_every_enter_wasm_caller_is_hooked_while_profiling():
    callers = enter_wasm_callers()
    modules = {name: importlib.import_module(name) for name in callers}
    before = {name: {call.func.id: getattr(module, call.func.id) for call in calls}
              for (name, calls), module in zip(callers.items(), modules.values())}
    with sigprof.profile():
        unhooked = [f"{name}.{attr}" for name, attrs in before.items()
                    for attr, original in attrs.items()
                    if getattr(modules[name], attr) is original]
    assert not unhooked, f"enter_wasm callers sigprof does not hook: {unhooked}"
    for name, attrs in before.items():            # and put back afterwards
        for attr, original in attrs.items():
            assert getattr(modules[name], attr) is original, f"{name}.{attr} left hooked"


def test_component_calls_close_over_their_store():
    """The component hook finds the store in the ``run`` closure it is given (see
    sigprof/_wasmtime/component.py): every component call site passes a local
    function that uses ``store``."""
    for name, calls in enter_wasm_callers().items():
        if not name.startswith("wasmtime.component."):
            continue
        tree = ast.parse((PACKAGE.parent / (name.replace(".", "/") + ".py")).read_text())
        closures = {node.name: node for node in ast.walk(tree)
                    if isinstance(node, ast.FunctionDef)}
        for call in calls:
            assert len(call.args) == 1 and isinstance(call.args[0], ast.Name), \
                f"{name}:{call.lineno}: enter_wasm is not given a closure"
            closure = closures[call.args[0].id]
            used = {n.id for n in ast.walk(closure) if isinstance(n, ast.Name)}
            assert "store" in used, f"{name}:{call.lineno}: the closure does not use store"
