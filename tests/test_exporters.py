"""Every output format, on a recording built by hand, against checked-in expected files.

The recording holds one of each thing an exporter must render: two modules
with functions of the same name, a host function with its import name, a
Python frame, an opaque module, a truncated stack, a sample re-attributed to
its tick, a sample with no stack, and both clocks' weights.  Regenerate the
files after an intended change with ``SIGPROF_UPDATE_EXPECTED=1``, and read
the diff.
"""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path

import pytest

from sigprof import rawfile
from sigprof.export import raw
from sigprof.__main__ import main
from sigprof.frames import (FRAME_GUEST, FRAME_HOST, FRAME_OPAQUE, FRAME_PYCODE, FRAME_PYTHON, FRAME_TRUNCATED,
                            SAMPLE_AT_TICK, SAMPLE_TRUNCATED, Frame, HostFunction)
from sigprof.recording import Recording, SampleTable
from sigprof.frames import Function, ModuleSymbols

EXPECTED = Path(__file__).parent / "expected"
UPDATE = bool(os.environ.get("SIGPROF_UPDATE_EXPECTED"))


def golden_recording(clock: str = "cpu") -> Recording:
    app = ModuleSymbols("app.wasm", "ab" * 32, 0x400, (
        Function(0x000, 0x80, "main", 0, "wasm", (12,)),
        Function(0x080, 0x100, "work", 1, "wasm", (20, 60)),
        Function(0x180, 0x40, "leaf;odd name", 2, "wasm", (8,))))
    lib = ModuleSymbols("lib.wasm", "cd" * 32, 0x200, (
        Function(0x000, 0x100, "work", 0, "wasm", (16,)),))
    host = HostFunction(name="Plugin.log", module="plugin", file="plugin.py", line=12,
                        import_module="env", import_name="log")
    caller = HostFunction(name="Server.handle", module="server", file="server.py", line=40)
    frames = (Frame(FRAME_GUEST, 0, 0x010),      # 0 app!main
              Frame(FRAME_GUEST, 0, 0x0A0),      # 1 app!work
              Frame(FRAME_GUEST, 0, 0x190),      # 2 app!leaf;odd name
              Frame(FRAME_GUEST, 1, 0x020),      # 3 lib!work
              Frame(FRAME_HOST, 0, 0),           # 4 Plugin.log
              Frame(FRAME_PYTHON, 0, 0),         # 5 (python, outside the guest)
              Frame(FRAME_OPAQUE, 0, 0),         # 6 (other wasm module)
              Frame(FRAME_TRUNCATED, 0, 0),      # 7 (truncated stack)
              Frame(FRAME_GUEST, 0, 0x0C8),      # 8 app!work, another return address
              Frame(FRAME_PYCODE, 1, 47))        # 9 Server.handle, at line 47
    parent = array("i", [-1, 0, 1, 1, 3, 1, -1, -1, 7, 8, 0, 10, 0, -1, 13, 14])
    frame = array("i", [0, 1, 2, 3, 4, 6, 5, 7, 1, 2, 8, 2, 3, 9, 0, 1])
    stacks = [2, 4, 5, 6, 9, -1, 11, 12, 2, 1, 15, 13]
    flags = [0, 0, 0, 0, SAMPLE_TRUNCATED, 0, SAMPLE_AT_TICK, 0, 0, 0, 0, 0]
    n = len(stacks)
    table = SampleTable(array("q", (1_000_000 * (i + 1) for i in range(n))),
                        array("q", (4_000_000 + 1000 * i for i in range(n))),
                        array("q", (5_000_000 + 3000 * i for i in range(n))),
                        array("i", stacks), array("i", [1] * (n - 1) + [3]), array("B", flags),
                        array("q", (50_000_000 + 4096 * (i % 4) for i in range(n))),
                        array("q", (65536 * (1 + i // 3) for i in range(n))),
                        array("i", [0] * 8 + [1] * 4))
    meta = {"format": "sigprof", "name": "app.wasm", "clock": clock, "interval_s": 0.004,
            "requested_interval_s": 0.001, "start_unix_ns": 1_700_000_000_000_000_000,
            "duration_ns": 12_000_000, "thread_cpu_ns": 45_000_000, "overhead_cpu_ns": 120_000,
            "unsampled_cpu_ns": 300_000, "dropped": 2, "samples_taken": n + 2,
            "versions": {"sigprof": "0.0.0", "wasmtime": "50.0.1", "python": "3.11.7"},
            "arch": "x86_64", "warnings": [],
            "threads": [{"name": "MainThread", "tid": 0}, {"name": "worker-1", "tid": 1}]}
    return Recording(meta=meta, modules=(app, lib), host_functions=(host, caller), frames=frames,
                     stack_parent=parent, stack_frame=frame, sample_table=table)


def _check(name: str, data: bytes) -> None:
    path = EXPECTED / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), f"{path} is missing: run with SIGPROF_UPDATE_EXPECTED=1"
    assert data == path.read_bytes(), f"{name} differs from the expected output"


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_firefox_profile_is_the_expected_one(clock):
    profile = golden_recording(clock).to_firefox()
    _check(f"golden-{clock}.json", json.dumps(profile, indent=1, ensure_ascii=False).encode())


def test_collapsed_stacks_are_the_expected_ones():
    _check("golden.collapsed", golden_recording().to_collapsed().encode())


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_text_report_is_the_expected_one(clock):
    _check(f"golden-{clock}.txt", golden_recording(clock).report().encode())


def test_raw_recording_is_the_expected_one_and_reads_back_the_same():
    rec = golden_recording()
    data = raw.dumps(rec)
    _check("golden.sigprof", data)
    again = rawfile.loads(data)
    assert raw.dumps(again) == data
    assert again.report() == rec.report()


def test_a_version_1_0_recording_still_reads_and_reports_the_same():
    old = rawfile.loads((EXPECTED / "golden-1.0.sigprof").read_bytes())
    # The report the hand-built recording gave when 1.0 was current.
    assert old.report() == (EXPECTED / "golden-1.0.txt").read_text()
    assert len(old.sample_table.rss_bytes) == 0          # 1.0 had no memory columns
    assert old.to_firefox()["counters"] == []
    assert [c["name"] for c in golden_recording().to_firefox()["counters"]] == [
        "Resident memory", "Guest linear memory"]


def test_report_of_a_saved_firefox_profile_is_the_expected_one(tmp_path, capsys):
    path = tmp_path / "golden.json"
    golden_recording().save(path)
    assert main(["report", str(path)]) == 0
    _check("golden-from-json.txt", capsys.readouterr().out.encode())


def test_a_thread_opens_before_its_first_sample_even_at_a_negative_time():
    # Found by the raw-file fuzzer: a damaged file can hold a sample time below 0;
    # the empty sample that opens each Firefox thread must not come after it.
    rec = golden_recording()
    rec.sample_table.time_ns[0] = -5_000_000
    profile = rec.to_firefox()                      # checked by the autouse fixture too
    times = profile["threads"][0]["samples"]["time"]
    assert times[0] <= times[1] == -5.0
