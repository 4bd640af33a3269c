"""Component-model guests (``wasmtime.component``) are profiled like core modules:
calls through wasmtime-py's component ``enter_wasm`` are sampled, and each core
module of the component is named in the profile with its own functions."""

from __future__ import annotations

import re
import time

import pytest
import wasmtime

# The component model's bindings arrived in wasmtime-py 39: on 38 there is nothing to test.
wc = pytest.importorskip("wasmtime.component", reason="this wasmtime-py has no component model")

import sigprof
from sigprof import _wasmtime as wt

from conftest import GUESTS, busy_python

CPU_SECONDS = 0.5           # guest CPU time per profile: ~125 ticks at the 4 ms default
# Leaf's spin and Driver's work run the same loop n times per call, so each holds
# about half the samples.  Taking a share of at least 0.3 and 40 samples, a core
# module is missing from a profile with probability at most 0.7**40 < 1e-6, and
# one of the two in both tests below under 1e-5 (conftest.FALSE_FAILURE_RATE).
MIN_SAMPLES = 40
# Core modules are named from the component's .wasmtime.info, whose string pool
# arrived in wasmtime 43; before, they are numbered in module order.
LEAF, DRIVER = ("Leaf", "Driver") if wt.WASMTIME_MAJOR >= 43 else ("wasm[0]", "wasm[1]")


@pytest.fixture(scope="module")
def component(engine):
    return wc.Component(engine, (GUESTS / "component_two_modules.wat").read_text())


def run_component(engine, component, store=None):
    """Instantiate the component in ``store`` (or a new one) and call ``run`` until
    CPU_SECONDS of CPU time have gone."""
    store = store or wasmtime.Store(engine)
    store.set_epoch_deadline(wt.FAR_DEADLINE)
    run = wc.Linker(engine).instantiate(store, component).get_func(store, "run")
    assert run is not None
    deadline = time.process_time() + CPU_SECONDS
    while time.process_time() < deadline:
        assert run(store, 2_000_000) == 4_000_000
        run.post_return(store)
    return store


def check_core_modules(prof):
    recording = prof.recording
    assert recording.samples >= MIN_SAMPLES, prof.report()
    # A numbered part is named image::wasm[N]; the image's placeholder name is dropped.
    names = {_unplaced(m.name) for m in recording.modules}
    assert {LEAF, DRIVER} <= names, names
    stacks = _unplaced(prof.to_collapsed())      # frames as module!function, caller first
    assert f"{DRIVER}!run;{DRIVER}!work " in stacks, stacks
    assert f"{DRIVER}!run;{LEAF}!spin " in stacks, stacks
    # each call spins for milliseconds: a timeline marker named by its export
    assert any(m.kind == "guest call" and m.name == "run" for m in recording.markers)


def _unplaced(text: str) -> str:
    return re.sub(r"wasm-[0-9a-f]{8}::", "", text)


def test_store_profile_names_each_core_module(engine, component):
    store = wasmtime.Store(engine)
    with sigprof.profile(store) as prof:
        run_component(engine, component, store)
    check_core_modules(prof)


def test_storeless_profile_names_each_core_module(engine, component):
    with sigprof.profile() as prof:
        run_component(engine, component)
    check_core_modules(prof)


def test_hook_is_removed_after_the_profile(engine, component):
    with sigprof.profile():
        assert wt.entry_hook_installed()
    assert not wt.entry_hook_installed()


def test_serialized_component_splits_into_its_core_modules(engine, component):
    """Offline, from the component's compiled image: one table per run of a core
    module's functions, named after the module, and the parts tile .text."""
    from sigprof._wasmtime.image import core_module_parts, read_image
    image = bytes(component.serialize())
    table = read_image(lambda at, size: image[at:at + size], 0, len(image)).symbols
    parts = core_module_parts(table)
    assert [_unplaced(part.name) for _, part in parts][:2] == [LEAF, DRIVER]
    assert parts[0][0] == 0
    for (base, part), (next_base, _) in zip(parts, parts[1:]):
        assert base + part.text_size == next_base
    assert parts[-1][0] + parts[-1][1].text_size == table.text_size
    functions = {part.name: {part.function_at(i).name for i in range(len(part))}
                 for _, part in parts[:2]}
    assert functions == {parts[0][1].name: {"spin"}, parts[1][1].name: {"work", "run"}}


LONG = "x" * 150                  # past the 96 characters an ELF symbol keeps
NAMED_COMPONENT = f"""(component
  (core module $Leaf
    (func (@name "leaf helper (int, char) é") (result i32) i32.const 1)
    (func (@name "leaf::{LONG}::spin") (export "spin") (param $n i32) (result i32) (local.get $n)))
  (core instance $leaf (instantiate $Leaf))
  (core module $Driver
    (import "leaf" "spin" (func $spin (param i32) (result i32)))
    (func (@name "driver work (n)") (param $n i32) (result i32) (local.get $n))
    (func (@name "driver::{LONG}::run") (export "run") (param $n i32) (result i32)
      (i32.add (call 1 (local.get $n)) (call $spin (local.get $n)))))
  (core instance $driver (instantiate $Driver (with "leaf" (instance $leaf))))
  (func (export "run") (param "n" u32) (result u32)
    (canon lift (core func $driver "run"))))"""


def test_each_core_module_keeps_its_names_exactly(engine):
    """Names with spaces, non-ASCII and past the symbols' limit, in both core modules:
    each part finds its own span of wasmtime's shared name section."""
    from sigprof._wasmtime.image import core_module_parts, read_image
    image = bytes(wc.Component(engine, NAMED_COMPONENT).serialize())
    table = read_image(lambda at, size: image[at:at + size], 0, len(image)).symbols
    parts = core_module_parts(table)
    functions = [sorted(part.function_at(i).name for i in range(len(part))) for _, part in parts[:2]]
    assert functions == [sorted(["leaf helper (int, char) é", f"leaf::{LONG}::spin"]),
                         sorted(["driver work (n)", f"driver::{LONG}::run"])]


def test_component_host_function_is_sampled_under_its_caller(engine, native_capture):
    """A Python host function a component imports is sampled as a host frame under the
    guest function that called it.  It holds nearly all the time; taking a share of at
    least 0.5 and MIN_SAMPLES samples, it is missing with probability below 0.5**40."""
    component = wc.Component(engine, (GUESTS / "component_host.wat").read_text())
    linker = wc.Linker(engine)

    def burn(store, n):
        busy_python(n)
    with linker.root() as root:
        root.add_func("burn", burn)
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(wt.FAR_DEADLINE)
    run = linker.instantiate(store, component).get_func(store, "run")
    with sigprof.profile(store) as prof:
        deadline = time.process_time() + CPU_SECONDS
        while time.process_time() < deadline:
            run(store, 100_000)
            run.post_return(store)
    assert prof.recording.samples >= MIN_SAMPLES, prof.report()
    assert "!run;burn;" in prof.to_collapsed(), prof.to_collapsed()     # then its callees
