"""The SVG flame graph: self-contained, root at the top, laid out to the window's width,
short names on its boxes and full names in its hover text, and its zoom, search, name
toggle and resize working in a real browser (Debian's chromium, headless; .ci/run installs
it).  ``demangle.short_name`` on names real compilers made."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from array import array

import pytest

from sigprof.demangle import _load_cxx, display_name, short_name
from sigprof.export.svg import convert
from sigprof.frames import FRAME_GUEST, Frame
from sigprof.recording import Recording, SampleTable
from sigprof.frames import Function, ModuleSymbols

from conftest import ROOT, require
from test_exporters import golden_recording

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    require(path is not None, "chromium is not installed (apt-get install chromium)")
    return path


WINDOW = (1600, 900)        # px: the browser window the tests open the graph in


def browser_dom(chromium, url: str, *flags: str) -> str:
    """The document after its script ran, as headless Chromium serialises it."""
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", f"--window-size={WINDOW[0]},{WINDOW[1]}", *flags,
                          "--dump-dom", url],
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
    # Zoomed to the window's width (less the 10 px margins; this graph is too short to
    # need a scrollbar).
    assert float(after[target].find(f"{SVG}rect").get("width")) == pytest.approx(WINDOW[0] - 20)
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


# --- short names ---------------------------------------------------------------------------

# Symbols g++ 12.2 (Debian) emitted for a test file; what libstdc++ demangles them to;
# the short name.
CXX_NAMES = [
    ("_ZNK2ns5ClassIiE6methodEiPKc",
     "ns::Class<int>::method(int, char const*) const", "ns::Class::method"),
    ("_ZNK2ns5ClassIiEclERKSt6vectorIiSaIiEE",
     "ns::Class<int>::operator()(std::vector<int, std::allocator<int> > const&) const",
     "ns::Class::operator()"),
    ("_ZNK2ns5ClassIiEltERKS1_",
     "ns::Class<int>::operator<(ns::Class<int> const&) const", "ns::Class::operator<"),
    ("_ZNK2ns5ClassIiEcvNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEEEv",
     "ns::Class<int>::operator std::__cxx11::basic_string<char, std::char_traits<char>, "
     "std::allocator<char> >() const", "ns::Class::operator std::__cxx11::basic_string"),
    ("_ZN2ns5ClassIiED2Ev", "ns::Class<int>::~Class()", "ns::Class::~Class"),
    ("_ZStlsISt11char_traitsIcEERSt13basic_ostreamIcT_ES5_PKc",
     "std::basic_ostream<char, std::char_traits<char> >& std::operator<< "
     "<std::char_traits<char> >(std::basic_ostream<char, std::char_traits<char> >&, "
     "char const*)", "std::operator<<"),
    ("_ZNSolsEi", "std::ostream::operator<<(int)", "std::ostream::operator<<"),
    ("_ZN2ns5twiceIdEESt4pairIT_S2_ES2_",
     "std::pair<double, double> ns::twice<double>(double)", "ns::twice"),
    ("_ZN12_GLOBAL__N_16hiddenEi", "(anonymous namespace)::hidden(int)",
     "(anonymous namespace)::hidden"),
    ("_ZZ4makeiENKUliE_clEi", "make(int)::{lambda(int)#1}::operator()(int) const",
     "make::{lambda#1}::operator()"),
    ("_ZZ10use_lambdavENKUlRKSt6vectorIiSaIiEEiE_clES3_i",
     "use_lambda()::{lambda(std::vector<int, std::allocator<int> > const&, int)#1}::"
     "operator()(std::vector<int, std::allocator<int> > const&, int) const",
     "use_lambda::{lambda#1}::operator()"),
    # The return type has a scope and parameters of its own.
    ("_ZNKSt9_Any_data9_M_accessIZ4makeiEUliE_EERKT_v",
     "make(int)::{lambda(int)#1} const& std::_Any_data::_M_access<make(int)::"
     "{lambda(int)#1}>() const", "std::_Any_data::_M_access"),
    ("_ZdlPvm", "operator delete(void*, unsigned long)", "operator delete"),
    ("_ZL4workii.constprop.0.cold", "work(int, int) [clone .constprop.0] [clone .cold]",
     "work"),
    ("_ZThn8_N1C1gEv", "non-virtual thunk to C::g()", "non-virtual thunk to C::g"),
]

# Symbols rustc 1.95 emitted, legacy (`_ZN...17h<hash>E`) and v0 (`_R...`) mangling.
RUST_NAMES = [
    ("_ZN58_$LT$r..Wrapper$LT$T$GT$$u20$as$u20$core..fmt..Display$GT$3fmt17h1070a8c53b348f0dE",
     "<r::Wrapper<T> as core::fmt::Display>::fmt", "<r::Wrapper as core::fmt::Display>::fmt"),
    ("_ZN3std2rt10lang_start28_$u7b$$u7b$closure$u7d$$u7d$17ha86af84d9cc65291E",
     "std::rt::lang_start::{{closure}}", "std::rt::lang_start::{{closure}}"),
    ("_ZN4core3ops8function6FnOnce40call_once$u7b$$u7b$vtable.shim$u7d$$u7d$"
     "17h42e08618e5619cfaE", "core::ops::function::FnOnce::call_once{{vtable.shim}}",
     "core::ops::function::FnOnce::call_once{{vtable.shim}}"),
    ("_ZN1r3run17h92e11409b123381dE", "r::run", "r::run"),
    ("_RNvXCs6GmmlP4bgsG_1rINtB2_7WrapperhENtNtCsgEmfK2I1SDS_4core3fmt7Display3fmtB2_",
     "<r::Wrapper<u8> as core::fmt::Display>::fmt", "<r::Wrapper as core::fmt::Display>::fmt"),
    ("_RNCINvNtCsjrHSEGnQ3l9_3std2rt10lang_startuE0Cs6GmmlP4bgsG_1r",
     "std::rt::lang_start::<()>::{closure:#0}", "std::rt::lang_start::{closure:#0}"),
    ("_RNSNvYNCINvNtCsjrHSEGnQ3l9_3std2rt10lang_startuE0INtNtNtCsgEmfK2I1SDS_4core3ops8function"
     "6FnOnceuE9call_once6vtableCs6GmmlP4bgsG_1r",
     "<std::rt::lang_start<()>::{closure:#0} as core::ops::function::FnOnce<()>>::call_once::"
     "{shim:vtable#0}",
     "<std::rt::lang_start::{closure:#0} as core::ops::function::FnOnce>::call_once::"
     "{shim:vtable#0}"),
    ("_RINvMNtCsgEmfK2I1SDS_4core5sliceSh11copy_withinINtNtNtB5_3ops5range14RangeInclusive"
     "jEECsfEOYDRpO4Ta_11miniz_oxide",
     "<[u8]>::copy_within::<core::ops::range::RangeInclusive<usize>>", "<[u8]>::copy_within"),
]


@pytest.mark.parametrize("mangled, demangled, short", CXX_NAMES, ids=[n[2] for n in CXX_NAMES])
def test_short_names_of_cxx_functions(mangled, demangled, short):
    require(_load_cxx() is not None, "cxxfilt cannot load libstdc++")
    assert display_name(mangled) == demangled
    assert short_name(demangled) == short


@pytest.mark.parametrize("mangled, demangled, short", RUST_NAMES,
                         ids=[n[2] for n in RUST_NAMES])
def test_short_names_of_rust_functions(mangled, demangled, short):
    assert display_name(mangled) == demangled
    assert short_name(demangled) == short


@pytest.mark.parametrize("name", ["wasm-function[12]", "__original_main", "leaf;odd name",
                                  "(python, outside the guest)", "Plugin.log [env.log]",
                                  "Server.handle", "a < b", "std::vector<int", "f(int"])
def test_names_that_are_not_demangled_functions_stay_as_they_are(name):
    assert short_name(name) == name


def test_importing_demangle_loads_no_shared_library():
    # The module on its own (the package's other modules load extensions of their own);
    # the standard library's own extension modules (``_typing``...) do not count.
    module = str(ROOT / "sigprof" / "demangle.py")
    code = ("import importlib.util, sys, sysconfig\n"
            "stdlib = sysconfig.get_config_var('DESTSHARED')\n"
            "def libraries():\n"
            "    return {l.split()[-1] for l in open('/proc/self/maps')\n"
            "            if '.so' in l and not l.split()[-1].startswith(stdlib)}\n"
            "before = libraries()\n"
            f"spec = importlib.util.spec_from_file_location('d', {module!r})\n"
            "d = importlib.util.module_from_spec(spec); spec.loader.exec_module(d)\n"
            "print(sorted(libraries() - before), 'cxxfilt' in sys.modules)\n"
            "d.display_name('_Z1fv')\n"
            "print(any('libstdc++' in l for l in libraries()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    imported, demangled = out.stdout.splitlines()
    assert imported == "[] False"
    if _load_cxx() is not None:
        assert demangled == "True"                  # loaded at the first C++ name


# --- layout ----------------------------------------------------------------------------------

DEEP = 150          # stack levels: 2 400 px of boxes, taller than any first screen


def _deep_recording(warnings=()) -> Recording:
    """One chain of DEEP plain functions (the root is function 0) taking half the samples,
    and under the root a C++ method, a lambda and a Rust trait method (4, 7 and 9 of 40
    samples: room for their short names at 1200 px)."""
    names = [f"level{i}" for i in range(DEEP)] + [CXX_NAMES[0][0], CXX_NAMES[9][0],
                                                   RUST_NAMES[0][0]]
    funcs = tuple(Function(64 * i, 64, name, i, "wasm", (5,)) for i, name in enumerate(names))
    frames = tuple(Frame(FRAME_GUEST, 0, 64 * i + 9) for i in range(len(names)))
    parent = array("i", [-1] + list(range(DEEP - 1)) + [0, 0, 0])
    frame = array("i", range(len(names)))
    stacks = [DEEP - 1] * 20 + [DEEP] * 4 + [DEEP + 1] * 7 + [DEEP + 2] * 9
    n = len(stacks)
    table = SampleTable(array("q", range(n)), array("q", [1_000_000]) * n,
                        array("q", [1_000_000]) * n, array("i", stacks), array("i", [1]) * n,
                        array("B", [0]) * n)
    return Recording(meta={"clock": "cpu", "name": "deep", "warnings": list(warnings)},
                     modules=(ModuleSymbols("deep.wasm", "0" * 64, 64 * len(names), funcs),),
                     host_functions=(), frames=frames, stack_parent=parent, stack_frame=frame,
                     sample_table=table)


def _rect(g):
    r = g.find(f"{SVG}rect")
    return float(r.get("x")), float(r.get("y")), float(r.get("width"))


def test_the_root_is_at_the_top_and_the_static_render_is_1200_px_wide():
    text = convert(_deep_recording())
    svg = ET.fromstring(text)
    assert svg.get("width") == "1220"                               # 1200 + two 10 px margins
    assert svg.get("viewBox") == f"0 0 1220 {svg.get('height')}"   # scales in an <img>
    boxes = list(_boxes(text).values())
    assert len(boxes) == DEEP + 3
    root = next(g for g in boxes if g.get("data-d") == "0")
    assert root.get("data-n") == "level0"
    assert _rect(root)[1] == min(_rect(g)[1] for g in boxes)       # the root is at the top
    assert _rect(root)[1] < 100                                     # under the title only
    assert _rect(root)[0] == 10 and _rect(root)[2] == pytest.approx(1200)
    for g in boxes:                                                 # each level 16 px lower
        assert _rect(g)[1] == _rect(root)[1] + 16 * int(g.get("data-d"))


def test_boxes_show_short_names_and_hover_text_full_names():
    require(_load_cxx() is not None, "cxxfilt cannot load libstdc++")
    boxes = {g.get("data-n"): g for g in _boxes(convert(_deep_recording())).values()}
    for _, full, short in (CXX_NAMES[0], CXX_NAMES[9], RUST_NAMES[0]):
        g = boxes[full]
        assert g.get("data-s") == short
        assert g.find(f"{SVG}text").text == short
        assert g.find(f"{SVG}title").text.startswith(f"{full} [deep.wasm] -- ")
    plain = boxes["level0"]
    assert plain.get("data-s") is None and plain.find(f"{SVG}text").text == "level0"


def test_warnings_are_lines_under_the_title():
    def lines(text):
        return [t.text for t in ET.fromstring(text).iter(f"{SVG}text") if t.get("class") == "w"]
    assert lines(convert(_deep_recording())) == []
    noisy = _deep_recording(["no samples & <nothing> drawn"])
    assert lines(convert(noisy)) == ["warning: no samples & <nothing> drawn"]
    assert lines(convert(noisy, warnings=["a", "b"])) == ["warning: a", "warning: b"]
    quiet_top = _rect(next(g for g in _boxes(convert(noisy, warnings=[])).values()))[1]
    assert _rect(next(g for g in _boxes(convert(noisy, warnings=["a", "b"])).values()))[1] \
        == quiet_top + 32                                         # the boxes make room


def test_in_a_1600_px_window_the_root_is_on_the_first_screen_and_the_graph_spans_it(
        chromium, tmp_path):
    path = tmp_path / "deep.svg"
    _deep_recording().save(path)
    dom = browser_dom(chromium, path.as_uri())
    svg = ET.fromstring(dom)
    assert float(svg.get("height")) > 2 * WINDOW[1]                # deeper than the window
    boxes = _boxes(dom)
    root = next(g for g in boxes.values() if g.get("data-d") == "0")
    x, y, width = _rect(root)
    assert 0 <= y and y + 16 <= WINDOW[1]                          # on the first screen
    # The window's width less the margins, and less a scrollbar if the browser draws one.
    assert x == 10 and WINDOW[0] - 20 - 20 <= width <= WINDOW[0] - 20
    assert float(svg.find(f"{SVG}text[@id='search']").get("x")) == pytest.approx(10 + width)
    widths = sorted(_rect(g)[2] for g in boxes.values() if g.get("data-d") == "1")
    assert sum(widths) == pytest.approx(width, abs=0.05)           # children scaled alike


def test_the_names_toggle_shows_full_names_and_back(chromium, tmp_path):
    require(_load_cxx() is not None, "cxxfilt cannot load libstdc++")
    path = tmp_path / "deep.svg"
    _deep_recording().save(path)
    full, short = CXX_NAMES[0][1], CXX_NAMES[0][2]

    def label(dom):
        g = next(g for g in _boxes(dom).values() if g.get("data-n") == full)
        return g.find(f"{SVG}text").text
    names = lambda dom: next(t.text for t in ET.fromstring(dom).iter(f"{SVG}text")  # noqa: E731
                             if t.get("id") == "names")
    dom = browser_dom(chromium, path.as_uri())
    assert label(dom) == short and names(dom) == "Full names"
    dom = browser_dom(chromium, path.as_uri() + "#names=full")
    # 4 of 40 samples of 1565-1580 px (a scrollbar or not): room for 22 characters.
    assert label(dom) == full[:20] + ".." and names(dom) == "Short names"
    dom = browser_dom(chromium, path.as_uri() + "#names=full&search=Class::method")
    hits = {g.get("data-n") for g in _boxes(dom).values() if "m" in g.get("class").split()}
    assert hits == {full}                                          # the short name matches


def test_resizing_lays_the_graph_out_again_and_an_img_shows_the_static_render(
        chromium, tmp_path):
    _deep_recording().save(tmp_path / "deep.svg")
    (tmp_path / "page.html").write_text("""<!DOCTYPE html><html><body style="margin:0">
