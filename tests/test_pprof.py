"""pprof output, read back by ``go tool pprof`` itself (Debian ``golang-go``)."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from conftest import EXAMPLES, require, run_cli, run_process
from sigprof.analysis import summarise_recording
from sigprof.export import pprof
from test_exporters import golden_recording


@pytest.fixture(scope="module")
def go():
    go = shutil.which("go")
    require(go is not None, "go is not installed (Debian golang-go)")
    return go


def pprof_tool(go: str, *args: str) -> str:
    done = run_process([go, "tool", "pprof", *args])
    assert done.returncode == 0, done.stderr
    return done.stdout


def top_flat_ns(go: str, path: Path) -> dict:
    """{function name: flat ns} from ``pprof -top``."""
    out = pprof_tool(go, "-top", "-unit=ns", "-nodecount=100000", str(path))
    flat = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)ns\s+[\d.]+%\s+[\d.]+%\s+\d+ns\s+[\d.]+%\s+(.*)$", line)
        if m:
            flat[m.group(2)] = int(m.group(1))
    return flat


def test_go_pprof_reads_every_function_with_its_self_time(go, tmp_path):
    rec = golden_recording()
    path = tmp_path / "golden.pb.gz"
    rec.save(path)
    summary = summarise_recording(rec)
    expected = {f.function.label("summary"): f.self_weight
                for f in summary.top_self(1000) if f.self_weight}
    assert top_flat_ns(go, path) == expected


def test_traces_carry_the_thread_and_the_whole_stack(go, tmp_path):
    rec = golden_recording()
    path = tmp_path / "golden.pb.gz"
    rec.save(path)
    traces = pprof_tool(go, "-traces", str(path))
    assert "thread:  MainThread" in traces and "thread:  worker-1" in traces
    # leaf first, as pprof prints a trace: the deepest stack of the golden recording.
    assert re.search(r"Plugin\.log \[env\.log\]\s+work \[lib\.wasm\]\s+work \[app\.wasm\]\s+"
                     r"main \[app\.wasm\]", traces), traces


def test_warnings_are_comments_and_the_clock_names_the_sample_type(go, tmp_path):
    rec = golden_recording("wall")
    rec = dataclasses.replace(rec, meta={**rec.meta, "warnings": ["the ring was full"]})
    path = tmp_path / "wall.pprof"
    rec.save(path)
    assert "warning: the ring was full" in pprof_tool(go, "-comments", str(path))
    raw = pprof_tool(go, "-raw", str(path))
    assert "samples/count wall/nanoseconds[dflt]" in raw
    assert f"Period: {round(rec.interval * 1e9)}" in raw


def test_record_writes_pprof_that_go_reads(go, tmp_path):
    out = tmp_path / "demo.pb.gz"
    done = run_cli("record", "-o", out, "--invoke", "run", "--arg", "10", EXAMPLES / "demo.wat")
    assert done.returncode == 0, done.stderr
    assert "(pprof profile" in done.stderr
    flat = top_flat_ns(go, out)
    assert "hot_loop [demo.wat]" in flat, flat


def test_encoder_writes_the_wire_format_by_the_spec():
    assert pprof._varint(0) == b"\x00"
    assert pprof._varint(300) == b"\xac\x02"
    assert pprof._varint(-1) == b"\xff" * 9 + b"\x01"         # int64 -1: ten bytes
    msg = pprof._Message().scalar(1, 150).blob(2, b"ab").packed(3, [1, 300]).scalar(4, 0)
    assert bytes(msg.buf) == b"\x08\x96\x01\x12\x02ab\x1a\x03\x01\xac\x02"
