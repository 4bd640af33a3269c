"""Shared fixtures: guests, engines, and the checks that run around every test.

* ``nothing_left_installed`` (autouse): after each test the signal
  dispositions, interval timers, wakeup fd and wasmtime-py hooks are exactly
  what they were before -- whatever the test did, including failing.
* ``every_firefox_profile_is_checked`` (autouse): each profile produced by
  ``to_firefox()`` (so each ``.json`` saved) goes through the structural
  checker in ``firefox_check.py``.
* No process left behind: every process the tests start carries
  ``SIGPROF_TEST_RUN=<pytest's pid>`` in its environment; one still running when
  the session ends (a child of pytest, or a daemon that detached from it) fails
  the run, named with the test it appeared in, and is killed.

Helpers for other test files: ``spawn``/``run_process`` (a subprocess with SIGINT
and SIGTERM back at their defaults), ``run_cli``/``running_cli`` (``python -m
sigprof``), ``wait_until_sampling`` (a child is profiling: readiness, not a sleep),
``share_tolerance``/``effective_samples`` (statistical bounds from the sample
count), ``firefox_profiler_cli`` (the Firefox Profiler's loader, one daemon per
query, always stopped).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import NormalDist

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


# --- subprocesses -------------------------------------------------------------------------

# Not a speed: how long a child may take to get somewhere (start, answer, exit) on a
# loaded 2-core machine before the test calls it hung.  Only ever a hang guard.
LIVENESS_LIMIT_S = 300
TEST_RUN_MARK = "SIGPROF_TEST_RUN"
os.environ[TEST_RUN_MARK] = str(os.getpid())       # inherited by everything the tests start


# Run argv[1:] with SIGINT and SIGTERM at their defaults (an exec keeps them so).  A shell
# starts a background job with SIGINT ignored, exec keeps an ignored signal ignored, and
# Python leaves an ignored SIGINT alone: without this a child under a backgrounded pytest
# would shrug off the Ctrl-C a test sends it.  A tiny Python that resets them and execs,
# not preexec_fn: Python code run between fork and exec can deadlock a child forked while
# other threads (pipe readers, servers) hold locks.
WITH_DEFAULT_SIGNALS = ("import os, signal, sys\n"
                        "for s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, signal.SIG_DFL)\n"
                        "os.execvp(sys.argv[1], sys.argv[1:])")


def spawn(cmd, **kwargs) -> subprocess.Popen:
    """subprocess.Popen with SIGINT/SIGTERM at their defaults in the child.  The caller
    ends it in a ``finally`` (or uses ``running``)."""
    return subprocess.Popen([sys.executable, "-c", WITH_DEFAULT_SIGNALS, *(str(c) for c in cmd)],
                            **kwargs)


def stop_process(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs and reap it (for ``finally`` blocks)."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.communicate(timeout=LIVENESS_LIMIT_S)
    except (subprocess.TimeoutExpired, ValueError, OSError):  # pragma: no cover
        proc.wait()


@contextlib.contextmanager
def running(cmd, **kwargs):
    """A started child for the block; killed and reaped when it ends, however it ends."""
    proc = spawn(cmd, **kwargs)
    try:
        yield proc
    finally:
        stop_process(proc)


def run_process(cmd, timeout: float = LIVENESS_LIMIT_S, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output=True, text=True) with the signals reset; a child still
    running at ``timeout`` (a hang) is killed and the test fails."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    with running(cmd, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(map(str, cmd))[:200]} still running after {timeout} s (hung)")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def cli_env(**extra: str) -> dict:
    """The environment for a ``python -m sigprof`` child: this checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    env.pop("SIGPROF_DEBUG", None)
    env.update(extra)
    return env


def run_cli(*args, cwd=None, env=None, timeout: float = LIVENESS_LIMIT_S,
            **kwargs) -> subprocess.CompletedProcess:
    """``python -m sigprof ARGS`` to completion (stdout/stderr captured as text)."""
    return run_process([sys.executable, "-m", "sigprof", *args], cwd=cwd,
                       env=env if env is not None else cli_env(), timeout=timeout, **kwargs)


def running_cli(*args, cwd=None, env=None, **kwargs):
    """``python -m sigprof ARGS`` for a ``with`` block, killed at its end."""
    return running([sys.executable, "-m", "sigprof", *args], cwd=cwd,
                   env=env if env is not None else cli_env(), **kwargs)


def run_python(code: str, *args: str, timeout: float = LIVENESS_LIMIT_S,
               **kwargs) -> subprocess.CompletedProcess:
    return run_process([sys.executable, "-c", code, *args], timeout=timeout, env=cli_env(),
                       **kwargs)


