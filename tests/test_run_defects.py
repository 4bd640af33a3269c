"""`sigprof record`'s run flow, run as a subprocess: issue 17 (items 5, 6, 10, 11, 12).

Signals go to a child that has shown it reached the phase under test (a line on
its stdout or stderr), never after a fixed sleep; every child is killed in a
``finally``.  Children get SIGINT's default disposition back (the test runner
may run with SIGINT ignored, which a child would inherit, and Python then
installs no KeyboardInterrupt handler) from a tiny Python that resets it and
execs the command -- not from ``preexec_fn``, which can deadlock a child forked
from this process while its reader threads run -- and a session of their own,
so no signal reaches the test runner.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, List, Optional

import pytest
import wasmtime

import sigprof
from sigprof.runner import TRAP_EXIT_CODE

from conftest import ROOT

MARKER_TIMEOUT_S = 120       # generous: 2 cores shared by several engineers' test runs

# Prints "ready" on stdout after ~10^8 loop iterations (tens of ms: the profile has
# samples), then loops until stopped.
SPIN_FOREVER_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ready\\n")
  (func $warm_up (local $i i32)
    (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
             (br_if $l (i32.lt_u (local.get $i) (i32.const 100000000)))))
  (func $forever (loop $l (br $l)))
  (func (export "_start")
    (call $warm_up)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $forever)))
"""

def _compiles(wat: str) -> bool:
    try:
        wasmtime.Module(wasmtime.Engine(), wat)
    except wasmtime.WasmtimeError:
        return False
    return True


# anyref, exnref and (ref func) need the GC proposal, which wasmtime enables by default
# only in recent releases (off in 38, 44 and 45, on in 47): before, such a module does
# not compile at all, and the compile error says so.
GC_TYPES = _compiles('(module (func (param anyref)))')
_GC_FUNCS = """
  (func (export "takes_anyref") (param anyref))
  (func (export "takes_exnref") (param exnref))
  (func (export "takes_ref") (param i32 (ref func)))""" if GC_TYPES else ""
TYPES_WAT = f"""
(module
  (func (export "takes_v128") (param v128) (result i32) i32.const 1)
  (func (export "takes_funcref") (param funcref))
  (func (export "takes_externref") (param externref)){_GC_FUNCS}
  (func (export "returns_externref") (result externref) ref.null extern)
  (func (export "returns_v128") (result v128) v128.const i64x2 0 0)
  (func (export "fine") (param i32 i64 f32 f64) (result i32) local.get 0))
"""
NEEDS_GC = pytest.mark.skipif(not GC_TYPES, reason="this wasmtime compiles no GC types")


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SIGPROF_DEBUG", "SIGPROF_COMPILE_NOTE_AFTER_S")}
    env.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "cache"), **extra)
    return env


def _record(tmp_path: Path, *args: object, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sigprof", "record", *map(str, args)],
                          cwd=tmp_path, env=_env(tmp_path, **env), capture_output=True,
                          text=True, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sigprof: error:"), proc.stderr
    for needle in needles:
        assert needle in err, err
    return err


# argv[1:] is run with SIGINT's disposition back at its default (kept across exec).
WITH_DEFAULT_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                       "os.execv(sys.argv[1], sys.argv[1:])")


class _Lines:
    """A child's stream read line by line on a thread, so waiting for one can time out."""

    def __init__(self, stream) -> None:
        self.seen: List[str] = []
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, needle: str) -> str:
        while True:
            try:
                line = self._queue.get(timeout=MARKER_TIMEOUT_S)
            except queue.Empty:
                pytest.fail(f"no line with {needle!r} within {MARKER_TIMEOUT_S} s: {self.seen}")
            if line is None:
                pytest.fail(f"the stream ended without {needle!r}: {self.seen}")
            self.seen.append(line)
            if needle in line:
                return line

    def rest(self) -> str:
        while True:
            line = self._queue.get(timeout=MARKER_TIMEOUT_S)
            if line is None:
                return "".join(self.seen)
            self.seen.append(line)


