"""Where outputs go and what they carry: issue 17.

Writing: a device, a FIFO or a symbolic link given as an output stays what it
is (the data goes through it), a regular file is replaced atomically, a full
disk and every other failure name the user's path; `record` tries every
output.  Carrying: the recording's warnings reach every format, and a Firefox
profile sigprof wrote reads back into the same recording (`load`, `convert`,
`report`, `view`).  The scratch devices are made with mknod: the tests run as
root, and never touch /dev/null or /dev/full themselves.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

import sigprof
from conftest import ROOT, require
from sigprof import rawfile, view
from sigprof import export
from sigprof.export import svg
from sigprof.frames import FRAME_HOST, FRAME_PYCODE
from sigprof.recording import Recording
from test_exporters import golden_recording

DEMO = ROOT / "examples" / "demo.wat"
DEMO_RUN = ("--invoke", "run", "--arg", "1", str(DEMO))
WARNINGS = ["pure-Python capture (slower, epoch-biased): a stand-in warning",
            "a second <warning> & one more"]


def _cli(*args, cwd, timeout=300):
    """Run `python -m sigprof ARGS` in ``cwd``; the process is killed if it outlives the test."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               XDG_CACHE_HOME=str(Path(cwd) / ".cache"))
    env.pop("SIGPROF_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "sigprof", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        proc.kill()
        proc.wait()


def _device(path: Path, like: str) -> Path:
    """A scratch character device with the numbers of ``like`` (/dev/null, /dev/full)."""
    require(os.geteuid() == 0, "making a device node needs root")
    os.mknod(path, stat.S_IFCHR | 0o666, os.stat(like).st_rdev)
    return path


def _warned(clock: str = "cpu") -> Recording:
    rec = golden_recording(clock)
    rec.meta["warnings"] = list(WARNINGS)
    return rec


# --- 1. devices, FIFOs and links stay what they are -----------------------------

def test_a_character_device_is_written_through_not_replaced(tmp_path):
    null = _device(tmp_path / "null", "/dev/null")
    rec = golden_recording()
    for fmt in ("firefox", "raw", "collapsed", "text", "svg", "pprof"):
        assert rec.save(null, fmt) == fmt
        assert stat.S_ISCHR(os.lstat(null).st_mode), f"{fmt} replaced the device"
    assert [p.name for p in tmp_path.iterdir()] == ["null"]       # no temporary left


def test_a_fifo_is_written_through_to_its_reader(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        golden_recording().save(fifo)
    finally:
        if reader.is_alive():          # the write failed before opening: free the reader
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received == [golden_recording().report().encode()]


def test_the_cli_writes_through_a_device(tmp_path):
    raw = tmp_path / "r.sigprof"
    golden_recording().save(raw)
    null = _device(tmp_path / "null.json", "/dev/null")
    proc = _cli("convert", raw, "-o", null, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_a_symlink_is_followed_and_stays_a_link(tmp_path):
    target = tmp_path / "real" / "profile.txt"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    rec = golden_recording()
    rec.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == rec.report()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640          # a replaced file keeps its mode
    assert sorted(p.name for p in target.parent.iterdir()) == ["profile.txt"]
    dangling = tmp_path / "dangling.txt"                          # to a file not there yet
    dangling.symlink_to(tmp_path / "real" / "new.txt")
    rec.save(dangling)
    assert dangling.is_symlink() and (tmp_path / "real" / "new.txt").read_text() == rec.report()


def test_a_full_device_is_a_clear_error_naming_it(tmp_path):
    full = _device(tmp_path / "full.txt", "/dev/full")
    with pytest.raises(OSError) as caught:
        golden_recording().save(full)
    assert caught.value.filename == str(full) and "disk full" in caught.value.strerror
    raw = tmp_path / "r.sigprof"
    golden_recording().save(raw)
    proc = _cli("convert", raw, "-o", full, cwd=tmp_path)
    assert proc.returncode != 0 and "wrote" not in proc.stderr
    assert proc.stderr.strip() == f"sigprof: error: {full}: disk full (no space left on the device)"
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_write_file_errors_name_the_users_path_never_a_temporary_file(tmp_path):
    directory = tmp_path / "taken.json"
    directory.mkdir()
    for path in (directory, Path("/proc/sigprof-test.json")):    # a directory; no files allowed
        with pytest.raises(OSError) as caught:
            export.write_file(str(path), b"{}")
        assert caught.value.filename == str(path), caught.value
        assert ".tmp" not in str(caught.value)
    raw = tmp_path / "r.sigprof"
    golden_recording().save(raw)
    for path in (directory, "/proc/sigprof-test.json"):
        proc = _cli("convert", raw, "-o", path, cwd=tmp_path)
        assert proc.returncode == 2 and ".tmp" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"sigprof: error: {path}: "), proc.stderr


# --- 8. record tries every output ---------------------------------------------

def test_a_failed_output_does_not_stop_the_outputs_after_it(tmp_path):
    (tmp_path / "taken.json").mkdir()
    proc = _cli("record", "-o", "taken.json", "-o", "good.sigprof", "-o", "good.txt", *DEMO_RUN,
                cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert (tmp_path / "good.sigprof").exists() and (tmp_path / "good.txt").exists()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sigprof: error:")]
    assert errors == ["sigprof: error: taken.json: is a directory; the recording is in "
                      "good.sigprof"], proc.stderr
    assert "wrote" in proc.stderr and not list(tmp_path.glob("sigprof-rescue-*"))


def test_every_failed_output_is_reported_and_one_rescue_copy_kept(tmp_path):
    (tmp_path / "a.json").mkdir()
    (tmp_path / "b.svg").mkdir()
    proc = _cli("record", "-o", "a.json", "-o", "b.svg", "-o", "c.txt", *DEMO_RUN, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sigprof: error:")]
    assert len(errors) == 2, proc.stderr
    assert errors[0] == "sigprof: error: a.json: is a directory"
    assert errors[1].startswith("sigprof: error: b.svg: is a directory; the recording was saved to ")
    rescues = list(tmp_path.glob("sigprof-rescue-*.sigprof"))
    assert len(rescues) == 1 and (tmp_path / "c.txt").exists()
    assert sigprof.load(rescues[0]).samples > 0


# --- 7. warnings reach every format ---------------------------------------------

def test_warnings_reach_the_firefox_svg_and_text_outputs():
    rec = _warned()
    extra = {s["label"]: s["entries"] for s in rec.to_firefox()["meta"]["extra"]}
    assert [e["value"] for e in extra["sigprof warnings"]] == WARNINGS
    assert all(e["format"] == "string" for e in extra["sigprof warnings"])
    drawn = svg.convert(rec)
    assert "a second &lt;warning&gt; &amp; one more" in drawn and 'class="w"' in drawn
    report = rec.report()
    assert "  warnings:\n    " + WARNINGS[0] + "\n    " + WARNINGS[1] + "\n" in report
    assert "warnings" not in golden_recording().report()        # none: no block


def test_convert_to_collapsed_says_the_warnings_cannot_go_with_it(tmp_path):
    raw = tmp_path / "w.sigprof"
    _warned().save(raw)
    proc = _cli("convert", raw, "-o", tmp_path / "w.folded", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "collapsed stacks cannot carry the recording's 2 warning(s)" in proc.stderr
    assert all(f"sigprof: warning: {w}" in proc.stderr for w in WARNINGS)
    report = _cli("report", raw, cwd=tmp_path)
    assert report.returncode == 0 and "warnings:" in report.stdout


def test_a_recorded_warning_is_in_every_output(tmp_path):
    # The interval timer cannot tick every 100 µs: the recording warns that the
    # interval was raised (and, in the pure-Python mode, that the capture is pure).
    outputs = ("p.json", "p.svg", "p.txt", "p.sigprof")
    proc = _cli("record", *[a for o in outputs for a in ("-o", o)], "--interval", "100us",
                "--source", "itimer", *DEMO_RUN, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = sigprof.load(tmp_path / "p.sigprof").meta["warnings"]
    assert any("interval raised" in w for w in warnings), warnings
    profile = json.loads((tmp_path / "p.json").read_text())
    extra = {s["label"]: s["entries"] for s in profile["meta"]["extra"]}
    assert [e["value"] for e in extra["sigprof warnings"]] == warnings
    drawn = (tmp_path / "p.svg").read_text()
    report = (tmp_path / "p.txt").read_text()
    for warning in warnings:
        assert escape(warning) in drawn and f"    {warning}\n" in report


# --- 9. a Firefox profile sigprof wrote reads back ------------------------------

@pytest.mark.parametrize("clock", ["cpu", "wall"])
@pytest.mark.parametrize("name", ["p.json", "p.json.gz"])
def test_a_saved_firefox_profile_reads_back_into_the_same_recording(tmp_path, clock, name):
    rec = _warned(clock)
    rec.save(tmp_path / name)
    again = sigprof.load(tmp_path / name)
    assert again.report() == rec.report()
    assert again.to_collapsed() == rec.to_collapsed()
    assert again.to_firefox() == rec.to_firefox()
    assert again.meta == rec.meta and again.modules == rec.modules
    assert again.host_functions == rec.host_functions and again.frames == rec.frames
    assert again.truncated == rec.truncated == 1


def test_report_of_a_json_profile_is_the_report_of_its_recording(tmp_path):
    proc = _cli("record", "-o", "demo.json", "-o", "demo.sigprof", *DEMO_RUN, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    from_raw = _cli("report", "demo.sigprof", cwd=tmp_path)
    from_json = _cli("report", "demo.json", cwd=tmp_path)
    assert from_raw.returncode == from_json.returncode == 0, from_json.stderr
    assert from_json.stdout == from_raw.stdout and "clock cpu" in from_json.stdout


def test_convert_and_view_take_the_json_the_readme_writes(tmp_path):
    proc = _cli("record", "-o", "demo.json", *DEMO_RUN, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for out in ("demo.svg", "demo.folded", "demo.sigprof", "demo.pb.gz"):
        converted = _cli("convert", "demo.json", "-o", out, cwd=tmp_path)
        assert converted.returncode == 0, converted.stderr
    assert sigprof.load(tmp_path / "demo.sigprof").samples == sigprof.load(
        tmp_path / "demo.json").samples
    body, content_type, name = view.content(str(tmp_path / "demo.json"), svg=True)
    assert content_type == "image/svg+xml" and body.startswith(b"<?xml")


def test_a_firefox_profile_from_elsewhere_is_refused_in_one_line(tmp_path):
    rec = golden_recording()
    profile = rec.to_firefox()
    del profile["meta"]["sigprof"]
    (tmp_path / "browser.json").write_text(json.dumps(profile))
    for command in (("report", "browser.json"), ("convert", "browser.json", "-o", "x.svg")):
        proc = _cli(*command, cwd=tmp_path)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert "not a profile written by sigprof" in proc.stderr
    with pytest.raises(rawfile.RecordingFormatError, match="not a profile written by sigprof"):
        sigprof.load(tmp_path / "browser.json")
    profile = rec.to_firefox()
    profile["shared"]["stackTable"]["prefixOffset"][3] = 99        # damaged, but sigprof's
    (tmp_path / "damaged.json").write_text(json.dumps(profile))
    with pytest.raises(rawfile.RecordingFormatError, match="damaged sigprof profile"):
        sigprof.load(tmp_path / "damaged.json")


# --- wording ----------------------------------------------------------------------

def test_an_empty_recording_is_said_to_be_empty_in_words(tmp_path):
    (tmp_path / "empty.sigprof").write_bytes(b"")
    for command in (("report", "empty.sigprof"), ("convert", "empty.sigprof", "-o", "x.txt")):
        proc = _cli(*command, cwd=tmp_path)
        assert proc.returncode == 2 and "Error" not in proc.stderr, proc.stderr
        assert proc.stderr.strip() == ("sigprof: error: empty.sigprof: the file is empty "
                                       "(damaged, or still being written), not a recording")


def test_cli_errors_do_not_speak_of_save(tmp_path):
    raw = tmp_path / "r.sigprof"
    golden_recording().save(raw)
    proc = _cli("convert", raw, "-o", "x.pdf", cwd=tmp_path)
    assert proc.returncode == 2 and "save(" not in proc.stderr and "--format" in proc.stderr
    with pytest.raises(sigprof.export.UnknownFormat, match=r"save\(path, format="):
        golden_recording().save(tmp_path / "x.pdf")


def test_the_collapsed_unit_and_folded_suffix_are_documented(tmp_path):
    for command in ("record", "convert"):
        help_text = " ".join(_cli(command, "--help", cwd=tmp_path).stdout.split())
        assert ".folded" in help_text and "µs" in help_text, help_text
    readme = (ROOT / "README.md").read_text()
    assert ".folded" in readme and "microseconds" in readme


def test_the_repr_counts_python_callers_apart_from_host_functions():
    rec = golden_recording()
    assert [f.type for f in rec.frames].count(FRAME_HOST) == 1
    assert [f.type for f in rec.frames].count(FRAME_PYCODE) == 1
    assert "1 host function(s), 1 Python caller function(s)>" in repr(rec)