<iframe id="frame" src="deep.svg" style="width:1000px;height:400px;border:0"></iframe>
<img id="img" src="deep.svg"><pre id="out"></pre>
<script>
function rootWidth() {
  var rect = document.getElementById('frame').contentDocument.querySelector('.f[data-d="0"] rect');
  return rect ? +rect.getAttribute('width') : -1;
}
window.onload = function () {
  var out = {before: rootWidth(), img: document.getElementById('img').naturalWidth};
  var frame = document.getElementById('frame');
  frame.style.width = '700px';
  // The browser sends the frame its resize event at a later rendering step, which
  // headless chromium's virtual time may not reach under load: lay the page out now
  // and send the event the browser would, so the test is of the graph's handler.
  void frame.offsetWidth;
  frame.contentWindow.dispatchEvent(new Event('resize'));
  out.after = rootWidth();
  document.getElementById('out').textContent = JSON.stringify(out);
};
</script></body></html>""")
    # File pages may read each other's documents only with this flag; virtual time lets
    # the load finish before the page is dumped.
    dom = browser_dom(chromium, (tmp_path / "page.html").as_uri(),
                      "--allow-file-access-from-files", "--virtual-time-budget=5000")
    found = re.search(r'<pre id="out">(.*)</pre>', dom)
    assert found, dom[-2000:]
    out = json.loads(found.group(1))
    scrollbar = 20          # px at most, if the 400 px frame draws one for the 2 400 px graph
    assert 1000 - 20 - scrollbar <= out["before"] <= 1000 - 20
    assert 700 - 20 - scrollbar <= out["after"] <= 700 - 20
    assert out["img"] == 1220                                      # no script in an <img>