def _caught_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    return 0  # pragma: no cover


def _cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid``, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_until_sampling(proc: subprocess.Popen, timer_signal: int = signal.SIGVTALRM,
                        cpu_s: float = 0.2) -> None:
    """Return once ``proc`` (a child running a profile) catches ``timer_signal`` and has
    spent ``cpu_s`` of CPU since: its timer is armed and ticks have come (at 4 ms,
    0.2 s is ~50 of them).  Readiness by what the child did, not by a sleep."""
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + LIVENESS_LIMIT_S
    armed_at = None
    while True:
        assert proc.poll() is None, f"the child ended (status {proc.returncode}) before sampling"
        assert time.monotonic() < deadline, f"the child was not sampling after {LIVENESS_LIMIT_S} s"
        try:
            if armed_at is None and _caught_signals(proc.pid) & (1 << (timer_signal - 1)):
                armed_at = _cpu_ticks(proc.pid)
            if armed_at is not None and _cpu_ticks(proc.pid) - armed_at >= cpu_s * hz:
                return
        except (FileNotFoundError, ProcessLookupError):  # pragma: no cover - it just ended
            pass
        time.sleep(0.01)


def _process_table() -> dict:
    """{pid: (parent pid, environment mark, command line)} of the live (non-zombie)
    processes this user can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                state, ppid = stat.read().rsplit(")", 1)[1].split()[:2]
            if state in ("Z", "X"):
                continue
            with open(f"/proc/{entry}/environ", "rb") as environ:
                env = environ.read().split(b"\0")
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                cmd = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue                                    # gone, or not ours to read
        mark = next((e.split(b"=", 1)[1].decode() for e in env
                     if e.startswith(TEST_RUN_MARK.encode() + b"=")), "")
        table[int(entry)] = (int(ppid), mark, cmd)
    return table


def processes_started_here() -> dict:
    """{pid: command line} of the live processes the tests started: children of this
    process, and anything carrying this run's mark (daemons that detached, grandchildren)."""
    me, mine = os.getpid(), str(os.getpid())
    return {pid: cmd for pid, (ppid, mark, cmd) in _process_table().items()
            if pid != me and (ppid == me or mark == mine)}


_first_seen: dict = {}                  # pid -> the test it was first seen running after


@pytest.fixture(autouse=True)
def note_processes_left_running(request):
    yield
    for pid, cmd in processes_started_here().items():
        _first_seen.setdefault(pid, (request.node.nodeid, cmd))


