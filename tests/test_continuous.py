"""Continuous profiling to files: one profile per period, rotated to a cap."""

from __future__ import annotations

import os
import time

import pytest

import sigprof
from test_pprof import go, pprof_tool  # noqa: F401  (the go fixture)
from test_serve import LIVENESS_LIMIT_S, guests_running

pytestmark = pytest.mark.skipif(not sigprof._native.available(),
                                reason="continuous() needs the native capture")


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + LIVENESS_LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {LIVENESS_LIMIT_S} s"
        time.sleep(0.05)


def test_one_profile_per_period_and_only_the_newest_kept(go, tmp_path, monkeypatch):
    monkeypatch.setenv("PPROF_TMPDIR", str(tmp_path))
    out = tmp_path / "profiles"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    with guests_running():
        with sigprof.continuous(out, period_s=1, max_files=2) as writer:
            wait_for(lambda: len(writer.written) >= 4, "four periods written")
    kept = sorted(p for p in os.listdir(out) if p.startswith("sigprof-"))
    assert len(writer.written) >= 5                     # close() wrote the period in progress
    assert kept == sorted(os.path.basename(p) for p in writer.written[-2:])
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert all(p.endswith(".pb.gz") and f"-{os.getpid()}." in p for p in kept)
    assert "hot_loop [" in pprof_tool(go, "-top", str(out / kept[0]))


def test_another_format_and_the_profile_is_free_after_close(tmp_path):
    with sigprof.continuous(tmp_path, period_s=1, format="raw") as writer:
        pass
    (path,) = writer.written
    assert path.endswith(".sigprof") and sigprof.load(path).meta["clock"] == "cpu"
    with sigprof.profile():
        pass


@pytest.mark.parametrize("options, message", [
    ({"period_s": 0.5}, "period_s=0.5: expected at least 1"),
    ({"max_files": 0}, "max_files=0: expected a positive"),
    ({"format": "bmp"}, "unknown format 'bmp'"),
])
def test_bad_options_are_one_clear_error(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        sigprof.continuous(tmp_path, **options)


def test_a_missing_directory_is_made_and_a_file_in_its_way_is_an_error(tmp_path):
    with sigprof.continuous(tmp_path / "new" / "profiles", period_s=1) as writer:
        pass
    assert len(writer.written) == 1 and (tmp_path / "new" / "profiles").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        sigprof.continuous(tmp_path / "file")


def test_a_profile_option_the_profiler_refuses_is_raised_by_the_call(tmp_path):
    with pytest.raises(ValueError, match="clock"):
        sigprof.continuous(tmp_path, clock="sundial")
    with sigprof.profile():
        pass
