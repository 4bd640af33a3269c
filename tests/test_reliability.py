"""Reliability and safety (issue 5): semantics, faults, other signal users, sharing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import threading

import pytest
import wasmtime

import sigprof
from sigprof import _native
from sigprof._ring import MARK_ENTRY

from conftest import (EXAMPLES, GUESTS, LIVENESS_LIMIT_S, ROOT, build_c_guest, busy_python, cli_env,
                      link_host, run_python, running, wait_until_sampling)

I32 = wasmtime.ValType.i32()


# --- 1. the guest computes the same with and without profiling ---------------------------

def _run_guests(engine, guest, profiled: bool):
    """Run several guests; return what they computed and what they did."""
    results = []
    effects = []

    def record(n):
        effects.append(("burn", n))
        x = 0
        for i in range(n):
            x += i * i
        effects.append(("sum", x))

    def nap(ms):
        effects.append(("nap", ms))

    store = wasmtime.Store(engine)
    host = link_host(store, guest("host").module, burn=record, nap=nap)
    demo = wasmtime.Instance(store, guest("demo").module, [])
    rec = wasmtime.Instance(store, guest("recursion").module, [])
    trap = wasmtime.Instance(store, guest("trap").module, [])
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)

    def body():
        results.append(demo.exports(store)["run"](store, 3))
        results.append(demo.exports(store)["fib"](store, 24))
        results.append(rec.exports(store)["rec"](store, 100, 5_000_000))
        results.append(host.exports(store)["run"](store, 7, 1_000_000, 30_000, 1))
        try:
            trap.exports(store)["run"](store, 3_000_000)
        except wasmtime.Trap as exc:
            results.append(("trap", exc.trap_code, exc.message))

    if profiled:
        with sigprof.profile(store) as prof:
            body()
        assert prof.samples > 0
    else:
        body()
    return results, effects


def test_guests_compute_the_same_with_and_without_profiling(engine, guest):
    plain = _run_guests(engine, guest, profiled=False)
    profiled = _run_guests(engine, guest, profiled=True)
    assert profiled == plain
    assert plain[0][-1][0] == "trap"


def test_a_wasi_program_prints_and_exits_the_same(wasi_cc, tmp_path):
    wasm = build_c_guest(wasi_cc, GUESTS / "spin_exit.c", tmp_path / "spin_exit.wasm")
    outputs = []
    for profiled in (False, True):
        out = tmp_path / f"out-{profiled}.txt"
        code = (
            "import sys, wasmtime, sigprof\n"
            "engine = sigprof.engine(); module = wasmtime.Module.from_file(engine, sys.argv[1])\n"
            "store = wasmtime.Store(engine); wasi = wasmtime.WasiConfig()\n"
            "wasi.argv = ['spin_exit', '7', '200']; wasi.stdout_file = sys.argv[2]\n"
            "store.set_wasi(wasi); linker = wasmtime.Linker(engine); linker.define_wasi()\n"
            "store.set_epoch_deadline(sigprof.FAR_DEADLINE)\n"
            "start = linker.instantiate(store, module).exports(store)['_start']\n"
            "def go():\n"
            "    try:\n"
            "        start(store)\n"
            "    except wasmtime.ExitTrap as e:\n"
            "        print('exit', e.code)\n"
            "if sys.argv[3] == 'True':\n"
            "    with sigprof.profile(store, modules=[('spin_exit', module)]) as prof:\n"
            "        go()\n"
            "    prof.save(sys.argv[2] + '.json')\n"
            "else:\n"
            "    go()\n")
        proc = run_python(code, str(wasm), str(out), str(profiled))
        assert proc.returncode == 0, proc.stderr
        outputs.append((proc.stdout, out.read_text()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0].strip() == "exit 7" and outputs[0][1].startswith("checksum=")


# --- 2. faults keep the recording -----------------------------------------------------------

def _saved_and_converted(prof, tmp_path):
    raw = tmp_path / "fault.sigprof"
    prof.save(raw)
    prof.save(tmp_path / "fault.json")
    again = sigprof.load(raw)
    assert again.samples == prof.samples
    assert again.to_firefox() == prof.to_firefox()
    return again


def test_an_exception_raised_in_a_host_function_propagates_unchanged(guest, engine, tmp_path):
    store = wasmtime.Store(engine)
    boom = ValueError("raised by the host")
    calls = []

    def burn(n):
        calls.append(n)
        if len(calls) == 3:
            raise boom
        busy_python(n)

    inst = link_host(store, guest("host").module, burn=burn)
    prof = sigprof.profile(store, modules=[("host", guest("host").module)])
    with pytest.raises(ValueError) as info:
        with prof:
            inst.exports(store)["run"](store, 10, 5_000_000, 200_000, 0)
    assert info.value is boom
    assert len(calls) == 3
    _saved_and_converted(prof, tmp_path)


def test_a_guest_trap_keeps_the_recording(guest, tmp_path):
    g = guest("trap")
    store, inst = g.instance()
    prof = sigprof.profile(store, modules=[("trap", g.module)])
    with pytest.raises(wasmtime.Trap) as info:
        with prof:
            inst.exports(store)["run"](store, 150_000_000)
    assert info.value.trap_code == wasmtime.TrapCode.UNREACHABLE
    assert _saved_and_converted(prof, tmp_path).samples > 0


def test_wasi_proc_exit_keeps_the_recording(wasi_cc, engine, tmp_path):
    wasm = build_c_guest(wasi_cc, GUESTS / "spin_exit.c", tmp_path / "spin_exit.wasm")
    module = wasmtime.Module.from_file(engine, str(wasm))
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = ["spin_exit", "3", "5000"]      # ~100 ms of CPU: ~25 ticks
    wasi.stdout_file = str(tmp_path / "stdout")
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)
    start = linker.instantiate(store, module).exports(store)["_start"]
    prof = sigprof.profile(store, modules=[("spin_exit", module)])
    with pytest.raises(wasmtime.ExitTrap) as info:
        with prof:
            start(store)
    assert info.value.code == 3
    rec = _saved_and_converted(prof, tmp_path)
    names = {f.name for funcs, _ in rec.iter_stacks() for f in funcs}
    assert "mix" in names or "rounds" in names


def test_running_out_of_ring_capacity_keeps_what_fits(guest, tmp_path):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, capacity=8, when_full="stop") as prof:
        inst.exports(store)["run"](store, 4)
    assert prof.samples == 8 and prof.dropped > 0
    _saved_and_converted(prof, tmp_path)


CTRL_C = """
import signal, sys, wasmtime, sigprof
engine = sigprof.engine()
module = wasmtime.Module.from_file(engine, sys.argv[1])
store = wasmtime.Store(engine)
run = wasmtime.Instance(store, module, []).exports(store)["run"]
prof = sigprof.profile(store, modules=[("demo", module)])
try:
    with prof:
        run(store, 100000)          # minutes of work: only Ctrl-C ends it