def pytest_sessionfinish(session, exitstatus):
    left = processes_started_here()
    if not left:
        return
    report = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{len(left)} process(es) the tests started were still running at the end:"]
    for pid, cmd in sorted(left.items()):
        test = _first_seen.get(pid, ("(after the last test)", cmd))[0]
        lines.append(f"  pid {pid}: {cmd[:160]}  -- left running by {test}")
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if report is not None:
        report.write_sep("=", "processes left behind", red=True)
        for line in lines:
            report.write_line(line)
    else:  # pragma: no cover
        print("\n".join(lines), file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- statistical bounds ------------------------------------------------------------------

# Each statistical assertion is built to fail by chance in at most 1 run in 100,000.
# CI runs the suite six times (two capture modes, two more CPythons, three more
# wasmtime-py releases) and each run makes some 50 such assertions, ~300 in all: at
# 1/100,000 each, a CI run fails by chance less than once in 300 (at 1/1,000 it was
# about one in four).
FALSE_FAILURE_RATE = 1e-5


def unsampled_tail_ns(interval_ns: float, threads: int = 1) -> float:
    """How much of a busy thread's CPU time may follow its last tick, unsampled, for
    each of ``threads`` threads at once.  The ticks reach a thread about once per
    interval of its CPU (the process timer's land on whichever busy thread runs: a
    thinned stream), so P(no tick in its last t) ~ exp(-t / interval), and
    t = interval * ln(threads / FALSE_FAILURE_RATE) holds for all of them (Bonferroni);
    one interval more for the tick under way.  50 ms for one thread at 4 ms."""
    return interval_ns * (math.log(threads / FALSE_FAILURE_RATE) + 1)


def share_tolerance(n: float, p: float, sides: int = 2, comparisons: int = 1) -> float:
    """How far a share measured from ``n`` independent samples may be from its true value
    ``p`` (a fraction) by chance alone: z·sqrt(p(1-p)/n) + 1/(2n), the binomial's normal
    approximation with continuity correction, z the standard normal quantile leaving
    FALSE_FAILURE_RATE / comparisons in the ``sides`` tail(s) (Bonferroni over the
    ``comparisons`` made in one test).  z = 3.09 one-sided, 3.29 two-sided."""
    z = NormalDist().inv_cdf(1 - FALSE_FAILURE_RATE / (sides * comparisons))
    return z * math.sqrt(p * (1 - p) / n) + 0.5 / n


def effective_samples(weights) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2: what ``n`` a share weighted by
    measured CPU deltas (not all equal) is worth."""
    weights = [w for w in weights if w > 0]
    square_sum = sum(w * w for w in weights)
    return sum(weights) ** 2 / square_sum if square_sum else 0.0


# --- the Firefox Profiler's own loader ---------------------------------------------------

PROFILER_CLI_CANDIDATES = [os.environ.get("SIGPROF_PROFILER_CLI", ""),
                           str(ROOT / ".ci" / "node" / "node_modules" / ".bin" / "profiler-cli"),
                           shutil.which("profiler-cli") or ""]


class ProfilerCli:
    """``@firefox-devtools/profiler-cli``: a daemon holds a loaded profile, commands ask it.

    Its ``load`` gives the daemon a fixed 500 ms to start listening (ten 50 ms polls)
    and fails on a loaded machine, leaving the daemon (~65 MB of node) running.  So each
    query starts the daemon itself, as a child of the test, polls ``status`` until the
    profile is loaded, and always ends with ``stop --all`` and the child reaped."""

    def __init__(self, cli: str, session_dir: Path):
        self.cli = cli
        self.session_dir = session_dir             # private: ``stop --all`` stops only ours
        self.env = dict(os.environ, PROFILER_CLI_SESSION_DIR=str(session_dir),
                        HOME=str(session_dir))
        self._ids = itertools.count()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = run_process([self.cli, *args], env=self.env)
        if check:
            assert out.returncode == 0, out.stderr + out.stdout
        return out

    def query(self, path: Path, *command: str) -> dict:
        """``command --json`` on the profile at ``path``, parsed."""
        session = f"q{next(self._ids)}"
        log = self.session_dir / f"{session}.log"
        daemon = spawn([self.cli, "--daemon", str(Path(path).resolve()), "--session", session],
                       env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        try:
            self._wait_until_loaded(daemon, session, log)
            return json.loads(self.run(*command, "--session", session, "--json").stdout)
        finally:
            self.run("stop", "--all", check=False)
            if daemon.poll() is None:
                try:
                    daemon.wait(timeout=LIVENESS_LIMIT_S)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    pass
            stop_process(daemon)

    def _wait_until_loaded(self, daemon: subprocess.Popen, session: str, log: Path) -> None:
        # The session's metadata appears once the daemon listens (asking before that
        # would have the client clean the half-made session away); then ``status``
        # answers "still loading" until the profile is ready, or says why it failed.
        deadline = time.monotonic() + LIVENESS_LIMIT_S
        while True:
            if daemon.poll() is not None:
                pytest.fail(f"profiler-cli daemon exited ({daemon.returncode}): "
                            + (log.read_text() if log.exists() else "no log"))
            if (self.session_dir / f"{session}.json").exists():
                status = self.run("status", "--session", session, check=False)
                if status.returncode == 0:
                    return
                if "load failed" in status.stderr + status.stdout:
                    pytest.fail(f"profiler-cli could not load the profile: {status.stderr}")
            assert time.monotonic() < deadline, \
                f"profiler-cli daemon not ready after {LIVENESS_LIMIT_S} s (hung): {log}"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def firefox_profiler_cli():
    """The Firefox Profiler's loader; skipped locally where it is not installed."""
    cli = next((c for c in PROFILER_CLI_CANDIDATES if c and Path(c).exists()), None)
    require(cli is not None and shutil.which("node") is not None,
            "the Firefox profiler-cli (npm @firefox-devtools/profiler-cli) is not installed")
    # A short directory: the daemon's Unix socket path must fit in 107 bytes.
    session_dir = Path(tempfile.mkdtemp(prefix="pcli-"))
    try:
        yield ProfilerCli(cli, session_dir)
    finally:
        shutil.rmtree(session_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def wasi_cc():
    """A clang that targets wasm32-wasi (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)."""
    clang = shutil.which("clang")
    require(clang is not None, "clang is not installed")
    return clang


def build_c_guest(clang: str, source: Path, out: Path, *flags: str) -> Path:
    if not out.exists() or out.stat().st_mtime < source.stat().st_mtime:
        built = run_process([clang, "--target=wasm32-wasi", "-O2", "-g0", "-o", out, source,
                             *flags])
        assert built.returncode == 0, built.stderr
    return out