def _spawn(tmp_path: Path, argv: List[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WITH_DEFAULT_SIGINT, *argv], cwd=tmp_path,
                            env=_env(tmp_path, **env), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


def _signal_when(proc: subprocess.Popen, stream: Any, marker: str, signum: int,
                 code: int) -> str:
    """Send ``signum`` once ``marker`` is on ``stream``; the child's stderr from then on,
    once it exited with ``code`` and no traceback.  The child is killed in any case."""
    try:
        lines = _Lines(stream)
        err = lines if stream is proc.stderr else _Lines(proc.stderr)
        lines.wait_for(marker)
        proc.send_signal(signum)
        stderr = err.rest()
        assert proc.wait(timeout=60) == code, stderr
    finally:
        _stop(proc)
    assert "Traceback" not in stderr
    return stderr


# --- a wasm binary whose compile takes a while -----------------------------------

def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _vec(items: List[bytes]) -> bytes:
    return _uleb(len(items)) + b"".join(items)


def _section(section_id: int, body: bytes) -> bytes:
    return bytes([section_id]) + _uleb(len(body)) + body


def _name(text: str) -> bytes:
    return _uleb(len(text)) + text.encode()


def slow_to_compile(functions: int = 200, operations: int = 2000) -> bytes:
    """``functions`` functions of ``operations`` multiply-xors each (2.4 MB at the
    defaults: a second or more of Cranelift here) and an empty ``_start``."""
    i32_to_i32 = b"\x60" + _vec([b"\x7f"]) + _vec([b"\x7f"])
    nothing = b"\x60" + _vec([]) + _vec([])
    body = bytearray(b"\x20\x00")                                    # local.get 0
    for k in range(operations):
        body += b"\x41" + _uleb(k % 64) + b"\x6c\x20\x00\x73"        # const; mul; get; xor
    body += b"\x0b"
    work = _vec([]) + bytes(body)
    start = _vec([]) + b"\x0b"
    return (b"\0asm\x01\0\0\0"
            + _section(1, _vec([i32_to_i32, nothing]))
            + _section(3, _vec([_uleb(0)] * functions + [_uleb(1)]))
            + _section(7, _vec([_name("_start") + b"\x00" + _uleb(functions)]))
            + _section(10, _vec([_uleb(len(work)) + work] * functions
                                + [_uleb(len(start)) + start])))


# --- item 5: types the command line cannot pass ------------------------------------

@pytest.mark.parametrize("export, kind", [
    ("takes_v128", "v128"), ("takes_funcref", "funcref"), ("takes_externref", "externref"),
    pytest.param("takes_anyref", "anyref", marks=NEEDS_GC),
    pytest.param("takes_exnref", "exnref", marks=NEEDS_GC),
    pytest.param("takes_ref", "(ref func)", marks=NEEDS_GC),
    ("returns_externref", "externref"), ("returns_v128", "v128")])
def test_types_the_command_line_cannot_pass_are_refused_before_the_call(tmp_path, export, kind):
    (tmp_path / "types.wat").write_text(TYPES_WAT)
    proc = _record(tmp_path, "-o", "x.json", "--invoke", export, "--arg", "1", "types.wat")
    err = _one_line_error(proc, export, f"type {kind}", "cannot")
    assert " a anyref" not in err and " a externref" not in err
    assert not (tmp_path / "x.json").exists()


def test_a_signature_the_command_line_can_pass_still_runs(tmp_path):
    (tmp_path / "types.wat").write_text(TYPES_WAT)
    proc = _record(tmp_path, "-o", "x.json", "--invoke", "fine", "--arg", "-7", "--arg", "1",
                   "--arg", "-0.5", "--arg", "-inf", "types.wat")
    assert proc.returncode == 0, proc.stderr
    assert "returned -7" in proc.stderr


# --- item 6: a trap in the start function ----------------------------------------

@pytest.mark.parametrize("body, reason", [
    ("unreachable", "wasm `unreachable` instruction executed"),
    ("(drop (i32.div_s (i32.const 1) (i32.const 0)))", "integer divide by zero")])
def test_a_start_function_trap_says_why_and_exits_as_a_trap_does(tmp_path, body, reason):
    (tmp_path / "start.wat").write_text(
        f'(module (func $setup {body}) (start $setup) (func (export "f")))')
    proc = _record(tmp_path, "-o", "x.json", "--invoke", "f", "start.wat")
    assert proc.returncode == TRAP_EXIT_CODE, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert reason in err and "setup" in err and "start function" in err, err
    # The same code as a trap during --invoke.
    (tmp_path / "later.wat").write_text(f'(module (func (export "f") {body}))')
    later = _record(tmp_path, "-o", "y.json", "--invoke", "f", "later.wat")
    assert later.returncode == proc.returncode and reason in later.stderr


# --- item 11: signals --------------------------------------------------------------

@pytest.mark.parametrize("signum, code, name", [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGHUP, 129, "hung up (SIGHUP)"),
    (signal.SIGINT, 130, "interrupted (Ctrl-C)")])
def test_a_signal_during_the_run_keeps_the_profile(tmp_path, signum, code, name):
    (tmp_path / "spin.wat").write_text(SPIN_FOREVER_WAT)
    proc = _spawn(tmp_path, [sys.executable, "-m", "sigprof", "record", "-o", "run.sigprof",
                             "--clock", "wall", "--interval", "1ms", "spin.wat"])
    stderr = _signal_when(proc, proc.stdout, "ready", signum, code)   # the guest runs
    assert f"{name}; the profile up to that point was kept" in stderr, stderr
    assert sigprof.load(tmp_path / "run.sigprof").samples > 0


@pytest.mark.parametrize("signum, code, name", [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGHUP, 129, "hung up (SIGHUP)"),
    (signal.SIGINT, 130, "interrupted (Ctrl-C)")])
