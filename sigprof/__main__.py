"""The ``sigprof`` command line: argument parsing and wiring only.

    sigprof record [-o OUT] [--clock cpu|prof|wall] [--interval 1ms] [--source auto|perf|itimer]
                   [--capacity N]
                   [--invoke NAME [--arg VALUE]...] [--dir HOST::GUEST]... [--env KEY=VALUE]...
                   MODULE.wasm|MODULE.wat [ARGS...]
    sigprof run [OPTIONS] (SCRIPT.py | -m MODULE | COMMAND) [ARGS...]
    sigprof run (--serve HOST:PORT | --continuous DIR [--period S] [--keep N]) ... PROGRAM
    sigprof convert IN.sigprof|IN.json[.gz] -o OUT [--format firefox|raw|collapsed|text|svg|pprof]
    sigprof report IN.sigprof|IN.json[.gz] [--top N]
    sigprof view [--svg] IN.sigprof|IN.json[.gz]
    sigprof diff BEFORE AFTER [-o DIFF.svg] [--top N]

A ``.json`` profile sigprof wrote reads back wherever a ``.sigprof`` does.

Every error is one line on stderr and a non-zero exit (2 for bad input), never
a traceback (set SIGPROF_DEBUG=1 to see one) and never a half-written file.
"""

from __future__ import annotations

import sys

try:    # Ctrl-C while Python loads wasmtime and the rest: one line, not a traceback
    import argparse
    import os
    import re
    import signal
    import warnings
    from typing import TYPE_CHECKING, Any, Dict, List, NoReturn, Optional, Sequence, Set, Tuple

    from . import __version__
    from .defaults import CONTINUOUS_MAX_FILES, CONTINUOUS_PERIOD_S, DEFAULT_CAPACITY, \
        DEFAULT_MAX_DEPTH, INTERRUPT_EXIT_CODE, STUB_MODES, WASMTIME_REQUIREMENT
    from .export import FORMATS, UnknownFormat, exporter, exporter_for_path, write
    from .rawfile import RecordingFormatError
    from .recording import Recording
    if TYPE_CHECKING:
        from .runner import RunResult
except KeyboardInterrupt:
    sys.stderr.write("sigprof: interrupted\n")
    raise SystemExit(130) from None     # defaults.INTERRUPT_EXIT_CODE (not importable yet)

EXIT_BAD_INPUT = 2
RECORD_OPTIONS: Set[str] = set()      # filled as the parser is built


