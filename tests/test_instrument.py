"""Engines sigprof did not make: an application's own Config/Engine and the modules
it serializes and loads back, under `sigprof run` (which calls sigprof.instrument())."""

import hashlib
import textwrap

from conftest import GUESTS, cli_env, run_cli, run_python

# An application that knows nothing of sigprof: its own Config, its own cache file
# of a serialized module, recompiling when the artifact does not load.
APP = textwrap.dedent(f"""\
    import os, sys, wasmtime
    cache = sys.argv[1]
    config = wasmtime.Config()
    config.cranelift_opt_level = "speed"
    engine = wasmtime.Engine(config)
    module, how = None, "compiled"
    if os.path.exists(cache):
        try:
            module, how = wasmtime.Module.deserialize_file(engine, cache), "loaded"
        except wasmtime.WasmtimeError:
            how = "recompiled"
    if module is None:
        module = wasmtime.Module.from_file(engine, {str(GUESTS / "recursion.wat")!r})
        with open(cache, "wb") as f:
            f.write(module.serialize())
    store = wasmtime.Store(engine)
    rec = wasmtime.Instance(store, module, []).exports(store)["rec"]
    print(how, rec(store, 5, 30_000_000))
    """)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_own_engine_and_deserialized_module_are_profiled_and_its_cache_kept(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    cache = tmp_path / "app.cwasm"
    env = cli_env(XDG_CACHE_HOME=str(tmp_path / "xdg"))

    def plain():
        return run_python(f"import runpy, sys; sys.argv = ['app.py', {str(cache)!r}]; "
                          f"runpy.run_path({str(tmp_path / 'app.py')!r}, run_name='__main__')")

    def profiled(out):
        proc = run_cli("run", "-o", str(out), "app.py", str(cache), cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "leaf" in out.read_text(), out.read_text()      # the guest was sampled
        return proc.stdout.split()[0]

    first = plain()
    assert first.returncode == 0 and first.stdout.startswith("compiled"), first.stderr
    artifact = _digest(cache)
    # No epoch build is known yet: the application's own fallback recompiles, and the
    # artifact it writes is the one it would have written unprofiled.
    assert profiled(tmp_path / "1.txt") == "recompiled"
    assert _digest(cache) == artifact
    cached = list((tmp_path / "xdg" / "sigprof" / "modules").iterdir())
    assert len(cached) == 1 and cached[0].name.startswith(artifact)
    # The second profiled run loads sigprof's epoch build: no recompile.
    assert profiled(tmp_path / "2.txt") == "loaded"
    assert _digest(cache) == artifact
    after = plain()                     # and an unprofiled run still loads its own cache
    assert after.returncode == 0 and after.stdout.startswith("loaded"), after.stderr


def test_instrument_keeps_the_applications_settings_and_its_own_epochs():
    proc = run_python(textwrap.dedent("""\
        import sigprof, wasmtime
        sigprof.instrument()
        config = wasmtime.Config()
        config.consume_fuel = True
        engine = wasmtime.Engine(config)
        store = wasmtime.Store(engine)
        store.set_fuel(1000)            # refused on an engine without fuel
        module = wasmtime.Module(engine, '(module (func (export "f")))')
        wasmtime.Instance(store, module, []).exports(store)["f"](store)   # no epoch trap
        print("fuel", store.get_fuel())
        config = wasmtime.Config()
        config.epoch_interruption = True
        engine = wasmtime.Engine(config)     # the application's own epochs: deadline 0
        store = wasmtime.Store(engine)
        module = wasmtime.Module(engine, '(module (func (export "f") (loop br 0)))')
        try:
            wasmtime.Instance(store, module, []).exports(store)["f"](store)
        except wasmtime.Trap as trap:
            print("trapped", "interrupt" in str(trap))
        """))
    assert proc.returncode == 0, proc.stderr
    assert "fuel " in proc.stdout and "trapped True" in proc.stdout, proc.stdout
