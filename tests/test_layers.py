"""The offline layer -- reading, analysing and converting recordings -- needs no wasmtime."""

from __future__ import annotations

from pathlib import Path

from conftest import run_python

EXPECTED = Path(__file__).parent / "expected"

WITHOUT_WASMTIME = "import sys; sys.modules['wasmtime'] = None  # import wasmtime fails\n"


def test_recordings_load_report_and_convert_without_wasmtime(tmp_path):
    code = WITHOUT_WASMTIME + f"""
import sigprof
from sigprof import diff
from sigprof.export import EXPORTERS, write
rec = sigprof.load({str(EXPECTED / 'golden.sigprof')!r})
assert rec.report()
for e in EXPORTERS:
    write(rec, {str(tmp_path)!r} + "/out" + e.suffixes[0], e.name)
again = sigprof.load({str(tmp_path)!r} + "/out" + EXPORTERS[0].suffixes[0])  # Firefox
assert again.report() == rec.report()
diff.render_svg(rec, again, "a", "b")
assert "wasmtime" not in {{m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}}
# the model (sigprof.frames) is not the image reader: the seam, and ctypes, stay unread
assert "sigprof._wasmtime" not in sys.modules and "ctypes" not in sys.modules
print("ok")
"""
    proc = run_python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_capture_layer_says_what_it_needs_when_wasmtime_is_missing():
    proc = run_python(WITHOUT_WASMTIME + "import sigprof\nsigprof.profile\n")
    assert proc.returncode != 0 and "wasmtime" in proc.stderr.splitlines()[-1]


def test_the_offline_commands_run_without_wasmtime(tmp_path):
    """convert, report and diff, as `python -m sigprof`, with wasmtime unimportable."""
    golden = str(EXPECTED / "golden.sigprof")
    code = WITHOUT_WASMTIME + """
import runpy
sys.argv = ["sigprof", *sys.argv[1:]]
runpy.run_module("sigprof", run_name="__main__")
"""
    for args in (["report", golden], ["convert", golden, "-o", str(tmp_path / "g.pb.gz")],
                 ["convert", golden, "-o", str(tmp_path / "g.json")],
                 ["diff", golden, str(tmp_path / "g.json"), "-o", str(tmp_path / "d.svg")]):
        proc = run_python(code, *args)
        assert proc.returncode == 0, (args, proc.stderr)
    proc = run_python(code, "record", "--invoke", "run", "x.wat")
    assert proc.returncode == 2 and proc.stderr.startswith("sigprof: error: record needs wasmtime-py")


def test_no_public_name_is_also_a_submodule():
    # Importing a submodule binds its name on the package: a module `sigprof/serve.py`
    # would make `sigprof.serve` the module, not the function, after any
    # `import sigprof.serve`.  So the package's public names and its modules differ.
    import pkgutil
    import sigprof
    modules = {m.name for m in pkgutil.iter_modules(sigprof.__path__)}
    assert not modules & set(sigprof.__all__), modules & set(sigprof.__all__)


def test_the_capture_is_chosen_in_one_place():
    """The pure-Python capture is a declared degraded backend: ``_capture.new_capture``
    picks it or the native one, and no code branches on which it got (issue 19, item 5)."""
    import ast
    backends = {"NativeCapture", "PythonCapture", "PythonTime", "PurePythonTime"}
    package = Path(__file__).parent.parent / "sigprof"
    branches, made = [], []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                node.func, "id", "")
            named = {n.attr if isinstance(n, ast.Attribute) else n.id
                     for arg in node.args[1:] for n in ast.walk(arg)
                     if isinstance(n, (ast.Name, ast.Attribute))}
            if callee == "isinstance" and named & backends:
                branches.append(f"{path.name}:{node.lineno}")
            if callee in ("NativeCapture", "PythonCapture"):
                made.append(path.name)
    assert branches == []
    assert made == ["_capture.py", "_capture.py"]        # in new_capture, one of each
