"""The application's own use of wasmtime under sigprof: fuel consumed is the same
with and without a profile of an instrumented engine, and the application's own
epoch timeouts (``set_epoch_deadline`` plus its own ``increment_epoch()`` ticker)
keep their time and their trap under a profile and after it."""

import textwrap

import pytest

from conftest import GUESTS, run_python

FUEL = textwrap.dedent(f"""\
    import sys, wasmtime, sigprof
    sigprof.instrument()
    config = wasmtime.Config()
    config.consume_fuel = True
    engine = wasmtime.Engine(config)
    module = wasmtime.Module.from_file(engine, {str(GUESTS / "recursion.wat")!r})

    def consumed():
        store = wasmtime.Store(engine)       # a new store per run, as sandboxes do
        store.set_fuel(10**12)
        wasmtime.Instance(store, module, []).exports(store)["rec"](store, 5, 20_000_000)
        return 10**12 - store.get_fuel()

    plain = consumed()
    with sigprof.profile() as prof:
        profiled = consumed()
    print(plain, profiled, prof.samples)
    """)


def test_fuel_consumed_is_identical_under_a_profile():
    proc = run_python(FUEL)
    assert proc.returncode == 0, proc.stderr
    plain, profiled, samples = map(int, proc.stdout.split())
    assert samples > 0                      # the profile did sample the fuel-metered guest
    assert profiled == plain


# The application: an epoch engine, a guest that never returns, and a 10 ms ticker
# thread of its own.  ``timed(n)`` sets ``n`` ticks of deadline and runs the guest:
# (exception type, trap code, app ticks from the deadline to the trap, seconds).
# A guest that never traps is a failure, reported by the ticker after 20x the
# deadline (exit 3) rather than by the test's liveness limit.
APP = textwrap.dedent(f"""\
    import os, sys, threading, time, wasmtime, sigprof
    MODE = sys.argv[1]
    if MODE == "instrument":
        sigprof.instrument()            # as sigprof run does
    # An application written for sigprof uses its capture layer from start-up (its
    # deadlines set before that are not known to sigprof; instrument() knows all).
    profile_of = sigprof.profile
    config = wasmtime.Config()
    config.epoch_interruption = True
    engine = wasmtime.Engine(config)
    spin_module = wasmtime.Module(engine, '(module (func (export "spin") (loop $l (br $l))))')
    rec_module = wasmtime.Module.from_file(engine, {str(GUESTS / "recursion.wat")!r})
    store = wasmtime.Store(engine)
    spin = wasmtime.Instance(store, spin_module, []).exports(store)["spin"]
    rec = wasmtime.Instance(store, rec_module, []).exports(store)["rec"]
    ticks = [0]
    waiting = [None]                    # the tick count a running guest started at

    def ticker():
        while True:
            time.sleep(0.010)
            ticks[0] += 1
            engine.increment_epoch()
            if waiting[0] is not None and ticks[0] - waiting[0] > 800:
                print("the guest never trapped", file=sys.stderr, flush=True)
                os._exit(3)
    threading.Thread(target=ticker, daemon=True).start()

    def spin_until_trap(started_at):
        waiting[0] = started_at
        t0 = time.monotonic()
        try:
            spin(store)
        except Exception as exc:
            got = (type(exc).__name__, str(getattr(exc, "trap_code", None)),
                   ticks[0] - started_at, time.monotonic() - t0)
        waiting[0] = None
        return got

    def timed(n):
        started_at = ticks[0]
        store.set_epoch_deadline(n)
        return spin_until_trap(started_at)

    def profile():
        return profile_of(store) if MODE == "store" else profile_of()
    """)

TIMEOUT = APP + textwrap.dedent("""\
    plain = timed(40)
    with profile() as prof:
        profiled = timed(40)
    after = timed(40)
    for name, (kind, code, app_ticks, seconds) in (("plain", plain), ("profiled", profiled),
                                                  ("after", after)):
        print(name, kind, code, app_ticks, seconds)
    print("samples", prof.samples)
    """)

MODES = ["store", "storeless", "instrument"]


def _results(stdout):
    lines = dict(line.split(" ", 1) for line in stdout.splitlines())
    return {name: lines[name].split() for name in lines}


