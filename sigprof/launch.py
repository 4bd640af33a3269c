"""``sigprof run``: an unmodified Python program run in this process under a
store-less profile of every thread.

    sigprof run app.py ARGS...          the script as __main__ (runpy.run_path)
    sigprof run -m package ARGS...      like python -m (runpy.run_module, alter_sys)
    sigprof run console-script ARGS...  a Python script found on PATH (its shebang
                                        names a python), run as a script

The program sees its own ``sys.argv``, stdin, stdout and stderr; what it ends
with becomes the exit status: 0 at its end, ``sys.exit``'s code, 1 after an
uncaught exception (its traceback printed as python prints it), 130 for SIGINT
and 143 for SIGTERM -- also when the signal came during a finalizer, where
Python would drop its exception (``_redeliver_lost_stops``).  The profile is
stopped in each of those cases, so the caller writes it.  ``os._exit`` ends the
process at once: that profile is lost.
"""

from __future__ import annotations

import _thread
import os
import runpy
import shutil
import signal
import sys
import sysconfig
import traceback
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from .defaults import INTERRUPT_EXIT_CODE

TERMINATED_EXIT_CODE = 128 + signal.SIGTERM


class LaunchError(ValueError):
    """The program could not be found or is not Python (one line for the CLI)."""


@dataclass
class Program:
    """What to run: a script file or a module, and the ``sys.argv`` it sees."""
    kind: str               # "script" or "module"
    target: str             # the script's path, or the module's name
    argv: List[str]


def _is_python_script(path: str) -> bool:
    """A file whose first line is a shebang naming a python interpreter."""
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def find_program(target: str, args: Sequence[str], module: bool = False) -> Program:
    """The program ``target`` names: a module (``-m``), a file, or a command on PATH or
    among this interpreter's own scripts (a venv's console scripts, not activated)."""
    if module:
        return Program("module", target, [target, *args])
    if os.path.isfile(target):
        return Program("script", target, [target, *args])
    if os.sep not in target:
        found = shutil.which(target) or shutil.which(target, path=sysconfig.get_path("scripts"))
        if found is not None:
            if not _is_python_script(found):
                raise LaunchError(f"{found} is not a Python script (its first line names no "
                                  f"python); sigprof run profiles Python programs in-process")
            return Program("script", found, [found, *args])
    raise LaunchError(f"{target}: no such file, and no command of that name on PATH "
                      f"or among this Python's scripts")


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds the program like KeyboardInterrupt, so its
    ``finally`` blocks run and the profile is kept."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def _stop_signal_of(exc: Optional[BaseException]) -> Optional[signal.Signals]:
    """The signal whose exception ``exc`` is, if it is one of the two that end the program."""
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(exc, _Terminated):
        return signal.SIGTERM
    return None


def _redeliver_lost_stops(previous: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A ``sys.unraisablehook`` that gives a stop signal back when its exception was
    swallowed.  Python runs a signal's handler wherever the main thread is, and when
    that is a finalizer (wasmtime-py's ``__del__`` methods run all the time) the
    KeyboardInterrupt it raises is printed as "Exception ignored" and dropped: the
    program would run on, unstoppable by that signal.  So it is delivered again from
    a new thread, which runs once this hook has returned and the main thread gives up
    the GIL (``_thread``'s start does not wait for it, as ``threading``'s does): the
    handler then runs at the main thread's next bytecode, past the finalizer (or in
    another, and this goes round again)."""
    def sigprof_unraisable(unraisable: Any) -> None:
        signum = _stop_signal_of(unraisable.exc_value)
        if signum is None:
            previous(unraisable)
        else:
            _thread.start_new_thread(_thread.interrupt_main, (signum,))
    return sigprof_unraisable


def _exit_code(code: object) -> int:
    """``sys.exit(code)`` as python turns it into a status (a message: printed, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run_program(program: Program, profiling: Callable[[], Any]) -> int:
    """Run ``program`` inside the context manager ``profiling()`` returns; its exit status."""
    saved_argv, saved_path0 = sys.argv, sys.path[0] if sys.path else None
    previous_term = signal.getsignal(signal.SIGTERM)
    if previous_term is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _on_sigterm)
    previous_unraisable = sys.unraisablehook
    sys.unraisablehook = _redeliver_lost_stops(previous_unraisable)
    sys.argv = list(program.argv)
    if sys.path:      # what python puts first: the script's directory, or the cwd for -m
        sys.path[0] = (os.path.dirname(os.path.abspath(program.target))
                       if program.kind == "script" else os.getcwd())
    try:
        with profiling():
            return _run(program)
    finally:
        sys.unraisablehook = previous_unraisable
        if previous_term is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, previous_term)
        sys.argv = saved_argv
        if saved_path0 is not None and sys.path:
            sys.path[0] = saved_path0
        _flush_program_streams()


def _run(program: Program) -> int:
    try:
        if program.kind == "module":
            runpy.run_module(program.target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(program.target, run_name="__main__")
    except SystemExit as exc:
        return _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        return INTERRUPT_EXIT_CODE
    except _Terminated:
        return TERMINATED_EXIT_CODE
    except BaseException:
        # As python prints it: the program's frames, not runpy's or ours.
        kind, value, tb = sys.exc_info()
        while tb is not None and _ours(tb.tb_frame.f_code.co_filename):
            tb = tb.tb_next
        if value is not None:
            value.__traceback__ = tb        # what excepthook prints from
        sys.excepthook(kind, value, tb)     # type: ignore[arg-type]
        return 1
    return 0


def _ours(filename: str) -> bool:
    """A frame of this module or of runpy (a file, or frozen into the interpreter)."""
    return filename in (__file__, runpy.__file__) or filename == "<frozen runpy>"


def _flush_program_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):     # closed by the program, or a broken pipe
            pass


def program_name(program: Program) -> Optional[str]:
    """How the profile names the run: the script's file name, or the module."""
    return os.path.basename(program.target) if program.kind == "script" else program.target
