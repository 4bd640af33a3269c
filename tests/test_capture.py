"""Capture at any depth, on both capture paths (issue 10's statements, one test each)."""

from __future__ import annotations

import threading
import time

import pytest
import wasmtime

import sigprof
from sigprof._timer import FakeClock, ManualTicks

from conftest import ROOT, run_cli, stacks_by_name

REENTRY_WAT = """
(module $reentry
  (import "env" "reenter" (func $reenter))
  (func $outer (export "outer") (call $middle))
  (func $middle (call $reenter))
  (func $inner (export "inner") (param $n i32)
    (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))))
"""


def _deep_profile(guest, depth: int, spin: int, **options):
    g = guest("recursion")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("recursion", g.module)], **options) as prof:
        inst.exports(store)["rec"](store, depth, spin)
    return prof.recording


def test_a_3000_deep_recursion_is_captured_whole_at_default_settings(guest):
    rec = _deep_profile(guest, 3000, 400_000_000)
    leaf_stacks = [names for names, _ in stacks_by_name(rec) if names[-1] == "leaf"]
    assert len(leaf_stacks) >= 10, "too few samples in the leaf to judge"
    for names in leaf_stacks:
        assert names == ["rec"] * 3001 + ["leaf"]          # rec(3000) .. rec(0), then leaf
    assert rec.truncated == 0


def test_repeated_deep_stacks_share_ring_space_so_none_are_dropped(guest):
    if not sigprof._native.available():
        pytest.skip("the native capture is not in use here")
    # ~1 s at 4 kHz, 3000 deep: whole copies would need 3x the default PC stream.
    rec = _deep_profile(guest, 3000, 900_000_000, clock="wall", interval=0.00025)
    assert rec.meta["samples_taken"] > 2000
    assert rec.dropped == 0 and rec.samples == rec.meta["samples_taken"]
    assert rec.meta["shared_stacks"] > 0.9 * rec.samples
    leaf = [names for names, _ in stacks_by_name(rec) if names[-1] == "leaf"]
    assert leaf and all(names == ["rec"] * 3001 + ["leaf"] for names in leaf)


def _reentrant_stacks():
    """Python -> outer -> middle -> Python reenter -> inner, a tick at inner's entry."""
    engine = sigprof.engine()
    module = wasmtime.Module(engine, REENTRY_WAT)
    store = wasmtime.Store(engine)
    ticks = ManualTicks()
    exports = {}

    def reenter():
        ticks.tick()                    # the guest samples at inner's entry check
        exports["inner"](store, 1000)
    linker = wasmtime.Linker(engine)
    linker.define_func("env", "reenter", wasmtime.FuncType([], []), reenter)
    instance = linker.instantiate(store, module)
    exports.update({name: instance.exports(store)[name] for name in ("outer", "inner")})
    with sigprof.profile(store, modules=[("reentry", module)], ticks=ticks,
                         use_tick_pc=False) as prof:
        exports["outer"](store)
    return prof.meta["capture"], [names for names, _ in stacks_by_name(prof.recording)]


def _recursion_stacks(guest):
    rec = _deep_profile(guest, 200, 60_000_000, clock="wall", interval=0.0005, use_tick_pc=False)
    return rec.meta["capture"], {tuple(names) for names, _ in stacks_by_name(rec)
                                 if names[-1] == "leaf"}


def test_native_and_pure_python_paths_record_the_same_stacks(guest, monkeypatch):
    if not sigprof._native.available():
        pytest.skip("the native capture is not in use here")
    native = _reentrant_stacks(), _recursion_stacks(guest)
    monkeypatch.setenv("SIGPROF_PURE_PYTHON", "1")
    pure = _reentrant_stacks(), _recursion_stacks(guest)
    assert [kind for kind, _ in native] == ["native", "native"]
    assert [kind for kind, _ in pure] == ["python", "python"]
    # Re-entry: the outer guest frames continue under the inner ones; the native
    # capture also shows the host function between them (the pure path cannot).
    assert native[0][1] == [["outer", "middle", "reenter [env.reenter]", "inner"]]
    assert pure[0][1] == [["outer", "middle", "inner"]]
    assert native[1][1] == pure[1][1] == {("rec",) * 201 + ("leaf",)}


