"""The notebook magics, in a real IPython shell."""

from __future__ import annotations

import html
import re

import pytest

import sigprof
from conftest import EXAMPLES

IPython = pytest.importorskip("IPython")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402

SETUP = f"""
import sigprof, wasmtime
engine = sigprof.engine()
module = wasmtime.Module.from_file(engine, {str(EXAMPLES / 'demo.wat')!r})
store = wasmtime.Store(engine)
store.set_epoch_deadline(sigprof.FAR_DEADLINE)
run = wasmtime.Linker(engine).instantiate(store, module).exports(store)["run"]
"""


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext sigprof")
    shell.run_cell(SETUP)
    try:
        yield shell
    finally:
        InteractiveShell.clear_instance()


def inline_svg(captured) -> str:
    (output,) = captured.outputs
    frame = output.data["text/html"]
    assert frame.startswith('<iframe sandbox="allow-scripts"')
    return html.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1))


def test_a_cell_magic_shows_the_cells_flame_graph_inline(shell, tmp_path):
    saved = tmp_path / "cell.sigprof"
    with capture_output() as captured:
        shell.run_cell_magic("sigprof", f"--interval 1ms -o {saved}",
                             "for _ in range(40):\n    run(store, 3)\n")
    svg = inline_svg(captured)
    assert svg.startswith("<?xml") and "hot_loop" in svg and "<script" in svg
    assert sigprof.notebook.last is not None and sigprof.notebook.last.samples
    (output,) = captured.outputs
    assert output.data["text/plain"].startswith("sigprof: ") and "hot_loop" in output.data["text/plain"]
    assert sigprof.load(saved).samples


def test_the_line_magic_returns_the_statements_value(shell):
    with capture_output() as captured:
        value = shell.run_line_magic("sigprof", "--clock wall sum(run(store, 3) for _ in range(20))")
    assert isinstance(value, int)
    assert "hot_loop" in inline_svg(captured)
    assert sigprof.notebook.last.meta["clock"] == "wall"


def test_a_cell_that_raises_still_shows_its_profile(shell):
    with capture_output() as captured:
        result = shell.run_cell("%%sigprof\nrun(store, 3)\nraise KeyError('boom')\n")
    assert isinstance(result.error_in_exec, KeyError)
    assert "hot_loop" in inline_svg(captured)


@pytest.mark.parametrize("line, message", [
    ("--clock sundial x", "invalid choice: 'sundial' (choose from 'cpu', 'prof', 'wall')"),
    ("--bogus 1 x", "unrecognized arguments: --bogus"),
    ("--interval", "expected one argument"),
    ("--interval 3parsecs x", "invalid interval '3parsecs'"),
    ("", "give a statement to profile"),
])
def test_bad_options_are_one_line(shell, capsys, line, message):
    assert shell.run_line_magic("sigprof", line) is None
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
