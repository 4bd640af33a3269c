"""Every loss counter reaches the user (issue 19, item 7), and the ring layout the
C extension writes is the one Python reads (item 5).

Each counter is provoked for real where that can be done from outside: a tiny
ring, guest/host nesting past the native capture's 256 levels, a thread table
filled by 4096 threads.  The host-tick hand-off's failures (its pipe full, its
sampler raising) and sampling-code errors cannot be provoked without breaking
sigprof itself, so for those the test gives ``counter_warnings`` a meta holding
the counter, as a recording of such a run would.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest
import wasmtime

import sigprof
from sigprof import _native, _ring, _session, _wasmtime as wt
from sigprof.profiler import counter_warnings
from sigprof._timer import ManualTicks

from conftest import EXAMPLES, link_host, run_cli, run_python

NESTING_WAT = """
(module
  (import "env" "again" (func $again (param i32)))
  (func (export "down") (param $n i32)
    (if (local.get $n) (then (call $again (i32.sub (local.get $n) (i32.const 1)))))))
"""


def _warnings_mentioning(meta, text):
    return [w for w in meta["warnings"] if text in w]


@pytest.mark.parametrize("when_full", ["newest", "stop"])
def test_samples_dropped_by_a_full_ring_are_a_warning(guest, when_full):
    g = guest("host")
    store = wasmtime.Store(g.engine)
    ticks = ManualTicks()
    inst = link_host(store, g.module, burn=lambda n: ticks.tick())
    with sigprof.profile(store, modules=[("host", g.module)], ticks=ticks, capacity=16,
                         when_full=when_full) as prof:
        inst.exports(store)["run"](store, 50, 1000, 1, 0)
    assert prof.dropped > 0
    said = _warnings_mentioning(prof.meta, f"{prof.dropped} samples were dropped")
    assert len(said) == 1 and "capacity 16" in said[0] and "--capacity" in said[0]
    assert ("start of the run is missing" if when_full == "newest"
            else "rest of it is missing") in said[0]


def test_a_profile_that_lost_nothing_says_nothing_about_losses(guest):
    g = guest("host")
    store = wasmtime.Store(g.engine)
    ticks = ManualTicks()
    inst = link_host(store, g.module, burn=lambda n: ticks.tick())
    with sigprof.profile(store, modules=[("host", g.module)], ticks=ticks) as prof:
        inst.exports(store)["run"](store, 20, 1000, 1, 0)
    assert counter_warnings(prof.meta) == []
    assert all(prof.meta[k] == 0 for k in ("dropped", "lost_ticks", "host_ticks_unsent",
                                           "host_tick_errors", "activations_lost",
                                           "callback_errors"))


def test_nesting_past_the_native_activation_limit_is_a_warning(native_capture):
    levels = 270                      # guest entries; one host call fewer between them
    limit = _native.extension().MAX_ACTIVATIONS
    config = wasmtime.Config()
    # The guest's stack limit covers every re-entry's native frames (~3.5 KiB each, so
    # ~1 MiB here); 2 MiB is the most wasmtime allows (its async stack size).
    wt.set_max_wasm_stack(config, 2 << 20)
    engine = sigprof.engine(config)
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, NESTING_WAT)
    ticks = ManualTicks()
    linker = wasmtime.Linker(engine)
    down = []

    def again(n):
        ticks.tick()
        down[0](store, n)

    linker.define_func("env", "again", wasmtime.FuncType([wasmtime.ValType.i32()], []), again)
    down.append(linker.instantiate(store, module).exports(store)["down"])
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 20 * levels))
    try:
        with sigprof.profile(store, ticks=ticks) as prof:
            down[0](store, levels - 1)
    finally:
        sys.setrecursionlimit(old_limit)
    # Guest entries past the limit, and host calls past it.
    expected = (levels - limit) + (levels - 1 - limit)
    assert prof.meta["activations_lost"] == expected
    said = _warnings_mentioning(prof.meta, f"{expected} guest calls or host calls were nested")
    assert len(said) == 1 and "256" in said[0]


LOST_TICKS_CHILD = r"""
import json, threading, time
import sigprof
from sigprof import _native
from sigprof._timer import ITimerTicks

ext = _native.extension()
with sigprof.profile(ticks=ITimerTicks("cpu", 0.001)) as prof:
    # Fill the thread table: each short-lived thread has a kernel id of its own and
    # claims a slot by asking for its latest tick.
    for _ in range(4200):
        t = threading.Thread(target=ext.last_tick)
        t.start()
        t.join()

    def burn():                      # a thread the table has no room for
        end = time.thread_time() + 0.5
        while time.thread_time() < end:
            pass
    t = threading.Thread(target=burn)
    t.start()
    t.join()
