"""Module images -> function tables: names, boundaries, discovery."""

from __future__ import annotations

import wasmtime

from sigprof import _wasmtime as wt, frames
from sigprof._wasmtime import image as symbols
from sigprof.recording import Recording, SampleTable
from sigprof.frames import FRAME_GUEST, Frame, Function, ModuleSymbols

from conftest import EXAMPLES, GUESTS


def _parsed(engine, wat_or_path, name=None):
    module = (wasmtime.Module(engine, wat_or_path) if wat_or_path.lstrip().startswith("(")
              else wasmtime.Module.from_file(engine, wat_or_path))
    start, end = wt.module_image_range(module)
    return symbols.read_image(wt.read_memory, start, end, name), module


def _all(table):
    return [table.function_at(i) for i in range(len(table))]


def test_function_names_indices_and_kinds(engine):
    parsed, _ = _parsed(engine, str(EXAMPLES / "demo.wat"))
    wasm = {f.name: f for f in _all(parsed.symbols) if f.role == frames.ROLE_WASM}
    assert {"fib", "hot_loop", "cold_loop", "run"} <= set(wasm)
    assert wasm["fib"].index == 0 and wasm["run"].index == 3
    kinds = {f.role for f in _all(parsed.symbols)}
    assert {frames.ROLE_WASM, frames.ROLE_ENTRY, frames.ROLE_EXIT} <= kinds
    # hot_loop has a loop: an entry check and a loop-header check; fib has none but entry.
    assert len(wasm["hot_loop"].checks) == 2 and wasm["fib"].loop_free


def test_module_names_from_the_name_section_else_a_stable_placeholder(engine):
    named, _ = _parsed(engine, '(module $my_app (func (export "f")))')
    assert named.symbols.name == "my_app" and named.name_hint == "my_app"
    unnamed, _ = _parsed(engine, '(module (func (export "f")))')
    again, _ = _parsed(engine, '(module (func (export "f")))')
    assert unnamed.symbols.name.startswith("wasm-")
    assert unnamed.symbols.name == again.symbols.name          # stable
    given, _ = _parsed(engine, '(module $my_app (func (export "f")))', name="chosen")
    assert given.symbols.name == "chosen"
    assert symbols._name_from_info(b"", True) is None and symbols._name_from_info(b"\x01\x02", True) is None


def test_unnamed_functions_get_wasmtime_style_names(engine):
    parsed, _ = _parsed(engine, '(module (func (result i32) i32.const 1) '
                                '(func (export "f") (result i32) call 0))')
    # An exported one is known by its export name.
    assert [f.name for f in _all(parsed.symbols) if f.role == "wasm"] == ["wasm-function[0]", "f"]


def test_a_return_address_at_the_next_functions_start_belongs_to_the_caller():
    """A call as a function's last instruction returns to the next function's first byte."""
    mod = ModuleSymbols("m", "0" * 64, 200, (Function(0, 100, "caller", 0, "wasm"),
                                             Function(100, 100, "next", 1, "wasm")))
    rec = Recording(meta={}, modules=(mod,), host_functions=(), frames=(Frame(FRAME_GUEST, 0, 100),),
                    stack_parent=__import__("array").array("i"),
                    stack_frame=__import__("array").array("i"),
                    sample_table=SampleTable.empty())
    assert rec.function(0).name == "caller"
    assert mod.lookup(100).name == "next"


def test_images_are_found_from_pcs_without_module_objects(engine):
    parsed, module = _parsed(engine, str(GUESTS / "twin_b.wat"))
    start, end = wt.module_image_range(module)
    pc = start + parsed.text_offset + 10
    found = symbols.discover([pc, 12345], [], wt.read_memory, allowed=True)
    assert list(found) == [(start, end)]               # by image range
    (image,) = found[(start, end)]
    assert image.symbols.name == "twin_b"
    assert image.text_start == start + parsed.text_offset
    assert symbols.discover([id(object())], [], wt.read_memory, allowed=True) == {}
