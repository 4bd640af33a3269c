"""The application's own use of wasmtime under sigprof: fuel consumed is the same
with and without a profile of an instrumented engine."""

import textwrap

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