class CliError(Exception):
    pass


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help, for the options that have one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        # A flag's default (True for --no-cache) says nothing its help does not.
        if (action.default in (None, []) or isinstance(action.default, bool)
                or action.default is argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


# A value that starts with '-' but names no option: -1ms, -0.5, -inf.
_NEGATIVE_LOOKING = re.compile(r"^-(\d|\.\d|inf\b|nan\b)", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    def _parse_optional(self, arg_string: str) -> Any:
        # argparse takes `--interval -1ms` for two options ("expected one argument");
        # taken as the value, it is refused with the reason (it is not positive).
        if _NEGATIVE_LOOKING.match(arg_string):
            return None
        return super()._parse_optional(arg_string)

    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage dump
        raise CliError(f"{message} (see `sigprof {self.prog.split()[-1]} --help`)"
                       if " " in self.prog else f"{message} (see `sigprof --help`)")


def _positive_int(text: str) -> int:
    """An argparse type: a count that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sigprof", description="CPU-time sampling profiler for WebAssembly guests "
                                            "run by wasmtime")
    p.add_argument("--version", action="version", version=f"sigprof {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    defaults = _ShowDefaults

    # The options of a recording and its outputs: record and run share them.
    out = _Parser(add_help=False)
    out.add_argument("-o", "--output", action="append", default=[],
                     help="output file; its suffix picks the format: .json/.json.gz (Firefox "
                          "Profiler), .sigprof (raw), .collapsed/.folded (collapsed stacks, "
                          "weights in µs), .txt, .svg (flame graph), .pb.gz/.pprof; - "
                          "for the standard "
                          "output (text, or --format); repeat to write the same recording in "
                          "several formats; when none is given: sigprof.json")
    out.add_argument("--format", choices=FORMATS,
                     help="the format of every output, whatever its name")
    out.add_argument("--clock", choices=("cpu", "prof", "wall"), default="cpu",
                     help="cpu: user CPU time (ITIMER_VIRTUAL); prof: user+system; wall: "
                          "wall-clock time")
    out.add_argument("--interval",
                     help="time between samples: 250us, 1ms, 0.004 (seconds); when not given, "
                          "1 ms, or one kernel tick (4 ms at HZ=250) for the CPU clocks, whose "
                          "interval timer cannot tick faster (a finer one uses perf events: "
                          "see --source)")
    out.add_argument("--source", choices=("auto", "perf", "itimer"), default="auto",
                     help="what makes CPU-time ticks: auto uses the interval timer at the "
                          "kernel tick and above and perf events (per-thread task clocks) for "
                          "a finer --interval, falling back to the timer where perf events "
                          "are refused; perf or itimer insists on one")
    out.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY,
                     help="samples the ring buffer holds")
    out.add_argument("--max-depth", type=int, default=DEFAULT_MAX_DEPTH,
                     help="guest frames walked per sample")
    out.add_argument("--when-full", choices=("newest", "stop"), default="newest",
                     help="ring full: keep the newest samples or stop recording")
    out.add_argument("--host-details", action="store_true",
                     help="include host name, pid/tid and full paths (for private use)")
    out.add_argument("--top", type=_positive_int, default=5,
                     help="functions listed in the summary")

    rec = sub.add_parser("record", help="run a module under the profiler and write a profile",
                         formatter_class=defaults, parents=[out])
    rec.add_argument("--invoke", metavar="NAME",
                     help="call this exported function instead of the WASI _start")
    rec.add_argument("--arg", action="append", default=[], metavar="VALUE",
                     help="an argument for --invoke (repeat for each parameter)")
    rec.add_argument("--dir", action="append", default=[], metavar="HOST::GUEST",
                     help="preopen directory HOST as GUEST for the WASI program (repeatable)")
    rec.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                     help="set an environment variable for the WASI program (repeatable)")
    rec.add_argument("--name", help="module name shown in the profile; when not given, the "
                                     "file's name")
    rec.add_argument("--names", metavar="NAMED.wasm",
                     help="take function names from this build of the same module (a stripped "
                          "release build's debug twin, say)")
    rec.add_argument("--stub-imports", choices=STUB_MODES,
                     help="stand in for imports WASI does not provide: trap (a call fails, "
                          "naming the import) or zero (a call returns zeros)")
    rec.add_argument("--no-cache", dest="cache", action="store_false",
                     help="compile without wasmtime's compile cache (~/.cache/wasmtime)")
    rec.add_argument("--max-wasm-stack", type=int, metavar="BYTES",
                     help="the guest's stack limit (default: wasmtime's)")
    RECORD_OPTIONS.update(o for action in rec._actions for o in action.option_strings)
    rec.add_argument("module", metavar="MODULE.wasm|MODULE.wat")
    rec.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                     help="arguments passed to the WASI program (everything after MODULE goes "
                          "to the program, as with `wasmtime run`: put sigprof's options first)")

    run = sub.add_parser("run", help="run a Python program (a script, -m MODULE, or a console "
                                     "script on PATH) under a profile of every store it "
                                     "enters", formatter_class=defaults, parents=[out])
    run.add_argument("-m", dest="run_module", metavar="MODULE",
                     help="run a module as python -m does (what follows is its arguments)")
    run.add_argument("--serve", metavar="HOST:PORT",
                     help="instead of one profile of the whole run: serve Go's "
                          "/debug/pprof/profile?seconds=N on HOST:PORT while the program runs "
                          "(port 0: a free one; the address is printed)")
    run.add_argument("--allow-remote", action="store_true",
                     help="let --serve listen on an address that is not loopback")
    run.add_argument("--continuous", metavar="DIR",
                     help="instead of one profile of the whole run: write one every --period "
                          "into DIR (--format, default pprof), keeping the newest --keep")
    run.add_argument("--period", type=float,
                     help=f"seconds each --continuous profile covers (default: "
                          f"{CONTINUOUS_PERIOD_S:g})")
    run.add_argument("--keep", type=_positive_int,
                     help=f"profiles --continuous keeps in DIR, the oldest deleted (default: "
                          f"{CONTINUOUS_MAX_FILES})")
    run.add_argument("program", nargs=argparse.REMAINDER,
                     metavar="SCRIPT.py|COMMAND [ARGS]",
                     help="the script or command and its arguments (put sigprof's options "
                          "first: everything after it goes to the program)")

    conv = sub.add_parser("convert", help="convert a recording to another format",
                          formatter_class=defaults)
    conv.add_argument("input", metavar="IN.sigprof|IN.json[.gz]")
    conv.add_argument("-o", "--output", required=True,
                      help="output file (its suffix picks the format, as for record: "
                           ".collapsed/.folded weights are µs), or - for the standard output")
    conv.add_argument("--format", choices=FORMATS,
                      help="output format (default: from the output file's suffix)")

    view = sub.add_parser("view", help="open a profile in the Firefox Profiler (or --svg: its "
                                       "flame graph), served from this machine",
                          formatter_class=defaults)
    view.add_argument("input", metavar="IN.sigprof|IN.json[.gz]")
    view.add_argument("--svg", action="store_true",
                      help="open the flame graph instead")
    view.add_argument("--no-browser", dest="browser", action="store_false",
                      help="only print the address to open")
    view.add_argument("--source-dir", action="append", default=[], metavar="DIR",
                      help="serve the profile's source files found in DIR to the profiler's "
                           "source view (repeatable; nothing outside these is served)")

    dif = sub.add_parser("diff", help="what changed between two profiles: self shares, and "
                                      "with -o a differential flame graph",
                         formatter_class=defaults)
    dif.add_argument("before", metavar="BEFORE.sigprof|BEFORE.json[.gz]")
    dif.add_argument("after", metavar="AFTER.sigprof|AFTER.json[.gz]")
    dif.add_argument("-o", "--output", metavar="DIFF.svg",
                     help="also draw the differential flame graph (AFTER's widths; red: a "
                          "path's share grew, blue: it shrank)")
    dif.add_argument("--top", type=_positive_int, default=10,
                     help="functions listed (largest change in self share first)")

    rep = sub.add_parser("report", help="print the top functions and the hottest path",
                         formatter_class=defaults)
    rep.add_argument("input", metavar="IN.sigprof|IN.json[.gz]")
    rep.add_argument("--top", type=_positive_int, default=10, help="functions (or lines) listed")
    rep.add_argument("--lines", action="store_true",
                     help="the hottest source lines (FILE:LINE) by self time instead, where the "
                          "module's DWARF was known")

    ann = sub.add_parser("annotate", help="print a source file with each line's self and total "
                                          "share (pprof -list), where the module's DWARF was "
                                          "known", formatter_class=defaults)
    ann.add_argument("input", metavar="IN.sigprof|IN.json[.gz]")
    ann.add_argument("source", metavar="SOURCE_FILE",
                     help="the source file, as the recording names it (a base name unless "
                          "recorded with --host-details) or a path to it")
    ann.add_argument("--source-dir", metavar="DIR",
                     help="where the source files are (else SOURCE_FILE is read as given)")
    return p


def _pairs(values: Sequence[str], sep: str, option: str,
           example: str) -> List[Tuple[str, str]]:
    out = []
    for value in values:
        if sep not in value:
            raise CliError(f"{option} {value!r}: expected {example}")
        left, right = value.split(sep, 1)
        if not left:
            raise CliError(f"{option} {value!r}: expected {example}")
        out.append((left, right))
    return out


def _positive(value: Optional[int], option: str) -> Optional[int]:
    if value is not None and value < 1:
        raise CliError(f"{option} must be a positive integer, not {value}")
    return value


STDOUT = "-"
# What stops a recording, the exit status it gets (128 + the signal's number, as a
# shell reports a process the signal killed) and how the summary names it.
STOP_SIGNALS: Dict[int, Tuple[int, str]] = {
    signal.SIGINT: (INTERRUPT_EXIT_CODE, "interrupted (Ctrl-C)"),
    signal.SIGTERM: (128 + signal.SIGTERM, "terminated (SIGTERM)"),
    signal.SIGHUP: (128 + signal.SIGHUP, "hung up (SIGHUP)"),
}
COMPILE_NOTE_ENV = "SIGPROF_COMPILE_NOTE_AFTER_S"   # tests: announce compiles sooner


class StopSignals:
    """record's handling of SIGINT, SIGTERM and SIGHUP (each left alone if ignored, as
    under nohup).  Until the guest has stopped, a signal stops it the way Ctrl-C does
    (KeyboardInterrupt), so the profile up to then is kept; after, it is only noted, so
    the profile is still written.  The exit status is the first signal's."""

    def __init__(self) -> None:
        self.received: List[int] = []
        self.raising = True
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is not signal.SIG_IGN:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if self.raising:
            raise KeyboardInterrupt

    def stop_raising(self) -> None:
        """The guest has stopped: from now on a signal must not cost the profile."""
        self.raising = False

    def first(self) -> Tuple[int, str]:
        """Exit status and name of what stopped the run (Ctrl-C if no signal was seen)."""
        return STOP_SIGNALS[self.received[0] if self.received else signal.SIGINT]


def _say(line: str) -> None:
    print(f"sigprof: {line}", file=sys.stderr, flush=True)


def _compile_note_after_s() -> float:
    text = os.environ.get(COMPILE_NOTE_ENV)
    if text is None:
        from .runner import COMPILE_NOTE_AFTER_S
        return COMPILE_NOTE_AFTER_S
    try:
        return max(0.0, float(text))
    except ValueError:
        raise CliError(f"{COMPILE_NOTE_ENV}={text!r}: expected a number of seconds") from None


def _output_formats(outputs: Sequence[str], fmt: Optional[str]) -> List[str]:
    formats = []
    for path in outputs:
        try:
            chosen = fmt or ("text" if path == STDOUT else exporter_for_path(path).name)
        except UnknownFormat as exc:
            raise CliError(f"{exc} with --format") from None
        if path == STDOUT and chosen == "raw":
            raise CliError("a raw recording is binary: write it to a file, not to -")
        formats.append(chosen)
    return formats


def _write_output(rec: Recording, path: str, fmt: str) -> None:
    if path == STDOUT:
        sys.stdout.buffer.write(exporter(fmt).render(rec, ""))
        sys.stdout.flush()
    else:
        write(rec, path, fmt)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shown(path: str) -> str:
    """An output path as the messages name it."""
    return "the standard output" if path == STDOUT else os.path.abspath(path)


def _misplaced_options(args: Sequence[str]) -> List[str]:
    """Which of the program's arguments are spelled like record's own options."""
    return [arg for arg in args if arg.split("=", 1)[0] in RECORD_OPTIONS]


def cmd_record(a: argparse.Namespace) -> int:
    # Only record needs the capture layer (and so wasmtime).
    try:
        from . import runner
        from .profiler import ProfileWarning
        from ._wasmtime import UnsupportedWasmtime, check_supported
    except ImportError as exc:
        raise CliError(f"record needs wasmtime-py ({exc}): pip install '{WASMTIME_REQUIREMENT}'") \
            from None
    try:
        check_supported()
    except UnsupportedWasmtime as exc:
        raise CliError(str(exc)) from None
    warnings.simplefilter("ignore", ProfileWarning)    # the summary lists the profile's warnings
    try:
        with StopSignals() as stops:
            return _record(a, stops)
    except runner.RunError as exc:
        raise CliError(str(exc)) from None


def _recording_options(a: argparse.Namespace) -> Tuple[List[str], List[str], Dict[str, Any]]:
    """The shared options of record and run, checked: the outputs, their formats, and
    the profile's keyword arguments."""
    outputs = a.output or ["sigprof.json"]
    formats = _output_formats(outputs, a.format)
    for path in outputs:
        parent = os.path.dirname(os.path.abspath(path))
        if path != STDOUT and not os.path.isdir(parent):
            raise CliError(f"{path}: directory {parent} does not exist")
    return outputs, formats, _profile_options(a)


def _profile_options(a: argparse.Namespace) -> Dict[str, Any]:
    """The profile's keyword arguments from the shared options, checked."""
    from . import runner
    interval = runner.parse_interval(a.interval) if a.interval is not None else None
    if a.source == "perf" and a.clock == "wall":
        raise CliError("--source perf samples CPU time: use it with --clock cpu or prof")
    return {"interval": interval, "clock": a.clock, "when_full": a.when_full,
            "source": a.source, "host_details": a.host_details,
            "capacity": _positive(a.capacity, "--capacity"),
            "max_depth": _positive(a.max_depth, "--max-depth")}


def _record(a: argparse.Namespace, stops: StopSignals) -> int:
    from . import runner
    outputs, formats, options = _recording_options(a)
    if a.invoke is None and a.arg:
        raise CliError("--arg needs --invoke NAME")
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    try:
        result = runner.run(a.module, args, invoke=a.invoke, invoke_args=a.arg,
                            dirs=_pairs(a.dir, "::", "--dir", "HOST::GUEST"),
                            env=_pairs(a.env, "=", "--env", "KEY=VALUE"), name=a.name,
                            names=a.names, stub_imports=a.stub_imports, cache=a.cache,
                            max_wasm_stack=_positive(a.max_wasm_stack, "--max-wasm-stack"),
                            say=_say, compile_note_after_s=_compile_note_after_s(),
                            when_stopped=stops.stop_raising, **options)
    except KeyboardInterrupt:            # while reading, compiling or linking: no profile yet
        exit_code, why = stops.first()
        print(f"sigprof: {why} before the guest ran; nothing was recorded", file=sys.stderr)
        return exit_code
    except runner.StoppedBeforeRecording as exc:
        print(f"sigprof: {exc}", file=sys.stderr)
        return exc.exit_code
    except runner.RunError as exc:
        misplaced = _misplaced_options(args)
        if misplaced:
            raise CliError(f"{exc} (what follows the module goes to the program: put "
                           f"{' '.join(misplaced)} before {a.module})") from None
        raise
    stops.stop_raising()
    stopped_by_signal = bool(stops.received)
    if stopped_by_signal and result.outcome == "interrupted":
        result.exit_code, result.message = stops.first()
    rec = result.recording
    written, failures = _write_outputs(rec, outputs, formats)
    if written:
        _summary(rec, written, a.top, result)
    if failures:
        _report_failures(rec, written, failures)
        return EXIT_BAD_INPUT
    if stops.received and not stopped_by_signal:      # it came while the profile was saved
        exit_code, why = stops.first()
        print(f"sigprof: {why} after the guest had stopped; the profile was still written",
              file=sys.stderr)
        return exit_code
    return result.exit_code


def _write_outputs(rec: Recording, outputs: Sequence[str],
                   formats: Sequence[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """Write every output, whichever fail: the (path, format) written, and one line
    per output that failed, saying why."""
    written, failures = [], []
    for path, fmt in zip(outputs, formats):
        try:
            _write_output(rec, path, fmt)
        except OSError as exc:
            failures.append(f"{path if path != STDOUT else _shown(path)}: {exc.strerror or exc}")
        else:
            written.append((path, fmt))
    return written, failures


def _report_failures(rec: Recording, written: List[Tuple[str, str]],
                     failures: List[str]) -> None:
    """Each failed output on its own line; the run cannot be repeated, so the last
    line says where its recording is (a rescue copy, if no raw output was written)."""
    raw_output = next((path for path, fmt in written if fmt == "raw"), None)
    if raw_output is not None:
        kept = f"the recording is in {raw_output}"
    else:
        rescue = _rescue(rec)
        kept = (f"the recording was saved to {rescue} (convert it with `sigprof convert`)"
                if rescue else "no directory could take a copy of the recording")
    failures = failures[:-1] + [f"{failures[-1]}; {kept}"]
    for line in failures:
        print(f"sigprof: error: {line}", file=sys.stderr)


def _rescue(rec: Recording) -> Optional[str]:
    import tempfile
    for directory in (os.getcwd(), tempfile.gettempdir()):
        path = os.path.join(directory, f"sigprof-rescue-{os.getpid()}.sigprof")
        try:
            write(rec, path, "raw")
            return path
        except OSError:
            continue
    return None


def _summary(rec: Recording, written: List[Tuple[str, str]], top: int,
             result: "RunResult") -> None:
    err = sys.stderr
    if result.outcome == "trap":
        print(f"sigprof: guest trapped{result.message}", file=err)
    elif result.outcome == "exit" and result.exit_code:
        print(f"sigprof: guest exited with code {result.exit_code}", file=err)
    elif result.outcome == "interrupted":
        print(f"sigprof: {result.message}; the profile up to that point was kept", file=err)
    if result.results:
        print(f"sigprof: {result.recording.meta.get('name')} returned "
              f"{', '.join(map(str, result.results))}", file=err)
    _profile_summary(rec, written, top)


def _profile_summary(rec: Recording, written: List[Tuple[str, str]], top: int) -> None:
    """What was written, the profile's warnings, its sample count and top functions."""
    from .analysis import summarise_recording
    err = sys.stderr
    sampled_ms = sum(rec.weights_ns()) / 1e6
    for path, fmt in written:
        print(f"sigprof: wrote {_shown(path)} ({exporter(fmt).description})", file=err)
    for warning in rec.meta.get("warnings", []):
        print(f"sigprof: warning: {warning}", file=err)
    what = "wall time" if rec.clock == "wall" else "CPU"
    source = {"perf": " (perf events)", "itimer": " (interval timer)"}.get(
        str(rec.meta.get("tick_source")), "")
    print(f"sigprof: {_count(rec.samples, 'sample')}, {sampled_ms:.1f} ms {what} sampled, "
          f"clock {rec.clock}"
          + source
          + (f", {rec.dropped} dropped" if rec.dropped else "")
          + (f", {rec.truncated} truncated" if rec.truncated else ""), file=err)
    summary = summarise_recording(rec)
    if summary.total_weight and top > 0:
        print("sigprof: top functions by self time:", file=err)
        for f in summary.top_self(top):
            if f.self_weight <= 0:
                break
            print(f"  {summary.share(f.self_weight):5.1f}%  {f.function.label('summary')}", file=err)


def cmd_run(a: argparse.Namespace) -> int:
    from . import launch
    program_args = list(a.program)
    if a.run_module is None:
        if program_args[:1] == ["--"]:
            program_args = program_args[1:]
        if not program_args:
            raise CliError("run needs a program: SCRIPT.py, -m MODULE or COMMAND "
                           "(see `sigprof run --help`)")
        target, program_args = program_args[0], program_args[1:]
    else:
        target = a.run_module
    try:
        program = launch.find_program(target, program_args, module=a.run_module is not None)
    except launch.LaunchError as exc:
        raise CliError(str(exc)) from None
    try:
        import sigprof
        from .profiler import ProfileWarning
    except ModuleNotFoundError as exc:
        raise CliError(f"run needs wasmtime-py ({exc}): pip install '{WASMTIME_REQUIREMENT}'") \
            from None
    except ImportError as exc:
        raise CliError(str(exc)) from None
    serving, continuous = a.serve is not None, a.continuous is not None
    for given, option, needs, present in (
            (a.allow_remote, "--allow-remote", "--serve", serving),
            (a.period is not None, "--period", "--continuous", continuous),
            (a.keep is not None, "--keep", "--continuous", continuous)):
        if given and not present:
            raise CliError(f"{option} is for {needs}")
    if serving or continuous:
        return _run_in_the_background(a, program)
    outputs, formats, options = _recording_options(a)
    warnings.simplefilter("ignore", ProfileWarning)
    sigprof.instrument()        # before the program makes its engines
    profiler = sigprof.profile(name=launch.program_name(program), **options)
    exit_code = launch.run_program(program, lambda: profiler)
    rec = profiler.recording
    if rec is None:                 # the profile could not start: the program did not run
        return exit_code
    with StopSignals() as stops:    # from here a signal must not cost the profile
        stops.stop_raising()
        written, failures = _write_outputs(rec, outputs, formats)
    if written:
        _profile_summary(rec, written, a.top)
    if failures:
        _report_failures(rec, written, failures)
        return EXIT_BAD_INPUT
    return exit_code


def _run_in_the_background(a: argparse.Namespace, program: Any) -> int:
    """``run --serve`` / ``--continuous``: the program runs with profiles taken on a
    thread of sigprof's, on request or one per period, instead of one of the whole run
    (each is the process's one store-less profile, so the two exclude each other and
    ``-o``)."""
    import sigprof
    from . import launch
    from .profiler import ProfileWarning
    if a.serve is not None and a.continuous is not None:
        raise CliError("--serve and --continuous each need the process's one store-less "
                       "profile: choose one")
    if a.output:
        raise CliError(f"-o writes one profile of the whole run; --"
                       f"{'serve' if a.serve is not None else 'continuous'} takes its profiles "
                       f"another way: drop -o")
    if a.format is not None and a.serve is not None:
        raise CliError("--serve answers in pprof, the format scrapers read: drop --format")
    period_s = a.period if a.period is not None else CONTINUOUS_PERIOD_S
    keep = a.keep if a.keep is not None else CONTINUOUS_MAX_FILES
    options = _profile_options(a)
    warnings.simplefilter("ignore", ProfileWarning)
    sigprof.instrument()
    background: Any
    try:
        if a.serve is not None:
            background = sigprof.serve(a.serve, allow_remote=a.allow_remote, **options)
            print(f"sigprof: serving {background.url} while the program runs", file=sys.stderr)
        else:
            background = sigprof.continuous(a.continuous, period_s=period_s, max_files=keep,
                                            format=a.format or "pprof", **options)
            print(f"sigprof: writing a profile every {period_s:g} s into {a.continuous}",
                  file=sys.stderr)
    except (ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{a.serve or a.continuous}: {exc.strerror or exc}") from None
    exit_code = launch.run_program(program, lambda: background)
    if a.continuous is not None:
        written = len(background.written)
        print(f"sigprof: wrote {_count(written, 'profile')} into {a.continuous}"
              + (f" (the newest {keep} kept)" if written > keep else ""), file=sys.stderr)
    return exit_code


def cmd_convert(a: argparse.Namespace) -> int:
    from . import rawfile
    fmt, = _output_formats([a.output], a.format)
    rec = rawfile.load(a.input)
    _write_output(rec, a.output, fmt)
    print(f"sigprof: wrote {_shown(a.output)} ({fmt}, {_count(rec.samples, 'sample')})",
          file=sys.stderr)
    warnings = rec.meta.get("warnings") or []
    if fmt == "collapsed" and warnings:
        print(f"sigprof: note: collapsed stacks cannot carry the recording's "
              f"{len(warnings)} warning(s):", file=sys.stderr)
        for warning in warnings:
            print(f"sigprof: warning: {warning}", file=sys.stderr)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from . import lines, rawfile
    rec = rawfile.load(a.input)
    # --top: at least 1 (_positive_int)
    print(lines.render_hot_lines(rec, a.top) if a.lines else rec.report(a.top), end="")
    return 0


def cmd_annotate(a: argparse.Namespace) -> int:
    from . import lines, rawfile
    rec = rawfile.load(a.input)
    try:
        text = lines.render_annotated(rec, a.source, a.source_dir)
    except lines.AnnotateError as exc:
        raise CliError(str(exc)) from None
    print(text, end="")
    return 0


def cmd_diff(a: argparse.Namespace) -> int:
    from . import diff, rawfile
    from .export import write_file
    before, after = rawfile.load(a.before), rawfile.load(a.after)
    names = os.path.basename(a.before), os.path.basename(a.after)
    if a.output is not None:
        if not a.output.lower().endswith(".svg"):
            raise CliError(f"{a.output}: the differential flame graph is an SVG: name it *.svg")
        write_file(a.output, diff.render_svg(before, after, *names))
    print(diff.render_text(diff.self_share_changes(before, after), a.top, *names), end="")
    if a.output is not None:
        print(f"sigprof: wrote {_shown(a.output)} (differential flame graph)", file=sys.stderr)
    return 0


def cmd_view(a: argparse.Namespace) -> int:
    from . import view
    try:
        view.view(a.input, svg=a.svg, open_browser=a.browser,
                  say=lambda line: print(line, file=sys.stderr, flush=True),
                  source_dirs=a.source_dir)
    except view.ViewError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        print("sigprof: stopped", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        a = _parser().parse_args(argv)
        return {"record": cmd_record, "run": cmd_run, "convert": cmd_convert, "report": cmd_report,
                "view": cmd_view, "diff": cmd_diff, "annotate": cmd_annotate}[a.command](a)
    except SystemExit as exc:                      # --help / --version
        return int(exc.code or 0)
    except (CliError, RecordingFormatError, UnknownFormat) as exc:
        print(f"sigprof: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"sigprof: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("sigprof: interrupted", file=sys.stderr)
        return INTERRUPT_EXIT_CODE
    except Exception as exc:  # a bug of ours: still one line, unless debugging
        if os.environ.get("SIGPROF_DEBUG"):
            raise
        print(f"sigprof: internal error: {type(exc).__name__}: {exc} "
              f"(set SIGPROF_DEBUG=1 for a traceback)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
