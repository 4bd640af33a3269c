"""Profile options (issue 17): a names file of another module is refused with a warning,
intervals below what the tick source sustains are raised to its floor, a refused option
leaves the process able to profile, and exported functions are known by their export
names without ``names=``."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import wasmtime

import sigprof
from sigprof import _native, _timer
from sigprof._session import SESSION
from sigprof._timer import ManualTicks
from sigprof.profiler import ProfileWarning

from conftest import EXAMPLES, GUESTS, ROOT, build_c_guest, stacks_by_name

DEMO = EXAMPLES / "demo.wat"
# Another program: one import, different functions (the imp.wat).
OTHER_WAT = """
(module
  (import "env" "log" (func $log (param i32)))
  (func $run (export "run") (param i32) (result i32) (call $log (local.get 0)) (local.get 0))
  (func $helper (param i32) (result i32) (local.get 0)))
"""
# demo.wat with its names stripped: the same program, as a release build.
STRIPPED_DEMO = "\n".join(line.split(";;")[0] for line in DEMO.read_text().splitlines())
for _name in ("$fib", "$hot_loop", "$cold_loop", "$run"):
    STRIPPED_DEMO = STRIPPED_DEMO.replace(f"(func {_name} ", "(func ")
for _index, _name in enumerate(("$fib", "$hot_loop", "$cold_loop", "$run")):
    STRIPPED_DEMO = STRIPPED_DEMO.replace(f"(call {_name} ", f"(call {_index} ")


def _cli(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SIGPROF_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "sigprof", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _demo_run(engine: wasmtime.Engine, module: wasmtime.Module, **options):
    """Profile one short demo run on the wall clock (so every run has ticks)."""
    store = wasmtime.Store(engine)
    inst = wasmtime.Linker(engine).instantiate(store, module)
    options.setdefault("clock", "wall")
    with sigprof.profile(store, modules=[("demo", module)], python_frames=False,
                         **options) as prof:
        inst.exports(store)["fib"](store, 30)
    return prof.recording


# --- 2: a names file that is not a build of the module ---------------------------------

def test_names_of_another_module_are_not_used_and_the_warning_says_why(engine):
    module = wasmtime.Module.from_file(engine, str(DEMO))
    with pytest.warns(ProfileWarning, match="not a build of demo: it imports 1 functions, "
                                            "the module 0"):
        rec = _demo_run(engine, module, names=OTHER_WAT.encode())
    assert ("names= the bytes given is not a build of demo: it imports 1 functions, the "
            "module 0; its names were not used") in rec.meta["warnings"]
    names = {name for stack, _ in stacks_by_name(rec) for name in stack}
    assert "fib" in names and "log" not in names          # the module's own names


def test_a_differently_shaped_module_is_refused_for_each_reason(engine):
    def why(profiled: str, named: str) -> str:
        module = wasmtime.Module(engine, profiled)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prof = sigprof.profile(wasmtime.Store(engine), modules=[("m", module)],
                                   names=named.encode())
        assert not prof._names
        return str(caught[0].message)
    two = '(module (func (export "a")) (func (export "b")))'
    assert "defines 1 functions, the module 2" in why(two, '(module (func (export "a")))')
    assert "does not export the function 'b'" in why(
        two, '(module (func (export "a")) (func (export "c")))')
    assert "takes 1 parameter(s) and returns 0 value(s), the module's takes 0" in why(
        two, '(module (func (export "a")) (func (export "b") (param i32)))')
    assert "imports env.g where the module imports env.f" in why(
        '(module (import "env" "f" (func)))', '(module (import "env" "g" (func)))')


def test_a_stripped_build_takes_the_names_of_its_named_build(engine, tmp_path):
    module = wasmtime.Module(engine, STRIPPED_DEMO)
    named = tmp_path / "demo.wat"
    named.write_text(DEMO.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProfileWarning)
        rec = _demo_run(engine, module, names=str(named))
    assert not any("not a build" in w for w in rec.meta["warnings"])
    assert {"fib"} <= {name for stack, _ in stacks_by_name(rec) for name in stack}


def test_a_debug_build_of_a_c_program_is_accepted_and_another_one_refused(wasi_cc, tmp_path):
    release = build_c_guest(wasi_cc, GUESTS / "wordfreq.c", tmp_path / "release.wasm")
    debug = build_c_guest(wasi_cc, GUESTS / "wordfreq.c", tmp_path / "debug.wasm", "-g")
    other = build_c_guest(wasi_cc, GUESTS / "spin_exit.c", tmp_path / "other.wasm")
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, str(release))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accepted = sigprof.profile(wasmtime.Store(engine), modules=[module], names=str(debug))
        refused = sigprof.profile(wasmtime.Store(engine), modules=[module], names=str(other))
    assert accepted._names and not refused._names
    assert len([w for w in caught if "not a build" in str(w.message)]) == 1


def test_the_cli_warns_once_on_stderr_and_in_the_recording(tmp_path):
    other = tmp_path / "imp.wat"
    other.write_text(OTHER_WAT)
    out = tmp_path / "run.sigprof"
    proc = _cli("record", "-o", out, "--clock", "wall", "--names", other, "--invoke", "fib",
                "--arg", "20", DEMO)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "not a build" in line]
    assert lines == ["sigprof: warning: names= imp.wat is not a build of demo.wat: it imports "
                     "1 functions, the module 0; its names were not used"]
    assert "Traceback" not in proc.stderr and "ProfileWarning" not in proc.stderr
    assert any("not a build" in w for w in sigprof.load(out).meta["warnings"])


# --- 3: intervals below the tick source's floor ----------------------------------------

def test_a_wall_interval_below_the_floor_is_raised_with_a_warning(engine):
    module = wasmtime.Module.from_file(engine, str(DEMO))
    rec = _demo_run(engine, module, interval=1e-6)
    floor = _timer.INTERVAL_FLOOR_S["itimer"]
    assert rec.meta["requested_interval_s"] == 1e-6
    assert rec.meta["interval_s"] == pytest.approx(floor)
    assert f"interval raised from 0.001 ms to {floor * 1e3:g} ms: the wall clock's interval " \
           f"timer cannot sustain a finer one" in " | ".join(rec.meta["warnings"])


def test_a_cpu_interval_below_the_perf_floor_is_raised(engine):
    module = wasmtime.Module.from_file(engine, str(DEMO))
    rec = _demo_run(engine, module, interval=1e-6, clock="cpu")
    if rec.meta["tick_source"] == "perf":
        floor = _timer.INTERVAL_FLOOR_S["perf"]
        assert rec.meta["interval_s"] == pytest.approx(floor)
        assert f"interval raised from 0.001 ms to {floor * 1e3:g} ms: perf events cannot " \
               f"sustain a finer one" in " | ".join(rec.meta["warnings"])
    else:                           # perf refused here: the itimer's kernel tick, said so
        assert any(w.startswith("interval raised from 0.001 ms") and "perf events were refused"
                   in w for w in rec.meta["warnings"])


def test_an_interval_at_the_floor_is_kept_without_a_warning(engine):
    module = wasmtime.Module.from_file(engine, str(DEMO))
    floor = _timer.INTERVAL_FLOOR_S["itimer"]
    rec = _demo_run(engine, module, interval=floor)
    assert rec.meta["interval_s"] == pytest.approx(floor)
    assert not any("interval raised" in w for w in rec.meta["warnings"])


def test_the_cli_names_the_requested_and_the_used_interval(tmp_path):
    proc = _cli("record", "-o", tmp_path / "x.json", "--clock", "wall", "--interval", "1us",
                "--invoke", "fib", "--arg", "20", DEMO)
    assert proc.returncode == 0, proc.stderr
    floor = _timer.INTERVAL_FLOOR_S["itimer"]
    assert f"warning: interval raised from 0.001 ms to {floor * 1e3:g} ms" in proc.stderr


# --- 4: a refused option leaves the process able to profile -----------------------------

BAD_OPTIONS = [
    ({"interval": 1e-7}, "interval=1e-07: "),
    ({"interval": 1e-7, "source": "perf"}, "interval=1e-07: "),
    ({"interval": float("nan")}, "interval=nan: "),
    ({"interval": True}, "interval=True: "),
    ({"interval": 61}, "interval=61: "),
    ({"clock": "gpu"}, "clock='gpu': "),
    ({"source": "dtrace"}, "source='dtrace': "),
    ({"source": "perf", "clock": "wall"}, "source='perf': "),
    ({"max_depth": 0}, "max_depth=0: "),
    ({"capacity": -1}, "capacity=-1: "),
    ({"when_full": "oldest"}, "when_full='oldest': "),
    ({"name": 3}, "name=3: "),
    ({"python_frames": "yes"}, "python_frames='yes': "),
    ({"use_tick_pc": None}, "use_tick_pc=None: "),
    ({"host_details": 1}, "host_details=1: "),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=[m for _, m in BAD_OPTIONS])
def test_a_refused_option_is_named_and_a_later_profile_works(engine, options, message):
    module = wasmtime.Module.from_file(engine, str(DEMO))
    store = wasmtime.Store(engine)
    with pytest.raises(ValueError) as refused:
        with sigprof.profile(store, modules=[module], **options):
            pass
    assert str(refused.value).startswith(message)
    assert SESSION.timer is None and not SESSION.profiles and not SESSION.hooks_installed()
    rec = _demo_run(engine, module, clock="cpu")      # the clock whose handler was left behind
    assert rec.meta["capture"] in ("native", "python")


def test_an_unknown_option_is_refused_by_name():
    with pytest.raises(TypeError, match="unknown profile option 'intervl'; the options are "):
        sigprof.profile(intervl=0.001)


@pytest.mark.parametrize("start", ["serve", "continuous"])
def test_a_background_profile_refuses_a_bad_option_when_asked_not_at_its_first_profile(
        start, tmp_path):
    # One options object, checked where it is made: before the server listens or the
    # writer's thread starts, not at the first request or period.
    begin = {"serve": lambda: sigprof.serve("127.0.0.1:0", max_depth=0),
             "continuous": lambda: sigprof.continuous(tmp_path / "profiles", max_depth=0)}[start]
    with pytest.raises(ValueError, match="^max_depth=0: "):
        begin()
    assert not (tmp_path / "profiles").exists()


def test_a_perf_start_failing_midway_uninstalls_the_handler(engine, monkeypatch):
    if not _native.available():
        pytest.skip("perf events need the native tick handler")
    module = wasmtime.Module.from_file(engine, str(DEMO))

    def broken(period_ns: int, signum: int) -> None:
        raise ValueError("broken perf_start")
    monkeypatch.setattr(_native.extension(), "perf_start", broken)
    with pytest.raises(ValueError, match="broken perf_start"):
        sigprof.profile(wasmtime.Store(engine), source="perf", interval=0.001).start()
    monkeypatch.undo()
    assert SESSION.timer is None and not SESSION.hooks_installed()
    _demo_run(engine, module, clock="cpu")


def test_a_ring_that_cannot_be_allocated_undoes_the_timer(engine):
    module = wasmtime.Module.from_file(engine, str(DEMO))
    store = wasmtime.Store(engine)
    with pytest.raises((OSError, MemoryError, OverflowError, ValueError)):
        sigprof.profile(store, capacity=1 << 50).start()     # an 8-exabyte ring
    assert SESSION.timer is None and not SESSION.profiles and not SESSION.hooks_installed()
    _demo_run(engine, module)


def test_hooks_failing_to_install_stop_the_timer(engine, monkeypatch):
    module = wasmtime.Module.from_file(engine, str(DEMO))

    def broken() -> None:
        raise RuntimeError("no hooks today")
    monkeypatch.setattr(SESSION, "_install_hooks", broken)
    with pytest.raises(RuntimeError, match="no hooks today"):
        sigprof.profile(wasmtime.Store(engine), clock="wall").start()
    monkeypatch.undo()
    assert SESSION.timer is None and not SESSION.profiles
    _demo_run(engine, module)


# --- 10: export names without names= -----------------------------------------------------

EXPORTING_WAT = """
(module
  (import "env" "tick" (func))
  (func (export "first") (call 0))
  (func (call 0))
  (func (export "run") (call 1) (call 2)))
