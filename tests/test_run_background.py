"""``sigprof run --serve`` and ``--continuous``: an unmodified program profiled on
request or one file per period, instead of one profile of the whole run."""

from __future__ import annotations

import http.client
import re
import subprocess
import time
from urllib.parse import urlsplit

import pytest

from conftest import EXAMPLES, LIVENESS_LIMIT_S, run_cli, running_cli
from sigprof import _native
from test_pprof import go, pprof_tool  # noqa: F401  (the go fixture)

needs_native = pytest.mark.skipif(
    not _native.available(), reason="profiles on sigprof's own thread need the native capture")

# Runs the demo guest on an engine of its own (plain wasmtime: `run` instruments it)
# until the file named by its first argument exists.
APP = f"""
import os, sys, wasmtime
engine = wasmtime.Engine()
module = wasmtime.Module.from_file(engine, {str(EXAMPLES / "demo.wat")!r})
store = wasmtime.Store(engine)
run = wasmtime.Linker(engine).instantiate(store, module).exports(store)["run"]
while not os.path.exists(sys.argv[1]):
    run(store, 3)
print("done")
"""


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + LIVENESS_LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {LIVENESS_LIMIT_S} s"
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, stop_file) -> str:
    """Let the program end; its exit status must be its own (0); sigprof's stderr."""
    stop_file.touch()
    out, err = proc.communicate(timeout=LIVENESS_LIMIT_S)
    assert proc.returncode == 0, err
    assert out.strip().endswith("done")
    return err


@needs_native
def test_serve_answers_go_pprof_while_the_program_runs(go, tmp_path, monkeypatch):
    monkeypatch.setenv("PPROF_TMPDIR", str(tmp_path))
    (tmp_path / "app.py").write_text(APP)
    stop = tmp_path / "stop"
    with running_cli("run", "--serve", "127.0.0.1:0", "app.py", str(stop), cwd=tmp_path,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        line = proc.stderr.readline()
        found = re.search(r"serving (http://\S+/debug/pprof/)", line)
        assert found, line
        url = found.group(1)
        top = pprof_tool(go, "-top", url + "profile?seconds=2")
        assert "hot_loop [" in top, top
        conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port,
                                          timeout=LIVENESS_LIMIT_S)
        conn.request("GET", "/debug/pprof/heap")
        assert conn.getresponse().status == 404
        conn.close()
        _finish(proc, stop)


@needs_native
def test_continuous_writes_a_profile_per_period_and_keeps_the_newest(go, tmp_path):
    (tmp_path / "app.py").write_text(APP)
    stop, profiles = tmp_path / "stop", tmp_path / "profiles"
    seen = set()

    def three_periods_written() -> bool:
        if profiles.is_dir():      # (a profile being written is a .tmp file beside them)
            seen.update(p.name for p in profiles.iterdir() if p.name.endswith(".pb.gz"))
        return len(seen) >= 3
    with running_cli("run", "--continuous", str(profiles), "--period", "1", "--keep", "2",
                     "app.py", str(stop), cwd=tmp_path, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True) as proc:
        _wait_for(three_periods_written, "three periods written")
        err = _finish(proc, stop)
    written = int(re.search(r"wrote (\d+) profiles", err).group(1))
    assert written >= 4 and "(the newest 2 kept)" in err, err   # three, and the last part
    kept = sorted(profiles.iterdir())
    assert len(kept) == 2 and all(p.name.endswith(".pb.gz") for p in kept), kept
    assert "hot_loop [" in pprof_tool(go, "-top", str(kept[0]))


@pytest.mark.parametrize("args, message", [
    (["--serve", "127.0.0.1:0", "--continuous", "d"], "choose one"),
    (["--serve", "127.0.0.1:0", "-o", "p.json"], "drop -o"),
    (["--continuous", "d", "-o", "p.json"], "drop -o"),
    (["--allow-remote", "-o", "p.json"], "--allow-remote is for --serve"),
    (["--keep", "3", "-o", "p.json"], "--keep is for --continuous"),
    (["--serve", "127.0.0.1:0", "--period", "5"], "--period is for --continuous"),
    (["--serve", "192.0.2.1:0"], "not loopback"),
    (["--serve", "127.0.0.1:0", "--format", "firefox"], "drop --format"),
    (["--continuous", "d", "--period", "0.1"], "period"),
])
def test_bad_background_options_are_one_line_before_the_program_runs(tmp_path, args, message):
    (tmp_path / "app.py").write_text("print('ran')\n")
    proc = run_cli("run", *args, "app.py", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "ran" not in proc.stdout and not (tmp_path / "d").exists()