def test_report_and_collapsed_on_a_deep_recording(guest, tmp_path):
    rec = _deep_profile(guest, 3000, 150_000_000, clock="wall", interval=0.0005)
    assert rec.samples > 50
    report = rec.report()
    path = [line for line in report.splitlines() if "rec  [recursion]" in line]
    assert len(path) >= 3001                                   # the hottest path, whole
    collapsed = rec.to_collapsed().splitlines()
    assert any(("recursion!rec;" * 3001 + "recursion!leaf ") in line for line in collapsed)
    rec.save(tmp_path / "deep.sigprof")
    out = run_cli("report", tmp_path / "deep.sigprof", "--top", "3", cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "leaf  [recursion]" in out.stdout


STEPS_WAT = """
(module $steps
  (import "env" "step" (func $step))
  (func $run (export "run") (param $n i32)
    (loop $l
      (call $step)
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (local.get $n)))))
"""


@pytest.mark.parametrize("path", ["native", "python"])
def test_interval_arithmetic_is_exact_with_a_fake_clock(path, monkeypatch):
    if path == "native" and not sigprof._native.available():
        pytest.skip("the native capture is not in use here")
    if path == "python":
        monkeypatch.setenv("SIGPROF_PURE_PYTHON", "1")
    clock = FakeClock(cpu_ns=10_000, wall_ns=20_000)
    ticks = ManualTicks(fake_clock=clock)
    engine = sigprof.engine()
    module = wasmtime.Module(engine, STEPS_WAT)
    store = wasmtime.Store(engine)

    def step():                        # 4 ms of CPU and 5 ms of wall time, then a tick
        clock.advance(4_000_000, 5_000_000)
        ticks.tick()
    linker = wasmtime.Linker(engine)
    linker.define_func("env", "step", wasmtime.FuncType([], []), step)
    run = linker.instantiate(store, module).exports(store)["run"]
    with sigprof.profile(store, modules=[("steps", module)], ticks=ticks) as prof:
        clock.advance(1_000_000, 3_000_000)      # before the guest: goes into the first sample
        run(store, 5)
        clock.advance(2_000_000, 7_000_000)      # after the last tick: reported as unsampled
    rec = prof.recording
    assert prof.meta["capture"] == path
    table = rec.sample_table
    assert list(table.cpu_ns) == [5_000_000] + [4_000_000] * 4
    assert list(table.wall_ns) == [8_000_000] + [5_000_000] * 4
    assert list(table.time_ns) == [8_000_000 + 5_000_000 * i for i in range(5)]
    assert list(table.ticks) == [1] * 5
    assert [names for names, _ in stacks_by_name(rec)] == [["run", "step [env.step]"]] * 5
    assert prof.meta["unsampled_cpu_ns"] == 2_000_000
    assert prof.meta["unsampled_wall_ns"] == 7_000_000
    assert prof.meta["thread_cpu_ns"] == 23_000_000
    assert prof.meta["duration_ns"] == 35_000_000
    assert prof.meta["overhead_cpu_ns"] == 0                # the fake clock stood still


def test_the_native_handler_records_each_ticks_thread_and_pc(guest):
    if not sigprof._native.available():
        pytest.skip("the native capture is not in use here")
    from sigprof._timer import ITimerTicks
    ticks = ITimerTicks("cpu", 0.004)
    g = guest("recursion")
    store, inst = g.instance()
    total_before = sigprof._native.extension().tick_counts()[0]
    with sigprof.profile(store, modules=[("recursion", g.module)], ticks=ticks) as prof:
        inst.exports(store)["rec"](store, 10, 100_000_000)
    last = ticks.last_tick()
    # Thread records start afresh with the profile, so ``last.number`` is this thread's
    # ticks from the arming to the disarming of the timer.  The profile counts ticks
    # until its captures finish, a moment before the disarm (a tick may land between),
    # and ``ticks.ticks`` read now is the handler's final count, every thread's.
    ticks_while_armed = ticks.ticks - total_before
    assert last is not None and 5 < prof.meta["ticks"] <= ticks_while_armed
    assert 5 < last.number <= ticks_while_armed
    assert last.tid == threading.get_native_id()      # a CPU timer tick lands on the busy thread
    assert last.pc != 0 and 0 < last.cpu_ns <= time.thread_time_ns()
    assert ManualTicks().last_tick() is None