@pytest.mark.parametrize("mode", MODES)
def test_ticker_timeout_keeps_its_time_under_a_profile(mode):
    proc = run_python(TIMEOUT, mode)
    assert proc.returncode == 0, proc.stderr
    got = _results(proc.stdout)
    plain_ticks = int(got["plain"][2])
    for name in ("plain", "profiled", "after"):
        kind, code, app_ticks, _seconds = got[name]
        # The same trap as unprofiled: wasmtime's, with its interrupt code.
        assert (kind, code) == ("Trap", "TrapCode.INTERRUPT"), (name, got)
        # Only the application's ticks count: sigprof's own (one a millisecond of
        # guest CPU) never bring the deadline closer...
        assert int(app_ticks) >= 40, (name, got)
        # ...nor push it away.  Counted in the application's ticks, not seconds (a
        # loaded machine stretches both runs' ticks alike): the trap comes within
        # 4x the unprofiled count, where a profile that kept the guest running
        # would go on to the ticker's 800.
        assert int(app_ticks) < 4 * plain_ticks, (name, got)
    assert int(got["samples"][0]) > 0           # the profile did sample the guest


RESTORED = APP + textwrap.dedent("""\
    started_at = ticks[0]
    store.set_epoch_deadline(30)        # the application's deadline, set before the profile
    with profile() as prof:
        rec(store, 3, 1000)             # a short guest call the profile covers
        time.sleep(0.05)
    kind, code, app_ticks, seconds = spin_until_trap(started_at)
    print(kind, code, app_ticks, prof.samples >= 0)
    """)


@pytest.mark.parametrize("mode", MODES)
def test_a_deadline_set_before_a_profile_still_fires_after_it(mode):
    proc = run_python(RESTORED, mode)
    assert proc.returncode == 0, proc.stderr
    kind, code, app_ticks, _ = proc.stdout.split()
    assert (kind, code) == ("Trap", "TrapCode.INTERRUPT"), proc.stdout
    # 30 of the application's ticks after it set the deadline, not a far one
    # (the ticker's 800) nor fewer (sigprof's ticks during the profile).
    assert 30 <= int(app_ticks) < 800, proc.stdout


EXPIRED = APP + textwrap.dedent("""\
    with profile() as prof:
        rec(store, 3, 1000)             # adopts the store in a store-less profile
        started_at = ticks[0]
        store.set_epoch_deadline(2)
        while ticks[0] - started_at < 4:        # the deadline passes between guest calls
            time.sleep(0.01)
        try:
            rec(store, 3, 1000)
            print("returned")
        except wasmtime.Trap as trap:
            print("Trap", trap.trap_code)
    """)


@pytest.mark.parametrize("mode", MODES)
def test_a_deadline_that_passed_between_calls_traps_the_next_call(mode):
    """As unprofiled: a store whose deadline is behind the epoch traps at its first
    epoch check."""
    proc = run_python(EXPIRED, mode)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Trap", "TrapCode.INTERRUPT"]


ON_A_THREAD = APP + textwrap.dedent("""\
    got = []
    ran, stopped = threading.Event(), threading.Event()

    def worker():                       # lives on after the profile stops
        got.append(timed(40))
        ran.set()
        stopped.wait()
        got.append(timed(40))
    with profile() as prof:
        thread = threading.Thread(target=worker)
        thread.start()
        ran.wait()
    stopped.set()
    thread.join()
    for kind, code, app_ticks, seconds in got:
        print(kind, code, app_ticks)
    """)


@pytest.mark.parametrize("mode", MODES)
def test_a_store_run_on_another_thread_keeps_its_deadline_after_the_profile(mode):
    """A store-less profile leaves a store it sampled on another thread its epoch
    callback (the store may be running there): that callback still traps at the
    application's deadline."""
    proc = run_python(ON_A_THREAD, mode)
    assert proc.returncode == 0, proc.stderr
    runs = [line.split() for line in proc.stdout.splitlines()]
    assert len(runs) == 2, proc.stdout
    for kind, code, app_ticks in runs:
        assert (kind, code) == ("Trap", "TrapCode.INTERRUPT"), proc.stdout
        assert 40 <= int(app_ticks) < 800, proc.stdout
