"""The C extension: built for this interpreter and in use; refused below CPython 3.11;
warning-free for every supported CPython; and, where it cannot be used, a warning
that says which of the three reasons it is (issue 19)."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

import sigprof
from sigprof import _native

from conftest import ROOT

NATIVE_SRC = ROOT / "sigprof" / "_native_src"
THIS_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]     # .cpython-3XY-<arch>.so
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def _pyenv_pythons(minor_versions: List[int]) -> List[Path]:
    """The pyenv-installed CPython 3.N interpreters for each N given that is installed."""
    found = []
    for minor in minor_versions:
        candidates = sorted(PYENV_VERSIONS.glob(f"3.{minor}.*/bin/python3"))
        if candidates:
            found.append(candidates[-1])
    return found


def _run(args: List[str], cwd: Path, env: Optional[dict] = None,
         timeout_s: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


# --- built, imported, used -------------------------------------------------------

def test_the_extension_built_for_this_interpreter_imports_from_the_package():
    ext = _native._csigprof
    assert ext is not None, _native._IMPORT_ERROR
    assert ext.__name__ == "sigprof._csigprof"
    path = Path(ext.__file__)
    assert path.parent == ROOT / "sigprof" and path.name == "_csigprof" + THIS_SUFFIX


def test_the_native_capture_is_the_one_a_profile_uses(guest):
    g = guest("recursion")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("recursion", g.module)], clock="wall",
                         interval=0.001) as prof:
        inst.exports(store)["rec"](store, 10, 20_000_000)
    meta = prof.recording.meta
    if os.environ.get("SIGPROF_PURE_PYTHON"):
        assert meta["capture"] == "python"
        assert any("SIGPROF_PURE_PYTHON is set" in w for w in meta["warnings"])
    else:
        assert meta["capture"] == "native"
        assert not any("pure-Python capture" in w for w in meta["warnings"])


# --- the version floor, and warnings ------------------------------------------------

def _python_3_10() -> Path:
    found = _pyenv_pythons([10])
    if not found:
        pytest.skip("no CPython 3.10 installed under pyenv")
    return found[0]


def test_setup_py_refuses_to_build_with_python_3_10(tmp_path):
    python310 = _python_3_10()
    shutil.copy(ROOT / "setup.py", tmp_path)            # a copy: nothing lands in the tree
    shutil.copytree(NATIVE_SRC, tmp_path / "sigprof" / "_native_src")
    done = _run([str(python310), "setup.py", "build_ext", "--inplace"], cwd=tmp_path)
    assert done.returncode != 0
    assert "sigprof needs Python 3.11 or newer (this is 3.10." in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("*.so"))


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc")
    return gcc


def _include_dir(python: Path) -> str:
    done = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"],
                cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_c_sources_stop_at_an_error_naming_the_version_under_3_10_headers(tmp_path):
    """What a build that bypasses setup.py's check (another build tool) runs into."""
    include = _include_dir(_python_3_10())
    done = _run([_gcc(), "-fsyntax-only", f"-I{include}", str(NATIVE_SRC / "module.c")],
                cwd=tmp_path)
    assert done.returncode != 0
    assert "#error" in done.stderr
    assert "needs CPython 3.11 or newer" in done.stderr, done.stderr
    assert "implicit declaration" not in done.stderr     # stopped before any of those


SUPPORTED = _pyenv_pythons([11, 12, 13]) or [Path(sys.executable)]


@pytest.mark.parametrize("python", SUPPORTED, ids=lambda p: p.parent.parent.name)
def test_the_c_sources_are_warning_free_under_gcc_wall_wextra(python):
    """-Werror here rather than in setup.py: a newer compiler's new warning must fail this
    test, not silently cost a user the native path (the extension is optional)."""
    include = _include_dir(python)
    for source in sorted(NATIVE_SRC.glob("*.c")):
        done = _run([_gcc(), "-fsyntax-only", "-O2", "-Wall", "-Wextra", "-Werror",
                     f"-I{include}", str(source)], cwd=ROOT)
        assert done.returncode == 0, f"{source.name} under {python}:\n{done.stderr}"


# What a user sees where the extension cannot be used: the warning a profile carries,
# from a real profile in a fresh interpreter whose copy of the package is arranged
# for each failure.  A `pip install -e` of another checkout leaves a finder at the end
# of sys.meta_path that maps sigprof's submodules to that checkout (it would find the
# extension these copies lack), so the script drops it.
PROFILE_SCRIPT = """
import json, sys, collections
sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "__name__", "") != "_EditableFinder"]
import wasmtime
import sigprof, sigprof._wasmtime
if sys.argv[1] == "too-old":
    real = sys.version_info
    Version = collections.namedtuple("Version", "major minor micro releaselevel serial")
    sys.version_info = Version(3, 10, 13, "final", 0)
    import sigprof._native
    sys.version_info = real
engine_config = wasmtime.Config()
engine_config.epoch_interruption = True
engine = wasmtime.Engine(engine_config)
module = wasmtime.Module(engine, '''(module (func (export "spin") (param i32)
  (local $i i32) (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
  (br_if $l (i32.lt_u (local.get $i) (local.get 0))))))''')
store = wasmtime.Store(engine)
spin = wasmtime.Instance(store, module, []).exports(store)["spin"]
with sigprof.profile(store, modules=[("spin", module)], clock="wall", interval=0.001) as prof:
    spin(store, 5_000_000)
print(json.dumps({"capture": prof.recording.meta["capture"],
                  "warnings": prof.recording.meta["warnings"]}))
"""


def _copy_of_the_package(root: Path) -> Path:
    """The sigprof package (Python files only: no extension) under root."""
    shutil.copytree(ROOT / "sigprof", root / "sigprof",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "_native_src"))
    return root / "sigprof"


def _profile_warning(tmp_path: Path, case: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SIGPROF_PURE_PYTHON"}
    env["PYTHONPATH"] = str(tmp_path)
    done = _run([sys.executable, "-c", PROFILE_SCRIPT, case], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["capture"] == "python"
    pure = [w for w in result["warnings"] if w.startswith("pure-Python capture")]
    assert len(pure) == 1, result["warnings"]
    assert "circular import" not in pure[0]
    return pure[0]


def test_the_warning_says_python_is_too_old(tmp_path):
    package = _copy_of_the_package(tmp_path)
    shutil.copy(_native._csigprof.__file__, package)    # built, yet not to be used
    warning = _profile_warning(tmp_path, "too-old")
    assert ("Python too old for the C extension: it needs CPython 3.11 or newer, "
            "this is 3.10.13") in warning, warning


def test_the_warning_says_the_extension_is_not_built_for_this_python_and_how_to_build_it(
        tmp_path):
    package = _copy_of_the_package(tmp_path)
    this_tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    other_build = "_csigprof" + THIS_SUFFIX.replace(this_tag, "cpython-39")
    (package / other_build).write_bytes(b"")            # an old build for another Python
    warning = _profile_warning(tmp_path, "not-built")
    assert f"the C extension is not built for this Python (no _csigprof{THIS_SUFFIX}" in warning
    assert "found builds for cpython-39-" in warning, warning
    assert "build it: pip install -e . / python3 setup.py build_ext --inplace" in warning


def test_the_warning_says_the_extension_failed_to_import_and_why(tmp_path):
    package = _copy_of_the_package(tmp_path)
    (package / ("_csigprof" + THIS_SUFFIX)).write_bytes(b"not a shared object")
    warning = _profile_warning(tmp_path, "broken")
    assert "the C extension failed to import: ImportError: " in warning, warning
    assert f"_csigprof{THIS_SUFFIX}" in warning               # the loader's own reason
