"""IPython / Jupyter magics: ``%load_ext sigprof``, then

    %%sigprof [--interval 1ms] [--clock cpu|wall] [-o FILE]
    ... a cell whose guests (and Python) are profiled ...

    %sigprof [options] STATEMENT

Each profiles the cell or statement under a store-less profile (every store
of an engine with epoch interruption, every thread) and shows the flame
graph inline: sigprof's self-contained SVG inside a sandboxed ``<iframe>``,
so its script (hover, zoom, search) runs without touching the notebook's
page.  ``-o FILE`` also saves the profile (any format, from the suffix).
The recording stays in ``sigprof.notebook.last``; the statement's value is
returned by ``%sigprof``, as ``%time`` does.  A cell that raises still shows
its profile, then the exception.
"""

from __future__ import annotations

import argparse
import html
import importlib
import re
import sys
from typing import Any, Callable, List, NoReturn, Optional, Tuple

from .recording import Recording

last: Optional[Recording] = None          # the most recent profile a magic took


class _Options(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:     # one line for the cell, not usage + exit
        raise ValueError(message)


_OPTIONS = _Options(prog="%sigprof", add_help=False)
_OPTIONS.add_argument("--interval", help="sampling interval, e.g. 1ms, 250us (default: "
                                          "profile()'s: one kernel tick for the CPU clocks, "
                                          "1 ms for wall)")
_OPTIONS.add_argument("--clock", choices=("cpu", "prof", "wall"), default="cpu")
_OPTIONS.add_argument("-o", "--output", help="also save the profile here (format from suffix)")
_OPTIONS.add_argument("--height", type=int, default=480, help="px of the inline flame graph")
_TAKES_VALUE = {o for action in _OPTIONS._actions if action.nargs != 0  # not a flag
                for o in action.option_strings}
_WORD = re.compile(r"\s*(\S+)")


def _parse(line: str) -> Tuple[argparse.Namespace, str]:
    """The leading options of ``line``, and the statement after them."""
    words: List[str] = []
    position = 0
    expect_value = False
    while (match := _WORD.match(line, position)) and (expect_value or
                                                       match.group(1).startswith("-")):
        word = match.group(1)
        words.append(word)
        expect_value = not expect_value and word in _TAKES_VALUE
        position = match.end()
    options = _OPTIONS.parse_args(words)
    return options, line[position:].strip()


def flame_graph_html(rec: Recording, height_px: int = 480) -> str:
    """The flame graph as an ``<iframe srcdoc>``: its script runs, sandboxed from the page."""
    from .export import svg
    document = svg.render(rec, "").decode()
    return (f'<iframe sandbox="allow-scripts" style="width:100%;height:{height_px}px;border:0" '
            f'srcdoc="{html.escape(document, quote=True)}"></iframe>')


def _summary_line(recording: Recording) -> str:
    """One line for a frontend that draws no HTML: the samples and the hottest functions."""
    from .analysis import summarise_recording
    summary = summarise_recording(recording)
    top = ", ".join(f"{t.function.name} {summary.share(t.self_weight):.1f}%"
                    for t in summary.top_self(3) if t.self_weight)
    return (f"sigprof: {recording.samples} sample(s), {summary.total_weight / 1e6:.1f} ms "
            f"{recording.clock}; top by self time: {top or 'none'} (sigprof.notebook.last "
            f"holds the recording)")


def _profiled(options: argparse.Namespace, run: Callable[[], Any]) -> Any:
    global last
    from .profiler import profile
    prof = profile(interval=options.interval_s, clock=options.clock)
    try:
        with prof:
            return run()
    finally:
        if prof.recording is not None:            # None only if the profile never started
            last = prof.recording
            _show(last, options)


def _show(recording: Recording, options: argparse.Namespace) -> None:
    display: Any = importlib.import_module("IPython.display")   # untyped: not a dependency
    # Raw HTML: IPython's HTML() warns about every <iframe> it is given.  The text is
    # what a terminal IPython shows, where HTML is not drawn.
    display.display({"text/html": flame_graph_html(recording, options.height),
                     "text/plain": _summary_line(recording)}, raw=True)
    if options.output:
        from .export import write
        try:
            write(recording, options.output)
        except (OSError, ValueError) as exc:
            print(f"%sigprof: could not save {options.output}: {exc}", file=sys.stderr)


def sigprof_magic(line: str, cell: Optional[str] = None) -> Any:
    """Profile a cell (``%%sigprof``) or a statement (``%sigprof``) and show its flame graph."""
    shell: Any = importlib.import_module("IPython").get_ipython()
    try:
        options, statement = _parse(line)
    except ValueError as exc:
        print(f"%sigprof: {exc}", file=sys.stderr)
        return None
    from .runner import RunError, parse_interval
    try:
        options.interval_s = parse_interval(options.interval) if options.interval else None
    except RunError as exc:
        print(f"%sigprof: {exc}", file=sys.stderr)
        return None
    if cell is None and not statement:
        print("%sigprof: give a statement to profile, or use %%sigprof on a cell", file=sys.stderr)
        return None
    source = shell.transform_cell(cell if cell is not None else statement)
    if cell is None:
        try:
            expression = compile(source, "<%sigprof>", "eval")
        except SyntaxError:
            pass
        else:
            return _profiled(options, lambda: eval(expression, shell.user_ns))
    block = compile(source, "<%%sigprof>" if cell is not None else "<%sigprof>", "exec")
    _profiled(options, lambda: exec(block, shell.user_ns))
    return None


def load_ipython_extension(shell: Any) -> None:
    shell.register_magic_function(sigprof_magic, "line_cell", "sigprof")
