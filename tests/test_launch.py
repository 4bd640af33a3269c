"""`sigprof run`: a script, a module and a console script run unmodified in-process
under a store-less profile (argv, stdin/stdout, exit codes, signals)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import (GUESTS, LIVENESS_LIMIT_S, cli_env, run_cli, running_cli,
                      wait_until_sampling)

# A program that made its engine itself and runs the recursion guest; argv[1]
# says how it ends: a number (sys.exit), "raise", or "forever" (until a signal).
# The recursion guest's `rec`, ready to call.
GUEST_PRELUDE = textwrap.dedent(f"""\
    import sys
    import sigprof, wasmtime
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, {str(GUESTS / "recursion.wat")!r})
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)
    rec = wasmtime.Instance(store, module, []).exports(store)["rec"]
    """)

APP = GUEST_PRELUDE + textwrap.dedent("""\
    line = sys.stdin.readline().strip()
    print("argv", sys.argv[1:], "name", __name__, "stdin", line, flush=True)
    how = sys.argv[1] if len(sys.argv) > 1 else "0"
    while True:
        rec(store, 5, 20_000_000)
        if how != "forever":
            break
    if how == "raise":
        raise ValueError("the program's own error")
    sys.exit(int(how))
    """)


def _run(*args, cwd, stdin_text, env=None):
    """``run_cli`` with ``stdin_text`` on the program's standard input."""
    feed = cwd / "stdin.txt"
    feed.write_text(stdin_text)
    with open(feed) as stdin:
        return run_cli(*args, cwd=cwd, env=env, stdin=stdin)


def _functions(path):
    """The function names a Firefox profile holds."""
    profile = json.loads(open(path).read())
    return set(profile.get("shared", {}).get("stringArray", [])).union(
        *(thread.get("stringArray", []) for thread in profile["threads"]))


def test_script_sees_its_argv_stdin_stdout_and_exit_code(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    out = tmp_path / "p.json"
    proc = _run("run", "-o", str(out), "app.py", "3", "--flag", cwd=tmp_path, stdin_text="hello\n")
    assert proc.returncode == 3, proc.stderr
    assert "argv ['3', '--flag'] name __main__ stdin hello" in proc.stdout
    assert out.exists() and "leaf" in " ".join(_functions(out))


def test_uncaught_exception_prints_the_programs_traceback_and_exits_1(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    out = tmp_path / "p.txt"
    proc = _run("run", "-o", str(out), "app.py", "raise", cwd=tmp_path, stdin_text="\n")
    assert proc.returncode == 1, proc.stderr
    traceback = proc.stderr.split("Traceback (most recent call last):\n", 1)[1]
    assert traceback.startswith('  File "') and "app.py" in traceback.splitlines()[0]
    assert "runpy" not in traceback and "launch.py" not in traceback
    assert "ValueError: the program's own error" in traceback
    assert out.exists()


def test_module_runs_like_python_m(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(APP)
    out = tmp_path / "p.json"
    proc = _run("run", "-o", str(out), "-m", "pkg", "5", cwd=tmp_path, stdin_text="in\n")
    assert proc.returncode == 5, proc.stderr
    assert "argv ['5'] name __main__ stdin in" in proc.stdout
    assert out.exists()


def test_console_script_found_on_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "my-tool"
    script.write_text(f"#!{sys.executable}\n" + APP)
    script.chmod(0o755)
    env = cli_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "p.json"
    proc = _run("run", "-o", str(out), "my-tool", "0", cwd=tmp_path, env=env, stdin_text="x\n")
    assert proc.returncode == 0, proc.stderr
    assert "argv ['0'] name __main__ stdin x" in proc.stdout
    assert out.exists()


def test_a_command_that_is_not_python_is_refused_in_one_line(tmp_path):
    proc = run_cli("run", "ls", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "is not a Python script" in proc.stderr


# A finalizer that runs until a signal's exception ends it: Python prints such an
# exception as "Exception ignored" and drops it, and the program would run on.
IN_FINALIZER_APP = GUEST_PRELUDE + textwrap.dedent("""\
    rec(store, 5, 20_000_000)

    class Finalized:
        def __del__(self):
            print("in the finalizer", flush=True)
            while True:
                pass
    Finalized()
    while True:
        rec(store, 5, 1_000_000)
    """)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_finalizer_still_stops_the_program(tmp_path, signum):
    (tmp_path / "app.py").write_text(IN_FINALIZER_APP)
    out = tmp_path / "p.json"
    with running_cli("run", "-o", str(out), "app.py", cwd=tmp_path, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout.readline() == "in the finalizer\n"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=LIVENESS_LIMIT_S)
        assert proc.returncode == 128 + signum, err
    assert "Exception ignored" not in err, err
    assert out.exists() and "leaf" in " ".join(_functions(out))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_keeps_the_profile(tmp_path, signum):
    (tmp_path / "app.py").write_text(APP)
    out = tmp_path / "p.json"
    with running_cli("run", "-o", str(out), "app.py", "forever", cwd=tmp_path,
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True) as proc:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("argv")
        wait_until_sampling(proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum, err
    assert out.exists() and "leaf" in " ".join(_functions(out))
