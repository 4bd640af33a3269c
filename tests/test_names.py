"""Names as the module wrote them, demangled for display; recordings that hold only what
the samples name (issue 11's statements about names and sizes)."""

from __future__ import annotations

import time

import wasmtime

import sigprof
from sigprof._timer import ManualTicks
from sigprof.wasmfile import read_names

from conftest import stacks_by_name

# Every function calls env.tick, so each is sampled once (at the host call's return),
# with its own name on the stack.
NAMED_WAT = """
(module $names
  (import "env" "tick" (func $tick))
  (func (@name "unsigned int f(Ärger)") (call $tick))
  (func $_ZN4core3fmt5write17h0123456789abcdefE (call $tick))
  (func $_RNvCs1234_7mycrate3foo (call $tick))
  (func $_ZN9wikipedia7article8print_toERSo (call $tick))
  (func (export "unnamed_export") (call $tick))
  (func $run (export "run") (call 1) (call 2) (call 3) (call 4) (call 5)))
"""
# The same code with no names at all: a stripped release build.
STRIPPED_WAT = """
(module
  (import "env" "tick" (func))
  (func (call 0)) (func (call 0)) (func (call 0)) (func (call 0))
  (func (export "unnamed_export") (call 0))
  (func (export "run") (call 1) (call 2) (call 3) (call 4) (call 5)))
"""
DISPLAYED = ["unsigned int f(Ärger)", "core::fmt::write", "mycrate::foo",
             "wikipedia::article::print_to(std::ostream&)"]


def _spin_then(tick) -> None:
    """Tick after 200 us of CPU: each sample weighs that much, so none rounds to
    nothing in a weighted output (a collapsed line is whole microseconds)."""
    end_ns = time.thread_time_ns() + 200_000
    while time.thread_time_ns() < end_ns:
        pass
    tick()


def _profile(wat: str, **options):
    engine = sigprof.engine()
    module = wasmtime.Module(engine, wat)
    store = wasmtime.Store(engine)
    ticks = ManualTicks()
    linker = wasmtime.Linker(engine)
    linker.define_func("env", "tick", wasmtime.FuncType([], []), lambda: _spin_then(ticks.tick))
    run = linker.instantiate(store, module).exports(store)["run"]
    with sigprof.profile(store, modules=[("names", module)], ticks=ticks, python_frames=False,
                         **options) as prof:
        run(store)
    rec = prof.recording
    return rec, [names for names, _ in stacks_by_name(rec)]


def test_names_keep_spaces_and_mangled_names_are_shown_demangled(tmp_path):
    rec, stacks = _profile(NAMED_WAT)
    callers = [names[-2] for names in stacks]
    assert callers == DISPLAYED + ["unnamed_export"]      # no binary: the export name
    assert all(names[0] == "run" and names[-1] == "<lambda> [env.tick]" for names in stacks)
    # The recording keeps the names as written; a raw file read back shows the same.
    raw = {f.name for f in rec.modules[0].functions}
    assert {"_ZN4core3fmt5write17h0123456789abcdefE", "_RNvCs1234_7mycrate3foo",
            "_ZN9wikipedia7article8print_toERSo"} <= raw
    rec.save(tmp_path / "n.sigprof")
    again = sigprof.load(tmp_path / "n.sigprof")
    assert [names[-2] for names, _ in stacks_by_name(again)] == callers
    assert "mycrate::foo" in again.report() and "mycrate::foo" in again.to_collapsed()


def test_an_unnamed_exported_function_shows_its_export_name_given_the_binary():
    _, stacks = _profile(NAMED_WAT, names=NAMED_WAT.encode())
    assert [names[-2] for names in stacks] == DISPLAYED + ["unnamed_export"]


def test_a_stripped_module_takes_its_names_from_a_named_twin(tmp_path):
    _, bare = _profile(STRIPPED_WAT)
    assert [names[-2] for names in bare] == [f"wasm-function[{i}]" for i in range(1, 5)] + [
        "unnamed_export"]                     # stripped of names, not of its exports
    twin = tmp_path / "debug.wat"
    twin.write_text(NAMED_WAT)
    _, named = _profile(STRIPPED_WAT, names=str(twin))
    assert [names[-2] for names in named] == DISPLAYED + ["unnamed_export"]
    assert [names[0] for names in named] == ["run"] * 5


def test_read_names_reports_imports_exports_and_the_name_section():
    info = read_names(NAMED_WAT.encode())
    assert [(i.module, i.name, i.kind) for i in info.imports] == [("env", "tick", "func")]
    assert info.exports == {"unnamed_export": ("func", 5), "run": ("func", 6)}
    assert info.module_name == "names" and info.function_names[1] == "unsigned int f(Ärger)"


def _recording_size(tmp_path, unreferenced: int) -> int:
    extra = "\n".join(f"(func $unused_{i} (result i32) i32.const {i})" for i in range(unreferenced))
    rec, _ = _profile(NAMED_WAT.replace("  (func $run", extra + "\n  (func $run", 1))
    path = tmp_path / f"r{unreferenced}.sigprof"
    rec.save(path)
    assert not any(f.name.startswith("unused_") for f in rec.modules[0].functions)
    return path.stat().st_size


def test_a_recording_holds_only_the_functions_its_samples_name(tmp_path):
    small, large = _recording_size(tmp_path, 10), _recording_size(tmp_path, 3000)
    assert abs(large - small) < 200          # the digest and code size differ, not the tables


def _many_names(count: int):
    """Names wasmtime's ELF symbols cannot keep: spaces, non-ASCII, past 96 characters."""
    return [f"ns::f{i}(int, {'x' * (i % 230)}) é" if i % 3 else f"plain_{i}" for i in range(count)]


def test_names_are_exact_on_a_module_with_tens_of_thousands_of_functions():
    # wasmtime's own table of the name section's names (in .wasmtime.info) places
    # each name; the symbols alone give '?' for a space and cut names at 96 characters.
    from sigprof import _wasmtime as wt
    from sigprof._wasmtime import image
    names = _many_names(20_000)
    called = [1, 230, 7_820, 19_550]                 # 200-character names among them
    assert all(len(names[i - 1]) > 200 for i in called[1:])
    funcs = "\n".join(f'(func (@name "{n}") (call $tick))' for n in names)
    calls = " ".join(f"(call {i})" for i in called)
    wat = f'(module (import "env" "tick" (func $tick)) {funcs} (func $run (export "run") {calls}))'
    rec, stacks = _profile(wat)
    assert [s[-2] for s in stacks] == [names[i - 1] for i in called]
    module = wasmtime.Module(sigprof.engine(), wat)
    table = image.image_from_memory(*wt.module_image_range(module), "many", True,
                                    wt.read_memory).symbols
    got = {f.index: f.name for f in map(table.function_at, range(len(table))) if f.index > 0}
    assert [got[i + 1] for i in range(len(names))] == names


def test_a_name_table_that_does_not_fit_is_not_used():
    from sigprof._wasmtime import image
    entries = [(1, 0, 3), (2, 3, 4), (5, 7, 2)]          # (index, offset, length): 9 bytes
    info = b"\x07\x00" + bytes([len(entries)]) + bytes(v for e in entries for v in e) + b"\x00"
    assert image.function_name_table(info, 9, 5) == {1: (0, 3), 2: (3, 4), 5: (7, 2)}
    assert image.function_name_table(info, 10, 5) is None       # does not end the names
    assert image.function_name_table(info, 9, 2) is None        # not the last named function
    assert image.function_name_table(info.replace(b"\x03\x01\x00", b"\x04\x01\x00"), 9, 5) is None
