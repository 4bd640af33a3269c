"""The SVG flame graph: self-contained, and its hover text, zoom and search working in a
real browser (Debian's chromium, headless; .ci/run installs it)."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from array import array

import pytest

from sigprof.frames import FRAME_GUEST, Frame
from sigprof.recording import Recording, SampleTable
from sigprof.symbols import Function, ModuleSymbols

from conftest import ROOT, require
from test_exporters import golden_recording

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    require(path is not None, "chromium is not installed (apt-get install chromium)")
    return path


def browser_dom(chromium, url: str) -> str:
    """The document after its script ran, as headless Chromium serialises it."""
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _boxes(svg_text: str):
    root = ET.fromstring(svg_text)
    return {g.get("id"): g for g in root.iter(f"{SVG}g") if "f" in (g.get("class") or "").split()}


def test_the_flame_graph_is_self_contained_and_says_what_each_box_is(tmp_path):
    path = tmp_path / "g.svg"
    golden_recording().save(path)
    text = path.read_text()
    assert not re.search(r"(href|src)=\"https?:", text)           # nothing to fetch
    boxes = _boxes(text)
    tips = {g.find(f"{SVG}title").text for g in boxes.values()}
    assert "main [app.wasm] -- 28.03 ms CPU, 58.32%" in tips      # function, module, time, %
    assert "work [app.wasm] -- 24.03 ms CPU, 49.99%" in tips      # one box per path
    assert "work [lib.wasm] -- 4.00 ms CPU, 8.32%" in tips
    assert "Server.handle [server.py] -- 8.02 ms CPU, 16.69%" in tips      # Python code
    assert any(t.startswith("Plugin.log [env.log] [plugin]") for t in tips)
    fills = {g.get("data-n"): g.find(f"{SVG}rect").get("fill") for g in boxes.values()}
    guest, host, python, code = (fills["main"], fills["Plugin.log [env.log]"],
                                 fills["(python, outside the guest)"], fills["Server.handle"])
    red = lambda c: int(c[4:-1].split(",")[0])                      # noqa: E731
    green = lambda c: int(c[4:-1].split(",")[1])                    # noqa: E731
    blue = lambda c: int(c[4:-1].split(",")[2])                     # noqa: E731
    assert red(guest) > green(guest) > blue(guest)                  # guest: warm
    assert green(host) > red(host) and green(host) > blue(host)     # host: green
    assert blue(python) > red(python) and blue(code) > red(code)    # Python: blue
    widths = {g.get("data-n"): float(g.get("data-w")) for g in boxes.values()
              if g.get("data-d") == "0"}
    # Widths by CPU time, over the 44 ms drawn (one sample has no stack).
    assert widths["main"] == pytest.approx(1200 * 28.03 / 44.06, abs=0.5)


def test_zoom_and_search_work_in_a_browser(chromium, tmp_path):
    path = tmp_path / "g.svg"
    golden_recording().save(path)
    boxes = _boxes(path.read_text())
    target = max((i for i, g in boxes.items()                   # app.wasm's work under main
                  if g.get("data-n") == "work" and g.get("data-d") == "1"),
                 key=lambda i: float(boxes[i].get("data-w")))
    dom = browser_dom(chromium, f"{path.as_uri()}#zoom={target[1:]}&search=work")
    after = _boxes(dom)
    assert float(after[target].find(f"{SVG}rect").get("width")) == pytest.approx(1200)
    hidden = {i for i in after if "h" in after[i].get("class").split()}
    root_main = next(i for i, g in boxes.items()
                     if g.get("data-n") == "main" and g.get("data-d") == "0")
    assert "(python, outside the guest)" in {after[i].get("data-n") for i in hidden}
    assert root_main not in hidden                                   # the zoomed box's parent
    matched = {after[i].get("data-n") for i in after if "m" in after[i].get("class").split()}
    assert matched == {"work"}
    assert re.search(r"Matched: 81\.8%", dom)   # the `work`s cover 36 of the 44 ms drawn
    reset = [t for t in ET.fromstring(dom).iter(f"{SVG}text") if t.get("id") == "reset"][0]
    assert "h" not in (reset.get("class") or "").split()             # "Reset zoom" shown


def _wide_recording(samples: int) -> Recording:
    rnd = random.Random(7)
    funcs = tuple(Function(64 * i, 64, f"f{i}", i, "wasm", (5,)) for i in range(400))
    frames = tuple(Frame(FRAME_GUEST, 0, 64 * i + 9) for i in range(400))
    parent, frame = array("i"), array("i")
    index, leaves = {}, []
    for _ in range(3000):
        node = -1
        for _ in range(12):
            key = (node, rnd.randrange(400))
            if key not in index:
                index[key] = len(frame)
                parent.append(node)
                frame.append(key[1])
            node = index[key]
        leaves.append(node)
    stacks = array("i", (leaves[int(rnd.paretovariate(1.2)) % 3000] for _ in range(samples)))
    table = SampleTable(array("q", range(samples)), array("q", [1000]) * samples,
                        array("q", [1000]) * samples, stacks, array("i", [1]) * samples,
                        array("B", [0]) * samples)
    return Recording(meta={"clock": "cpu", "name": "wide"},
                     modules=(ModuleSymbols("wide", "0" * 64, 64 * 400, funcs),),
                     host_functions=(), frames=frames, stack_parent=parent, stack_frame=frame,
                     sample_table=table)


def test_a_hundred_thousand_samples_make_a_bounded_graph_that_counts_what_it_left_out(tmp_path):
    path = tmp_path / "wide.svg"
    _wide_recording(100_000).save(path)
    text = path.read_text()
    boxes = _boxes(text)
    assert all(float(g.get("data-w")) >= 1.0 for g in boxes.values())
    left_out = re.search(r"(\d+) frames narrower than a pixel are not drawn", text)
    assert left_out and int(left_out.group(1)) > 1000
    assert len(text) < 2_000_000


def test_convert_and_record_write_svg(tmp_path):
    golden_recording().save(tmp_path / "g.sigprof")
    env_cmd = [sys.executable, "-m", "sigprof"]
    out = subprocess.run([*env_cmd, "convert", "g.sigprof", "-o", "g.svg"], cwd=tmp_path,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT),
                                                              "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "g.svg").read_text().startswith("<?xml")
    rec = subprocess.run([*env_cmd, "record", "-o", "d.svg", "--invoke", "run", "--arg", "3",
                          str(ROOT / "examples" / "demo.wat")], cwd=tmp_path,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT),
                                                              "PATH": "/usr/bin:/bin",
                                                              "HOME": str(tmp_path)})
    assert rec.returncode == 0, rec.stderr
    assert "SVG flame graph" in rec.stderr and "hot_loop" in (tmp_path / "d.svg").read_text()
