"""Shared fixtures: guests, engines, and the checks that run around every test.

* ``nothing_left_installed`` (autouse): after each test the signal
  dispositions, interval timers, wakeup fd and wasmtime-py hooks are exactly
  what they were before -- whatever the test did, including failing.
* ``every_firefox_profile_is_checked`` (autouse): each profile produced by
  ``to_firefox()`` (so each ``.json`` saved) goes through the structural
  checker in ``firefox_check.py``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

import sigprof
from sigprof import _capture, recording
from sigprof._session import SESSION

from firefox_check import check_profile

HERE = Path(__file__).parent
GUESTS = HERE / "guests"
ROOT = HERE.parent
EXAMPLES = ROOT / "examples"
IN_CI = bool(os.environ.get("SIGPROF_CI"))
sys.path.insert(0, str(ROOT / "benchmarks"))      # the GuestProfiler yardstick
WATCHED_SIGNALS = (signal.SIGVTALRM, signal.SIGPROF, signal.SIGALRM, signal.SIGINT)
TIMERS = (signal.ITIMER_VIRTUAL, signal.ITIMER_PROF, signal.ITIMER_REAL)


@pytest.fixture
def native_capture():
    """Skip where the native capture is not in use.  Checked when the test runs, not at
    import: the check runs wasm, and wasmtime's trap handlers must be installed after
    pytest's faulthandler, or faulthandler turns every wasm trap into a fatal error."""
    if not sigprof._native.available():
        pytest.skip("measures what the native tick handler records (tick-end intervals, tick "
                    "PCs, no GIL lateness); the pure-Python path has none of it")


needs_tick_record = pytest.mark.usefixtures("native_capture")


def require(condition: bool, why: str) -> None:
    """Skip locally when a tool is missing; in CI (SIGPROF_CI=1) that is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {why}")
        pytest.skip(why)


class _Sigaction(ctypes.Structure):
    # glibc's struct sigaction on Linux: handler, sa_mask (1024 bits), flags, restorer.
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.sigaction.argtypes = [ctypes.c_int, ctypes.POINTER(_Sigaction), ctypes.POINTER(_Sigaction)]


def disposition(signum: int) -> int:
    """The raw handler address installed for ``signum`` (0 = default, 1 = ignore)."""
    now = _Sigaction()
    _libc.sigaction(signum, None, ctypes.byref(now))
    return now.handler or 0


def _signal_state():
    state = {}
    for s in WATCHED_SIGNALS:
        state[("disposition", s)] = disposition(s)
        state[("python", s)] = signal.getsignal(s)
    for t in TIMERS:
        state[("timer", t)] = signal.getitimer(t)
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    state["wakeup_fd"] = fd
    return state


def _leaks(before) -> list:
    found = []
    if _signal_state() != before:
        found.append("signal/timer state changed by the test")
    if SESSION.timer is not None or SESSION.profiles:
        found.append("a profile or the process's timer is still active")
    if SESSION.hooks_installed():
        found.append("the capture hooks are still installed on wasmtime-py")
    if _capture._deferred:
        found.append("deferred signal handlers left")
    return found


def _restore(before) -> None:
    """Put everything back, so one leaking test does not fail the ones after it."""
    SESSION.reset()
    _capture._deferred.clear()
    for t in TIMERS:
        signal.setitimer(t, *before[("timer", t)])
    for s in WATCHED_SIGNALS:
        if signal.getsignal(s) is not before[("python", s)] and before[("python", s)] is not None:
            signal.signal(s, before[("python", s)])
    signal.set_wakeup_fd(before["wakeup_fd"])


@pytest.fixture(autouse=True)
def nothing_left_installed():
    before = _signal_state()
    yield
    leaks = _leaks(before)
    if leaks:
        _restore(before)
    assert not leaks, "; ".join(leaks)


@pytest.fixture(autouse=True)
def every_firefox_profile_is_checked(monkeypatch):
    original = recording.Recording.to_firefox

    def checked(self):
        profile = original(self)
        check_profile(profile)
        return profile
    monkeypatch.setattr(recording.Recording, "to_firefox", checked)
    yield


@pytest.fixture(scope="session")
def engine():
    return sigprof.engine()


class Guest:
    """A compiled guest module and helpers to run it in a fresh store."""

    def __init__(self, engine, name: str):
        self.engine = engine
        self.name = name
        path = GUESTS / f"{name}.wat"
        if not path.exists():
            path = EXAMPLES / f"{name}.wat"     # the bundled examples are guests too
        self.module = wasmtime.Module.from_file(engine, str(path))

    def instance(self, store=None, linker=None):
        store = store or wasmtime.Store(self.engine)
        linker = linker or wasmtime.Linker(self.engine)
        return store, linker.instantiate(store, self.module)


@pytest.fixture(scope="session")
def guest(engine):
    cache = {}

    def load(name: str) -> Guest:
        if name not in cache:
            cache[name] = Guest(engine, name)
        return cache[name]
    return load


def busy_python(n: int) -> None:
    """A Python host function that burns CPU: n multiply-adds."""
    x = 0
    for i in range(n):
        x += i * i


def link_host(store, module, burn=busy_python, nap=lambda ms: None):
    """Instantiate host.wat-style guests: imports env.burn(i32) and env.nap(i32)."""
    linker = wasmtime.Linker(store.engine)
    ty = wasmtime.FuncType([wasmtime.ValType.i32()], [])
    linker.define_func("env", "burn", ty, burn)
    linker.define_func("env", "nap", ty, nap)
    return linker.instantiate(store, module)


def stacks_by_name(rec, python_frames: bool = False):
    """[(function names root first, weight ns)] of a recording; the Python frames that
    called the guest (pytest's own, mostly) only if asked for."""
    return [([f.name for f in funcs if python_frames or f.kind != "py"], w)
            for funcs, w in rec.iter_stacks()]


def run_python(code: str, *args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


@pytest.fixture(scope="session")
def wasi_cc():
    """A clang that targets wasm32-wasi (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)."""
    clang = shutil.which("clang")
    require(clang is not None, "clang is not installed")
    return clang


def build_c_guest(clang: str, source: Path, out: Path, *flags: str) -> Path:
    if not out.exists() or out.stat().st_mtime < source.stat().st_mtime:
        subprocess.run([clang, "--target=wasm32-wasi", "-O2", "-g0", "-o", str(out), str(source),
                        *flags], check=True, capture_output=True, text=True)
    return out
