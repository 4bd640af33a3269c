"""What changed between two recordings: self shares side by side, a change per path."""

from __future__ import annotations

import re

import wasmtime

import sigprof
from conftest import EXAMPLES, run_cli
from sigprof import diff
from sigprof.analysis import recording_tree


def recording_of(export: str, arg: int) -> sigprof.Recording:
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, str(EXAMPLES / "demo.wat"))
    store = wasmtime.Store(engine)
    run = wasmtime.Linker(engine).instantiate(store, module).exports(store)[export]
    with sigprof.profile(store, modules=[("demo", module)], interval=0.001) as prof:
        run(store, arg)
    return prof.recording


def test_shares_meet_by_name_and_the_biggest_changes_come_first():
    before, after = recording_of("fib", 36), recording_of("run", 4)
    changes = diff.self_share_changes(before, after)
    by_name = {c.function.name: c for c in changes}
    # Before, only fib ran; after, hot_loop takes a share it did not have.
    assert by_name["fib"].before_pct > 90 > by_name["fib"].after_pct
    assert by_name["hot_loop"].before_pct == 0 < by_name["hot_loop"].after_pct
    assert [abs(c.change_pct) for c in changes] == sorted((abs(c.change_pct) for c in changes),
                                                          reverse=True)
    text = diff.render_text(changes, 5, "fib.sigprof", "run.sigprof")
    assert text.splitlines()[0] == "self share, before: fib.sigprof, after: run.sigprof"
    assert "hot_loop  [demo]" in text and "fib  [demo]" in text


def test_a_recording_against_itself_changes_nothing():
    rec = recording_of("run", 4)
    assert all(abs(c.change_pct) < 1e-9 for c in diff.self_share_changes(rec, rec))
    tree = recording_tree(rec)
    assert all(abs(d) < 1e-9 for d in diff.path_share_changes(tree, tree))
    assert "(no function's self share changed)" in diff.render_text(
        diff.self_share_changes(rec, rec), 10, "a", "a")


def test_a_path_only_after_has_grown_from_zero():
    before, after = recording_of("fib", 36), recording_of("run", 4)
    after_tree = recording_tree(after)
    changes = diff.path_share_changes(recording_tree(before), after_tree)
    for node, label in enumerate(after_tree.label):
        if label.name == "hot_loop":
            share = 100 * after_tree.weight[node] / after_tree.total_weight
            assert abs(changes[node] - share) < 1e-9


def test_the_differential_flame_graph_colours_by_change():
    before, after = recording_of("fib", 36), recording_of("run", 4)
    document = diff.render_svg(before, after, "fib.sigprof", "run.sigprof").decode()
    assert "run.sigprof against fib.sigprof" in document
    boxes = re.findall(r'data-n="([^"]+)".*?<title>([^<]*)</title><rect [^>]*fill="([^"]+)"',
                       document)
    by_name = {name: (tip, fill) for name, tip, fill in boxes}
    tip, fill = by_name["hot_loop"]
    assert "points)" in tip and fill.startswith("rgb(255,")          # grew: red


def test_the_cli_prints_the_changes_and_draws_the_graph(tmp_path):
    before, after = tmp_path / "fib.sigprof", tmp_path / "run.json"
    recording_of("fib", 36).save(before)
    recording_of("run", 4).save(after)
    proc = run_cli("diff", before, after, "-o", tmp_path / "d.svg", "--top", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "self share, before: fib.sigprof, after: run.json" and len(lines) <= 5
    assert "run.json against fib.sigprof" in (tmp_path / "d.svg").read_text()
    assert "wrote" in proc.stderr and "d.svg" in proc.stderr


def test_the_cli_refuses_a_graph_that_is_not_svg_and_a_missing_input(tmp_path):
    rec = tmp_path / "a.sigprof"
    recording_of("run", 1).save(rec)
    proc = run_cli("diff", rec, rec, "-o", tmp_path / "d.json", cwd=tmp_path)
    assert proc.returncode == 2 and "is an SVG" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "d.json").exists()
    proc = run_cli("diff", rec, tmp_path / "nope.sigprof", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
