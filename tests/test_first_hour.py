"""A newcomer's first hour with the command line: each sharp edge issue 13 lists, as a test."""

from __future__ import annotations

import signal
import subprocess

import sigprof

from conftest import LIVENESS_LIMIT_S, cli_env, run_cli, running_cli, wait_until_sampling

LEAF_WAT = """(module
  (func $leaf (export "leaf") (param i32) (result i32) (i32.div_u (i32.const 1) (local.get 0)))
  (func $spin (export "spin") (param $n i32) (result i32)
    (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $i)))
"""


def sigprof_cli(tmp_path, *args, **kwargs):
    return run_cli(*args, cwd=tmp_path, env=cli_env(XDG_CACHE_HOME=str(tmp_path / "cache")),
                   **kwargs)


def _module(tmp_path, name="mine.wat", text=LEAF_WAT):
    (tmp_path / name).write_text(text)
    return name


def _error(proc):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("sigprof: error: ") and "Traceback" not in proc.stderr
    return proc.stderr


def test_a_wat_syntax_error_keeps_the_file_line_column_and_excerpt(tmp_path):
    _module(tmp_path, "bad.wat", '(module (func $f (export "f") (result i32)\n  i32.const 1\n  (oops)))\n')
    err = _error(sigprof_cli(tmp_path, "record", "-o", "x.json", "bad.wat"))
    assert err.splitlines()[0] == "sigprof: error: bad.wat:3:4: unknown operator or unexpected token"
    assert "3 |   (oops)))" in err and "^" in err
    assert not (tmp_path / "x.json").exists()


def test_an_invalid_module_says_why_and_a_non_module_says_what_it_is_not(tmp_path):
    _module(tmp_path, "invalid.wat", '(module (func (export "f") (result i32) i64.const 1))')
    assert "type mismatch" in _error(sigprof_cli(tmp_path, "record", "-o", "x.json", "invalid.wat"))
    (tmp_path / "notes.txt").write_text("hello world")
    err = _error(sigprof_cli(tmp_path, "record", "-o", "x.json", "notes.txt"))
    assert "neither a wasm binary" in err and "nor WAT text" in err


def test_options_after_the_module_get_a_hint(tmp_path):
    _module(tmp_path)
    err = _error(sigprof_cli(tmp_path, "record", "-o", "x.json", "mine.wat", "--invoke", "leaf"))
    assert "put --invoke before mine.wat" in err


def test_sigterm_stops_the_guest_and_keeps_the_profile(tmp_path):
    _module(tmp_path)
    with running_cli("record", "-o", "t.sigprof", "--invoke", "spin", "--arg", "4000000000",
                     "mine.wat", cwd=tmp_path, env=cli_env(XDG_CACHE_HOME=str(tmp_path / "cache")),
                     stderr=subprocess.PIPE, text=True) as proc:
        wait_until_sampling(proc)        # its timer armed and ticks taken: samples to keep
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=LIVENESS_LIMIT_S)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM); the profile up to that point was kept" in err
    assert sigprof.load(tmp_path / "t.sigprof").samples > 0


def test_dash_writes_text_or_the_chosen_format_to_stdout(tmp_path):
    _module(tmp_path)
    args = ("--clock", "wall", "--interval", "1ms", "--invoke", "spin", "--arg", "300000000",
            "mine.wat")
    text = sigprof_cli(tmp_path, "record", "-o", "-", *args)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("sigprof report: mine.wat")
    folded = sigprof_cli(tmp_path, "record", "-o", "-", "--format", "collapsed", *args)
    assert any(line.startswith("mine.wat!spin ") for line in folded.stdout.splitlines())
    assert "wrote the standard output (collapsed stacks)" in folded.stderr
    named = sigprof_cli(tmp_path, "record", "-o", "out.html", "--format", "text", *args)
    assert named.returncode == 0 and "sigprof report" in (tmp_path / "out.html").read_text()
    assert "binary" in _error(sigprof_cli(tmp_path, "record", "-o", "-", "--format", "raw", *args))


def test_errors_name_the_users_path_never_a_temporary_file(tmp_path):
    _module(tmp_path)
    record = sigprof_cli(tmp_path, "record", "-o", tmp_path / "nowhere" / "x.json", "--invoke",
                         "leaf", "--arg", "1", "mine.wat")
    assert "nowhere/x.json" in _error(record) and ".tmp" not in record.stderr
    ok = sigprof_cli(tmp_path, "record", "-o", "r.sigprof", "--invoke", "leaf", "--arg", "1",
                     "mine.wat")
    assert ok.returncode == 0, ok.stderr
    convert = sigprof_cli(tmp_path, "convert", "r.sigprof", "-o", tmp_path / "nowhere" / "y.json")
    assert "nowhere/y.json" in _error(convert) and ".tmp" not in convert.stderr


def test_arguments_out_of_range_are_refused_not_wrapped(tmp_path):
    _module(tmp_path)
    err = _error(sigprof_cli(tmp_path, "record", "-o", "x.json", "--invoke", "leaf", "--arg",
                             "4294967296", "mine.wat"))
    assert "out of range for i32" in err
    top = sigprof_cli(tmp_path, "record", "-o", "x.json", "--invoke", "leaf", "--arg",
                      "4294967295", "mine.wat")          # u32 spelling of -1: accepted
    assert top.returncode == 0 and "returned 0" in top.stderr


def test_a_short_run_a_raised_interval_and_the_wall_clock_are_said_plainly(tmp_path):
    _module(tmp_path)
    short = sigprof_cli(tmp_path, "record", "-o", "x.json", "--interval", "250us",
                        "--source", "itimer", "--invoke", "leaf", "--arg", "1", "mine.wat")
    assert short.returncode == 0, short.stderr
    assert "warning: no samples: the run used less than one tick" in short.stderr
    assert "warning: interval raised from 0.25 ms to 4 ms" in short.stderr
    default = sigprof_cli(tmp_path, "record", "-o", "x.json", "--invoke", "spin", "--arg",
                          "100000000", "mine.wat")
    assert "interval raised" not in default.stderr              # the default asks no more
    wall = sigprof_cli(tmp_path, "record", "-o", "x.json", "--clock", "wall", "--invoke",
                       "spin", "--arg", "100000000", "mine.wat")
    assert "ms wall time sampled, clock wall" in wall.stderr and "CPU" not in wall.stderr


def test_a_trap_names_the_guest_function(tmp_path):
    _module(tmp_path)
    trap = sigprof_cli(tmp_path, "record", "-o", "x.json", "--invoke", "leaf", "--arg", "0",
                       "mine.wat")
    assert trap.returncode == 134
    assert "sigprof: guest trapped in leaf: wasm trap: integer divide by zero" in trap.stderr


def test_help_shows_defaults_and_a_recording_prints_briefly(tmp_path):
    helptext = sigprof_cli(tmp_path, "record", "--help").stdout
    assert "(default: cpu)" in helptext and "(default: 20000)" in helptext
    assert "(default: None)" not in helptext and "(default: [])" not in helptext
    _module(tmp_path)
    assert sigprof_cli(tmp_path, "record", "-o", "r.sigprof", "--invoke", "spin", "--arg",
                       "50000000", "mine.wat").returncode == 0
    text = repr(sigprof.load(tmp_path / "r.sigprof"))
    assert text.startswith("<Recording mine.wat: ") and "array(" not in text and len(text) < 200
