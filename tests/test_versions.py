"""What differs between wasmtime-py releases is held by the seam and checked, not assumed.

The whole suite runs on wasmtime-py 38.0.0, 44.0.0, 47.0.1 (``.ci/wasmtimes``) and 50.0.1;
these tests are about the seam itself: a release it does not know is refused when a
profile starts and nowhere else, a wrong store layout is caught by the probe, and a
host-function handle wasmtime-py hands out again is not mistaken for the old one.
"""

from __future__ import annotations

import gc
from pathlib import Path

import wasmtime
import wasmtime._func as _wt_func

import sigprof
from sigprof import _wasmtime as wt
from sigprof.defaults import WASMTIME_MAJORS

from conftest import run_python

GOLDEN = str(Path(__file__).parent / "expected" / "golden.sigprof")

# The interpreter believes it has wasmtime-py 37 (the bindings are the real ones).
AS_IF_WASMTIME_37 = """
import importlib.metadata as metadata
_real_version = metadata.version
metadata.version = lambda name: "37.0.0" if name == "wasmtime" else _real_version(name)
"""


def test_every_release_in_the_range_has_its_facts():
    for major in WASMTIME_MAJORS:
        release = wt._release(major)
        words = (release.exit_trampoline_fp_word, release.exit_pc_word, release.entry_fp_word)
        assert len(set(words)) == 3 and min(words) > 0


def test_an_unknown_release_is_refused_when_a_profile_starts_and_not_before():
    code = AS_IF_WASMTIME_37 + f"""
import sigprof, wasmtime
rec = sigprof.load({GOLDEN!r})                 # the offline layer: no check
assert rec.report()
engine = sigprof.engine()                      # no profile yet: no check
try:
    with sigprof.profile():
        pass
except RuntimeError as exc:
    print(type(exc).__name__, exc)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("UnsupportedWasmtime sigprof supports wasmtime-py 38 to 50"), out
    assert "this is wasmtime 37.0.0" in out and "pip install 'wasmtime>=38,<51'" in out, out
    assert len(out.splitlines()) == 1


def test_record_with_an_unknown_release_says_so_in_one_line(tmp_path):
    (tmp_path / "g.wat").write_text('(module (func (export "run")))')
    code = AS_IF_WASMTIME_37 + """
import runpy, sys
sys.argv = ["sigprof", *sys.argv[1:]]
runpy.run_module("sigprof", run_name="__main__")
"""
    proc = run_python(code, "record", "-o", str(tmp_path / "x.json"), "--invoke", "run",
                      str(tmp_path / "g.wat"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("sigprof: error: sigprof supports wasmtime-py 38 to 50")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_the_probe_refuses_a_store_layout_that_is_not_this_releases():
    """The store words come from the seam; one word off, the probe must say no (and the
    capture falls back rather than walking from the wrong word)."""
    code = """
import dataclasses, sigprof
from sigprof import _native, _wasmtime as wt
wt.RELEASE = dataclasses.replace(wt.RELEASE, exit_pc_word=wt.RELEASE.exit_pc_word + 1)
print(_native.unavailable_reason())
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    if "SIGPROF_PURE_PYTHON" in proc.stdout or "C extension" in proc.stdout:
        return                                   # no native capture to probe for
    assert proc.stdout.startswith("wasmtime's store layout is not the one"), proc.stdout


HOST_CALLER = """
(module
  (import "env" "host" (func $host (result i32)))
  (func (export "run") (result i32) (call $host)))
"""


def test_a_host_function_handle_given_out_again_calls_the_new_function(engine):
    """wasmtime-py before 50 reuses a freed host function's slab handle for the next one
    it defines: the sampling wrapper cached for the handle must not stand in for it.
    While a profile runs every host call goes through sigprof's hook; stores it does
    not sample are freed as usual, and with them their functions' handles."""
    plain = wasmtime.Engine()              # no epochs: its stores need no deadline
    module = wasmtime.Module(plain, HOST_CALLER)
    host_type = wasmtime.FuncType([], [wasmtime.ValType.i32()])
    handles = []

    def call(host) -> int:
        store = wasmtime.Store(plain)
        func = wasmtime.Func(store, host_type, host)
        handles.append(_slab_handle_of(host))
        instance = wasmtime.Instance(store, module, [func])
        result = instance.exports(store)["run"](store)
        del instance, func, store
        gc.collect()                       # frees the store, and with it the handle
        return result

    profiled = wasmtime.Store(engine)
    gc.collect()            # earlier tests' garbage freed now, not between these calls
    expected = list(range(1, 7))
    with sigprof.profile(profiled):
        results = [call(lambda value=value: value) for value in expected]
    assert results == expected
    if wt.WASMTIME_MAJOR < 50:
        # The case this test is about did happen (a freed handle comes back first, unless
        # other garbage freed in the same collection is handed out before it).
        assert len(set(handles)) < len(handles), handles


def _slab_handle_of(host) -> int:
    slab = _wt_func.FUNCTIONS
    entries = slab.handles.items() if hasattr(slab, "handles") else enumerate(slab.list)
    return next(i for i, entry in entries if isinstance(entry, tuple) and entry[0] is host)