except KeyboardInterrupt:
    print("interrupted yes")
prof.save(sys.argv[2])
print("samples", prof.samples)
print("handler", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
print("timer", signal.getitimer(signal.ITIMER_VIRTUAL))
"""


def test_ctrl_c_stops_a_long_guest_and_keeps_the_recording(tmp_path):
    out = tmp_path / "interrupted.json"
    with running([sys.executable, "-c", CTRL_C, ROOT / "examples" / "demo.wat", out],
                 env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        wait_until_sampling(proc)          # ~50 ticks in: well inside the guest's run
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=LIVENESS_LIMIT_S)
    assert proc.returncode == 0, stderr
    lines = dict(line.split(" ", 1) for line in stdout.strip().splitlines())
    assert lines["interrupted"] == "yes"                # the guest stopped at the Ctrl-C
    assert int(lines["samples"]) > 10
    assert lines["handler"] == "True" and lines["timer"] == "(0.0, 0.0)"
    assert json.loads(out.read_text())["threads"][0]["samples"]["length"] > 10


# --- 3. other signal users -------------------------------------------------------------------

def test_profiling_inside_a_running_asyncio_loop_keeps_its_signal_handling(guest):
    g = guest("demo")
    got = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: got.append("usr1"))
        store, inst = g.instance()
        killer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
        with sigprof.profile(store) as prof:
            killer.start()
            inst.exports(store)["run"](store, 6)              # the signal lands in here
            loop.add_signal_handler(signal.SIGUSR2, lambda: got.append("usr2"))
        killer.join()
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR2)
        await asyncio.sleep(0.05)
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.remove_signal_handler(signal.SIGUSR2)
        return prof

    prof = asyncio.run(main())
    assert got == ["usr1", "usr2"]
    assert prof.samples > 0


def test_a_timer_already_in_use_is_refused(guest):
    g = guest("demo")
    store, _ = g.instance()
    signal.setitimer(signal.ITIMER_VIRTUAL, 100.0, 100.0)   # "another profiler"
    try:
        with pytest.raises(RuntimeError, match="ITIMER_VIRTUAL is already armed"):
            sigprof.profile(store, clock="cpu").start()
        remaining, interval = signal.getitimer(signal.ITIMER_VIRTUAL)
        assert interval == 100.0                             # untouched
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0.0, 0.0)
    signal.setitimer(signal.ITIMER_PROF, 100.0, 100.0)
    try:
        with pytest.raises(RuntimeError, match="ITIMER_PROF is already armed"):
            sigprof.profile(store, clock="prof").start()
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0.0, 0.0)


def test_a_guest_can_be_profiled_from_another_thread(guest):
    if not _native.available():
        pytest.skip("off the main thread needs the native tick handler")
    g = guest("demo")
    out = {}

    def worker():
        store, inst = g.instance()
        try:
            with sigprof.profile(store, modules=[("demo", g.module)]) as prof:
                inst.exports(store)["run"](store, 4)
            out["prof"] = prof
        except BaseException as exc:  # reported below
            out["error"] = exc
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert "error" not in out, out.get("error")
    prof = out["prof"]
    assert prof.samples > 10
    assert {f.name for funcs, _ in prof.recording.iter_stacks() for f in funcs} >= {"hot_loop"}


def test_the_wakeup_relay_off_the_main_thread_fails_with_advice(guest):
    from sigprof._timer import ITimerTicks
    g = guest("demo")
    out = {}

    def worker():
        store, _ = g.instance()
        try:
            sigprof.profile(store, ticks=ITimerTicks("cpu", 0.004, relay="wakeup")).start()
        except RuntimeError as exc:
            out["error"] = str(exc)
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert "main thread" in out["error"]


FORK = """
import os, signal, sys, wasmtime, sigprof
from conftest import disposition
engine = sigprof.engine()
module = wasmtime.Module.from_file(engine, sys.argv[1])
store = wasmtime.Store(engine)
run = wasmtime.Instance(store, module, []).exports(store)["run"]
before = disposition(signal.SIGVTALRM)
r, w = os.pipe()
with sigprof.profile(store, interval=float(sys.argv[2])) as prof:
    run(store, 2)
    before_fork = prof.samples
    pid = os.fork()
    if pid == 0:
        # Public observations only: nothing armed, the parent's handler gone, and
        # the child can profile on its own.
        try:
            ok = (signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
                  and disposition(signal.SIGVTALRM) == before)
            child_store = wasmtime.Store(engine)
            child_run = wasmtime.Instance(child_store, module, []).exports(child_store)["run"]
            with sigprof.profile(child_store) as child:
                child_run(child_store, 2)
            os.write(w, f"{ok} {child.samples > 0}".encode())
        except BaseException as exc:
            os.write(w, f"child-failed {exc!r}"[:100].encode())
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    run(store, 2)                          # the parent's ticks go on after the fork
    after_fork = prof.samples
print(os.read(r, 100).decode(), status, after_fork > before_fork > 0, prof.meta["tick_source"])
"""


@pytest.mark.parametrize("interval", ["0.004", "0.00025"])
def test_a_forked_child_inherits_no_running_timer_or_relay(interval):
    # At 0.25 ms the ticks are perf events where the system allows them: the child
    # closes its copies of the parent's events without stopping them.
    proc = run_python(FORK, str(ROOT / "examples" / "demo.wat"), interval)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:4] == ["True", "True", "0", "True"]


# --- 4. safe to share --------------------------------------------------------------------------

def test_default_profiles_hold_no_host_addresses_env_or_paths(engine, tmp_path, monkeypatch):
    secret_env = "sigprof-secret-env-value-31337"
    monkeypatch.setenv("SIGPROF_TEST_SECRET", secret_env)
    private = tmp_path / "private-dir"
    private.mkdir()
    wat = (EXAMPLES / "demo.wat").read_text()
    (private / "app.wat").write_text(wat)
    module = wasmtime.Module.from_file(engine, str(private / "app.wat"))
    other = wasmtime.Module.from_file(engine, str(GUESTS / "twin_a.wat"))
    store = wasmtime.Store(engine)
    app = wasmtime.Instance(store, module, []).exports(store)
    hidden = wasmtime.Instance(store, other, []).exports(store)
    prof = sigprof.profile(store, modules=[("app.wat", module)])
    prof.start()
    (capture,) = prof._captures
    ring = capture.ring
    try:
        app["run"](store, 2)
        hidden["run"](store, 60_000_000)          # a module not on the allow list
    finally:
        prof.stop()
    # Words with bit 63 set are the ring's stack marks, not addresses (MARK_ENTRY's
    # bytes, seven zeros and 0x80, occur by chance in any binary file).
    raw_pcs = {pc for s in ring.read() for pc in s.pcs if pc < MARK_ENTRY}
    assert len(raw_pcs) > 3                       # the check below has something to look for
    outputs = {}
    for name in ("p.json", "p.sigprof", "p.collapsed", "p.txt"):
        prof.save(tmp_path / name)
        outputs[name] = (tmp_path / name).read_bytes()
    for name, data in outputs.items():
        assert secret_env.encode() not in data, name
        assert str(private).encode() not in data and str(ROOT).encode() not in data, name
        assert b"twin_a" not in data and b"work" not in data, name     # the hidden module
        for pc in raw_pcs:                                             # no host address
            assert struct.pack("<Q", pc) not in data, name
            assert str(pc).encode() not in data, name
    profile = json.loads(outputs["p.json"])
    names = set(profile["shared"]["stringArray"])
    assert "(other wasm module)" in names and "run" in names
    assert [lib["name"] for lib in profile["libs"]] == ["app.wat"]
    assert all(lib["path"] == "" and lib["debugPath"] == "" for lib in profile["libs"])
    assert "host" not in prof.meta


def test_host_details_are_added_only_when_asked(guest, tmp_path):
    import socket
    g = guest("host")
    store = wasmtime.Store(g.engine)

    def burn(n):                                          # defined in this file
        busy_python(n)
    inst = link_host(store, g.module, burn=burn)
    with sigprof.profile(store, modules=[("host", g.module)], host_details=True) as prof:
        inst.exports(store)["run"](store, 8, 1_000_000, 300_000, 0)
    meta = prof.meta
    assert meta["host"]["hostname"] == socket.gethostname()
    assert meta["host"]["pid"] == os.getpid()
    files = {h.file for h in prof.recording.host_functions}
    assert __file__ in files                                  # full path, on request
    profile = prof.to_firefox()
    assert profile["threads"][0]["pid"] == str(os.getpid())


def test_a_handler_installed_over_ours_during_the_profile_is_left_in_place(guest):
    g = guest("demo")
    store, inst = g.instance()
    if not _native.available():
        pytest.skip("native tick handler only")
    seen = []
    previous = signal.getsignal(signal.SIGVTALRM)
    try:
        with sigprof.profile(store) as prof:
            inst.exports(store)["run"](store, 1)
            signal.signal(signal.SIGVTALRM, lambda s, f: seen.append(s))   # someone else's
            inst.exports(store)["run"](store, 1)
        assert signal.getsignal(signal.SIGVTALRM) is not previous          # theirs stayed
        assert any("replaced" in w for w in prof.meta["warnings"])
    finally:
        signal.signal(signal.SIGVTALRM, previous if previous is not None else signal.SIG_DFL)


def test_a_failure_to_finish_never_hides_the_blocks_own_exception(guest, monkeypatch):
    from sigprof import profiler
    g = guest("demo")
    store, inst = g.instance()
    prof = sigprof.profile(store)

    class Mine(Exception):
        pass
    real_stop = profiler.Profiler.stop

    def broken_stop(self):
        real_stop(self)                              # everything is restored first
        raise RuntimeError("ours")
    monkeypatch.setattr(profiler.Profiler, "stop", broken_stop)
    with pytest.warns(RuntimeWarning, match="ours"):
        with pytest.raises(Mine):
            with prof:
                inst.exports(store)["fib"](store, 10)
                raise Mine()