print(json.dumps(prof.meta))
"""


def test_ticks_on_threads_beyond_the_thread_table_are_a_warning(native_capture):
    done = run_python(LOST_TICKS_CHILD)
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout)
    # 0.5 s of CPU on the burner under a 1 ms CPU timer (raised to the kernel tick,
    # at most 10 ms): >= 50 ticks are expected there, so none lost is not a chance
    # outcome; the assertion only needs one.
    assert meta["lost_ticks"] > 0
    said = _warnings_mentioning(meta, f"{meta['lost_ticks']} ticks landed on threads beyond")
    assert len(said) == 1 and "missing from the profile" in said[0]


def test_a_profile_reports_only_the_losses_made_while_it_ran(guest, monkeypatch):
    """The C handler's loss counts are process-wide: a profile takes their growth.
    (Faked here: the two counts cannot be made to grow on cue.)"""
    from sigprof import profiler
    readings = iter([(5, 7), (8, 7)])         # at start, at stop
    monkeypatch.setattr(profiler, "_native_losses", lambda: next(readings))
    g = guest("host")
    store = wasmtime.Store(g.engine)
    ticks = ManualTicks()
    inst = link_host(store, g.module, burn=lambda n: ticks.tick())
    with sigprof.profile(store, ticks=ticks) as prof:
        inst.exports(store)["run"](store, 3, 1000, 1, 0)
    assert (prof.meta["lost_ticks"], prof.meta["host_ticks_unsent"]) == (3, 0)
    assert len(_warnings_mentioning(prof.meta, "3 ticks landed on threads beyond")) == 1
    assert not _warnings_mentioning(prof.meta, "host-tick sampler")


def _burn_cpu_s(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.parametrize("failure", ["pipe-refuses", "sampler-raises"])
def test_ticks_the_host_tick_sampler_never_got_are_a_warning(guest, native_capture, monkeypatch,
                                                              failure):
    """Off the main thread, ticks in a Python host function go down a pipe to the
    host-tick sampler.  Provoked: the pipe refusing them (the C side pointed at a
    pipe whose read end is closed: EPIPE, as a full one gives EAGAIN), or the sampler
    raising (its per-tick function replaced by one that raises)."""
    ext = _native.extension()
    dead_read, dead_write = os.pipe()
    os.close(dead_read)
    if failure == "sampler-raises":
        def raises(tids):
            raise RuntimeError("provoked")
        monkeypatch.setattr(_session, "_host_ticks_elsewhere", raises)
    g = guest("host")
    store = wasmtime.Store(g.engine)

    def burn(n):
        if failure == "pipe-refuses":
            ext.set_host_ticks(0, dead_write)
        _burn_cpu_s(0.3)

    inst = link_host(store, g.module, burn=burn)
    done = {}

    def profile_here():               # not the main thread: host ticks take the pipe
        with sigprof.profile(store, source="itimer") as prof:
            inst.exports(store)["run"](store, 1, 1, 1, 0)
        done["meta"] = prof.meta

    worker = threading.Thread(target=profile_here)
    try:
        worker.start()
        worker.join()
    finally:
        os.close(dead_write)
    meta = done["meta"]
    # 0.3 s of CPU in the host call under the CPU timer (at most 10 ms a tick: >= 30
    # ticks, all but the first 2 ms's past the hand-off's threshold): at least one.
    counter = "host_ticks_unsent" if failure == "pipe-refuses" else "host_tick_errors"
    assert meta[counter] > 0
    said = _warnings_mentioning(meta, f"{meta[counter]} ticks in Python host functions")
    assert len(said) == 1 and "without the Python code it was running" in said[0]


@pytest.mark.parametrize("counter, text", [
    # Not provokable from outside: a full host-tick pipe (as opposed to one that
    # refuses writes, above), an error inside sigprof's own epoch callback.  A meta
    # holding the counter stands for a recording of such a run.
    ("host_ticks_unsent", "4 ticks in Python host functions could not be handed"),
    ("host_tick_errors", "4 ticks in Python host functions could not be handed"),
    ("callback_errors", "4 errors in sigprof's own sampling code"),
    ("lost_ticks", "4 ticks landed on threads beyond sigprof's thread table"),
    ("activations_lost", "4 guest calls or host calls were nested more than 256 deep"),
    ("dropped", "4 samples were dropped because the ring was full"),
])
def test_each_counter_maps_to_one_warning(counter, text):
    said = counter_warnings({"capacity": 10, "when_full": "newest", counter: 4})
    assert len(said) == 1 and said[0].startswith(text)


def test_sigprof_record_prints_the_loss_warnings(tmp_path):
    # demo.wat's run(10): ~290 ms of CPU, ~70 samples at 4 ms; a ring of 2 drops the rest.
    done = run_cli("record", "-o", "out.sigprof", "--capacity", "2", "--invoke", "run",
                   "--arg", "10", EXAMPLES / "demo.wat", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines()
            if line.startswith("sigprof: warning: ") and "samples were dropped" in line]
    assert len(said) == 1, done.stderr
    saved = sigprof.load(tmp_path / "out.sigprof")
    assert any("samples were dropped" in w for w in saved.meta["warnings"])


# --- the ring layout --------------------------------------------------------------

needs_extension = pytest.mark.skipif(_native._csigprof is None, reason="the C extension is not built")


@needs_extension
def test_the_extensions_ring_layout_is_the_one_python_reads():
    _ring.check_layout(_native.extension().ring_layout())      # no error


@needs_extension
def test_a_layout_field_that_differs_is_named(monkeypatch):
    monkeypatch.setattr(_ring, "H_TICKS", 99)
    with pytest.raises(_ring.RingLayoutError, match=r"H_TICKS is 6 in the C extension but 99"):
        _ring.check_layout(_native.extension().ring_layout())
    # The native path is then not used, and says why (the real answer is put back after).
    monkeypatch.setattr(_native, "_reason", None)
    monkeypatch.delenv("SIGPROF_PURE_PYTHON", raising=False)
    assert "H_TICKS is 6 in the C extension" in _native.unavailable_reason()
    assert not _native.available()


@needs_extension
def test_a_layout_field_only_one_side_has_is_named():
    layout = dict(_native.extension().ring_layout())
    del layout["H_CALLEE"]
    with pytest.raises(_ring.RingLayoutError, match="has no H_CALLEE"):
        _ring.check_layout(layout)
    layout = dict(_native.extension().ring_layout(), H_EXTRA=15)
    with pytest.raises(_ring.RingLayoutError, match="H_EXTRA = 15"):
        _ring.check_layout(layout)
