"""`sigprof record` on programs that are not plain WASI commands (issue 11.4)."""

from __future__ import annotations

import wasmtime

import sigprof

from conftest import cli_env, run_cli

REACTOR_WAT = """
(module $reactor
  (global $scale (mut i32) (i32.const 0))
  (func $_initialize (export "_initialize") (global.set $scale (i32.const 7)))
  (func $compute (export "compute") (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (global.get $scale)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $acc)))
"""
IMPORTS_WAT = """
(module $needs_host
  (import "env" "get_value" (func $get_value (result i32)))
  (import "env" "log" (func $log (param i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (func $run (export "run") (result i32)
    (local $v i32)
    (local.set $v (i32.add (call $get_value) (i32.const 40)))
    (if (i32.gt_u (local.get $v) (i32.const 100)) (then (call $log (local.get $v))))
    (call $log (local.get $v))
    (local.get $v)))
"""
RECURSE_WAT = """
(module
  (func $down (export "down") (param $n i32) (result i32)
    (if (result i32) (i32.eqz (local.get $n)) (then (i32.const 0))
      (else (i32.add (i32.const 1) (call $down (i32.sub (local.get $n) (i32.const 1))))))))
"""


def record(tmp_path, *args, env=None):
    full_env = cli_env(**(env or {}))
    full_env["XDG_CACHE_HOME"] = str(tmp_path / "cache")       # wasmtime's compile cache
    return run_cli("record", *args, cwd=tmp_path, env=full_env)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_reactor_is_initialized_then_invoked(tmp_path):
    wat = _write(tmp_path, "reactor.wat", REACTOR_WAT)
    out = record(tmp_path, "-o", "r.sigprof", "--invoke", "compute", "--arg", "1000", wat)
    assert out.returncode == 0, out.stderr
    assert "returned 7000" in out.stderr             # _initialize ran first
    refused = record(tmp_path, "-o", "r2.sigprof", wat)
    assert refused.returncode == 2 and not (tmp_path / "r2.sigprof").exists()
    assert refused.stderr.count("\n") == 1
    assert "reactor" in refused.stderr and "--invoke" in refused.stderr
    assert "compute" in refused.stderr               # the functions it could call


def test_imports_wasi_lacks_are_refused_before_compiling_or_stubbed(tmp_path):
    wat = _write(tmp_path, "imports.wat", IMPORTS_WAT)
    refused = record(tmp_path, "-o", "x.json", "--invoke", "run", wat)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "env.get_value, env.log" in refused.stderr and "--stub-imports" in refused.stderr
    assert "proc_exit" not in refused.stderr
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]   # nothing compiled
    zero = record(tmp_path, "-o", "z.json", "--invoke", "run", "--stub-imports", "zero", wat)
    assert zero.returncode == 0, zero.stderr
    assert "returned 40" in zero.stderr                 # get_value() stood in as 0
    trap = record(tmp_path, "-o", "t.sigprof", "--invoke", "run", "--stub-imports", "trap", wat)
    assert trap.returncode == 134
    assert "env.get_value was called" in trap.stderr and "--stub-imports trap" in trap.stderr
    assert sigprof.load(tmp_path / "t.sigprof").meta["name"] == "imports.wat"   # kept


def test_names_come_from_a_named_twin_of_a_stripped_module(tmp_path):
    named = _write(tmp_path, "named.wat", REACTOR_WAT)
    stripped_wasm = tmp_path / "stripped.wasm"
    binary = wasmtime.wat2wasm(REACTOR_WAT.replace("$_initialize", "").replace("$compute", "")
                               .replace("$reactor", ""))
    stripped_wasm.write_bytes(bytes(binary))
    args = ("--clock", "wall", "--interval", "0.5ms", "--invoke", "compute", "--arg",
            "300000000")
    bare = record(tmp_path, "-o", "bare.txt", *args, stripped_wasm)
    twin = record(tmp_path, "-o", "twin.txt", *args, "--names", named, stripped_wasm)
    assert bare.returncode == 0 and twin.returncode == 0, (bare.stderr, twin.stderr)
    assert "compute  [stripped.wasm]" in (tmp_path / "twin.txt").read_text()
    # Without the twin the function is unnamed, and the module's own binary gives it
    # its export name.
    assert "compute  [stripped.wasm]" in (tmp_path / "bare.txt").read_text()
    bad = record(tmp_path, "-o", "b.txt", *args, "--names", tmp_path / "missing.wasm",
                 stripped_wasm)
    assert bad.returncode == 2 and "missing.wasm" in bad.stderr


def test_the_compile_cache_is_used_and_can_be_turned_off(tmp_path):
    wat = _write(tmp_path, "reactor.wat", REACTOR_WAT)
    args = ("-o", "c.sigprof", "--invoke", "compute", "--arg", "10", wat)
    assert record(tmp_path, "--no-cache", *args).returncode == 0
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert record(tmp_path, *args).returncode == 0
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert cached, "wasmtime's cache wrote nothing"


def _deepest(engine: wasmtime.Engine, module_wat: str) -> int:
    """The deepest recursion the engine's default stack allows (binary search)."""
    module = wasmtime.Module(engine, module_wat)
    lo, hi = 1, 1 << 22
    while lo < hi:
        mid = (lo + hi + 1) // 2
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(sigprof.FAR_DEADLINE)
        down = wasmtime.Instance(store, module, []).exports(store)["down"]
        try:
            down(store, mid)
            lo = mid
        except wasmtime.Trap:
            hi = mid - 1
    return lo


def test_sigprof_engine_gives_the_guest_the_stack_a_plain_engine_does_and_more_on_request(
        tmp_path):
    plain = wasmtime.Config()
    plain.epoch_interruption = True
    assert _deepest(sigprof.engine(), RECURSE_WAT) >= _deepest(wasmtime.Engine(plain), RECURSE_WAT)
    wat = _write(tmp_path, "recurse.wat", RECURSE_WAT)
    deep = record(tmp_path, "-o", "d.sigprof", "--invoke", "down", "--arg", "5000", wat)
    small = record(tmp_path, "-o", "s.sigprof", "--max-wasm-stack", "65536", "--invoke",
                   "down", "--arg", "5000", wat)
    assert deep.returncode == 0, deep.stderr
    assert small.returncode == 134 and "stack" in small.stderr