def test_a_signal_during_a_long_compile_stops_it_at_once(tmp_path, signum, code, name):
    (tmp_path / "slow.wasm").write_bytes(slow_to_compile())
    proc = _spawn(tmp_path, [sys.executable, "-m", "sigprof", "record", "--no-cache", "-o",
                             "run.json", "slow.wasm"], SIGPROF_COMPILE_NOTE_AFTER_S="0")
    stderr = _signal_when(proc, proc.stderr, "compiling slow.wasm", signum, code)  # not ended
    assert stderr.splitlines()[-1] == f"sigprof: {name} before the guest ran; nothing was recorded"
    assert not (tmp_path / "run.json").exists()


# Sends the process SIGINT from inside the import of MODULE, as a Ctrl-C while
# Python is still loading sigprof's command line would, then runs `python -m sigprof`.
INTERRUPTED_IMPORT = """
import os, runpy, signal, sys
INTERRUPTED = sys.argv[1]
class InterruptOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == INTERRUPTED:
            sys.stderr.write("test: SIGINT sent\\n")
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, InterruptOnImport())
sys.argv = ["sigprof", "record", "-o", "x.json", "--invoke", "f", "m.wat"]
runpy.run_module("sigprof", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("module", ["argparse", "wasmtime"])
def test_ctrl_c_while_the_command_line_loads_is_one_line(tmp_path, module):
    (tmp_path / "m.wat").write_text('(module (func (export "f")))')
    proc = _spawn(tmp_path, [sys.executable, "-c", INTERRUPTED_IMPORT, module])
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert "test: SIGINT sent" in stderr           # the import was interrupted
    assert "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1] == "sigprof: interrupted"
    assert proc.returncode == 130


# --- item 12: long compiles are announced ------------------------------------------

def test_a_slow_compile_is_announced_and_a_fast_one_is_not(tmp_path):
    binary = slow_to_compile()
    (tmp_path / "slow.wasm").write_bytes(binary)
    # A threshold of 0 s stands for a compile longer than the default 1 s.
    slow = _record(tmp_path, "--no-cache", "-o", "x.json", "slow.wasm",
                   SIGPROF_COMPILE_NOTE_AFTER_S="0")
    assert slow.returncode == 0, slow.stderr
    note = slow.stderr.splitlines()[0]
    size = f"{len(binary) / 1e6:.1f} MB"
    assert note.startswith(f"sigprof: compiling slow.wasm ({size} of wasm)"), slow.stderr
    assert "cache" not in note                       # --no-cache: nothing is kept
    cached = _record(tmp_path, "-o", "x.json", "slow.wasm", SIGPROF_COMPILE_NOTE_AFTER_S="0")
    assert "compile cache keeps the result" in cached.stderr.splitlines()[0]
    (tmp_path / "m.wat").write_text('(module (func (export "f")))')
    fast = _record(tmp_path, "--no-cache", "-o", "x.json", "--invoke", "f", "m.wat")
    assert fast.returncode == 0 and "compiling" not in fast.stderr, fast.stderr


# --- item 10 (part): wording -------------------------------------------------------

@pytest.mark.parametrize("command, flag", [("record", "--no-cache"), ("view", "--no-browser")])
def test_flags_show_no_default_in_help(tmp_path, command, flag):
    helptext = subprocess.run([sys.executable, "-m", "sigprof", command, "--help"],
                              env=_env(tmp_path), capture_output=True, text=True).stdout
    assert flag in helptext
    assert "(default: True)" not in helptext and "(default: False)" not in helptext


def test_a_directory_as_the_module_is_called_a_directory(tmp_path):
    (tmp_path / "build").mkdir()
    err = _one_line_error(_record(tmp_path, "-o", "x.json", "build"), "build", "is a directory")
    assert "no such file" not in err


@pytest.mark.parametrize("interval", ["-1ms", "-0.5", "0"])
def test_a_negative_interval_is_refused_for_what_it_is(tmp_path, interval):
    (tmp_path / "m.wat").write_text('(module (func (export "f")))')
    _one_line_error(_record(tmp_path, "-o", "x.json", "--interval", interval, "--invoke", "f",
                            "m.wat"), "interval must be positive")


@pytest.mark.parametrize("top", ["-1", "0"])
def test_top_is_a_positive_integer_in_record_and_report(tmp_path, top):
    (tmp_path / "m.wat").write_text('(module (func (export "f")))')
    _one_line_error(_record(tmp_path, "-o", "x.sigprof", "--top", top, "--invoke", "f", "m.wat"),
                    "--top", "must be a positive integer")
    assert _record(tmp_path, "-o", "x.sigprof", "--invoke", "f", "m.wat").returncode == 0
    report = subprocess.run([sys.executable, "-m", "sigprof", "report", "x.sigprof", "--top", top],
                            cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    _one_line_error(report, "--top", "must be a positive integer")
