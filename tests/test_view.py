"""`sigprof view`: one file, served from 127.0.0.1 the way the Firefox Profiler fetches it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager

import pytest

from conftest import LIVENESS_LIMIT_S, run_cli, running_cli
from test_exporters import golden_recording


@contextmanager
def _viewing(tmp_path, *args):
    """A running ``sigprof view``: (url, page) once it says where; the block ends with
    Ctrl-C, which must stop it cleanly (and it is killed whatever happened)."""
    with running_cli("view", "--no-browser", *args, cwd=tmp_path, stderr=subprocess.PIPE,
                     text=True) as proc:
        lines = []
        while True:
            line = proc.stderr.readline()
            assert line, f"view ended early: {''.join(lines)}"
            lines.append(line)
            if "Ctrl-C" in line:
                break
        url = re.search(r"at (http://127\.0\.0\.1:\d+/\S+)", "".join(lines)).group(1)
        page = re.search(r"open (\S+)", "".join(lines)).group(1)
        yield url, page
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=LIVENESS_LIMIT_S)
        assert proc.returncode == 0 and "stopped" in rest


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=LIVENESS_LIMIT_S) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


def test_view_serves_the_profile_to_the_firefox_profiler_and_nothing_else(tmp_path):
    golden_recording().save(tmp_path / "p.json")
    with _viewing(tmp_path, "p.json") as (url, page):
        status, headers, body = _get(url)
        assert status == 200 and body == (tmp_path / "p.json").read_bytes()
        assert headers["Content-Type"] == "application/json"
        assert headers["Access-Control-Allow-Origin"] == "https://profiler.firefox.com"
        assert page == ("https://profiler.firefox.com/from-url/"
                        + urllib.parse.quote(url, safe="") + "/")
        root = url.split("/", 3)
        for other in ("/", "/p.json", url.rsplit("/", 1)[0] + "/other.json",
                      url + "/../../etc/passwd"):
            target = other if other.startswith("http") else f"{root[0]}//{root[2]}{other}"
            assert _get(target)[0] == 404, target
        assert url.startswith("http://127.0.0.1:")


def test_view_converts_a_raw_recording_and_opens_the_flame_graph(tmp_path):
    golden_recording().save(tmp_path / "p.sigprof")
    with _viewing(tmp_path, "p.sigprof") as (url, page):
        status, headers, body = _get(url)
        assert status == 200 and json.loads(body)["meta"]["preprocessedProfileVersion"] == 70
    with _viewing(tmp_path, "--svg", "p.sigprof") as (url, page):
        status, headers, body = _get(url)
        assert status == 200 and headers["Content-Type"] == "image/svg+xml"
        assert body.startswith(b"<?xml") and page == url


@pytest.mark.parametrize("args", [("missing.json",), ("notes.txt",), ("--svg", "foreign.json"),
                                  ("--source-dir", "nowhere", "p.json"),
                                  ("--svg", "--source-dir", ".", "p.json")])
def test_view_refuses_what_it_cannot_show_in_one_line(tmp_path, args):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "foreign.json").write_text('{"meta": {}}')     # not sigprof's: no flame graph
    golden_recording().save(tmp_path / "p.json")
    out = run_cli("view", "--no-browser", *args, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("sigprof: error: ")
    assert out.stderr.count("\n") == 1