"""


@pytest.mark.parametrize("given", [True, False], ids=["modules", "discovered"])
def test_exported_functions_are_known_by_their_export_names(engine, given):
    module = wasmtime.Module(engine, EXPORTING_WAT)
    store = wasmtime.Store(engine)
    ticks = ManualTicks()
    linker = wasmtime.Linker(engine)
    linker.define_func("env", "tick", wasmtime.FuncType([], []), lambda: ticks.tick())
    run = linker.instantiate(store, module).exports(store)["run"]
    with sigprof.profile(store, modules=[module] if given else None, ticks=ticks,
                         python_frames=False) as prof:
        run(store)
    callers = [stack[-2] for stack, _ in stacks_by_name(prof.recording)]
    assert callers == ["first", "wasm-function[2]"]


def test_the_cli_shows_export_names_of_a_module_without_a_name_section(tmp_path):
    bare = tmp_path / "bare.wat"
    bare.write_text(STRIPPED_DEMO)
    proc = _cli("record", "-o", tmp_path / "x.json", "--clock", "wall", "--invoke", "fib",
                "--arg", "30", bare)
    assert proc.returncode == 0, proc.stderr
    assert "fib [bare.wat]" in proc.stderr and "wasm-function[0]" not in proc.stderr


def test_the_names_check_never_asks_wasmtime_for_a_v128_type(engine):
    # wasmtime-py 50 aborts the process when a v128 value type's kind is read.
    wat = '(module (func (export "v") (param v128)) (func (export "n") (param i32)))'
    module = wasmtime.Module(engine, wat)
    prof = sigprof.profile(wasmtime.Store(engine), modules=[("m", module)], names=wat.encode())
    assert prof._names
