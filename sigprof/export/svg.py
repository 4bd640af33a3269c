"""Recording -> an interactive SVG flame graph, one self-contained file.

Spec: the flame graph as Brendan Gregg's flamegraph.pl draws it -- one box per
function on a stack path, root at the bottom, width proportional to weight
(CPU time, or wall time for the wall clock), children in name order -- with
the same interactions in the file's own script, so it needs no network:

* hover: a ``<title>`` per box gives function, module, time and percent of
  the whole profile (as the text report counts it);
* click a box to zoom into it (its ancestors stay, full width); "Reset zoom";
* "Search" highlights every box whose function matches (a case-insensitive
  substring, or a regular expression) and shows the share they cover;
* ``#zoom=N`` and ``#search=TEXT`` in the URL apply on load, so a view can be
  shared (and tested in a browser).

Colours: guest (wasm) functions warm, Python host functions green, Python
code on the caller's side (and Python outside the guest) blue, everything else
grey; the shade follows the name so
neighbours differ.  Identical stacks are merged by the function tree
(``analysis.function_tree``), and boxes narrower than a pixel are not drawn --
the file says how many -- so 100 000 samples make a file of the tree's size.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, List, Tuple
from xml.sax.saxutils import escape

from ..analysis import FunctionTree, recording_tree
from ..frames import FunctionRef
from .base import Exporter

if TYPE_CHECKING:
    from ..recording import Recording

WIDTH = 1200            # px of the drawing area
FRAME_HEIGHT = 16       # px per stack level
PAD_TOP, PAD_BOTTOM, PAD_SIDE = 54, 28, 10
CHAR_WIDTH = 6.6        # px per character of the 11px font, for clipping labels

_PALETTES = {           # kind -> (base RGB, how much the name's hash moves it)
    "wasm": ((230, 110, 40), (25, 80, 40)),
    "host": ((90, 170, 90), (40, 50, 40)),
    "python": ((90, 140, 210), (30, 40, 30)),
    "py": ((90, 140, 210), (30, 40, 30)),
}


def _colour(function: FunctionRef) -> str:
    (r, g, b), (dr, dg, db) = _PALETTES.get(function.kind, ((170, 170, 170), (20, 20, 20)))
    v = hashlib.sha1(function.label().encode()).digest()
    return (f"rgb({min(255, r + v[0] * dr // 255)},{min(255, g + v[1] * dg // 255)},"
            f"{min(255, b + v[2] * db // 255)})")


def _clip(text: str, width_px: float) -> str:
    room = int((width_px - 6) / CHAR_WIDTH)
    if room < 3:
        return ""
    return text if len(text) <= room else text[:room - 2] + ".."


def _layout(tree: FunctionTree) -> Tuple[List[Tuple[int, int, float, float]], int, int]:
    """(node, depth, x, width) of every box at least a pixel wide; boxes left out;
    the deepest level drawn."""
    total = sum(tree.weight[r] for r in tree.roots)
    if total <= 0:
        return [], 0, 0
    scale = WIDTH / total
    boxes: List[Tuple[int, int, float, float]] = []
    dropped = 0
    deepest = 0
    stack = [(r, 0) for r in sorted(tree.roots, key=lambda n: tree.label[n].label(), reverse=True)]
    x_of = {}
    cursor = 0.0
    for root in sorted(tree.roots, key=lambda n: tree.label[n].label()):
        x_of[root] = cursor
        cursor += tree.weight[root] * scale
    while stack:
        node, depth = stack.pop()
        width = tree.weight[node] * scale
        if width < 1.0:
            dropped += 1 + _descendants(tree, node)
            continue
        x = x_of[node]
        boxes.append((node, depth, x, width))
        deepest = max(deepest, depth)
        child_x = x
        ordered = sorted(tree.children[node], key=lambda n: tree.label[n].label())
        for child in ordered:
            x_of[child] = child_x
            child_x += tree.weight[child] * scale
        stack.extend((c, depth + 1) for c in reversed(ordered))
    return boxes, dropped, deepest


def _descendants(tree: FunctionTree, node: int) -> int:
    count, todo = 0, list(tree.children[node])
    while todo:
        count += 1
        todo.extend(tree.children[todo.pop()])
    return count


def _warnings_line(rec: "Recording") -> List[str]:
    """The recording's warnings, in a line under the title (each in full on hover)."""
    warnings = [str(w) for w in rec.meta.get("warnings") or []]
    if not warnings:
        return []
    text = "warning: " + "; ".join(warnings)
    return [f'<text id="warnings" x="{WIDTH / 2 + PAD_SIDE}" y="33" '
            f'style="text-anchor:middle;fill:#a00"><title>{escape(chr(10).join(warnings))}'
            f'</title>{escape(_clip(text, WIDTH))}</text>']


def convert(rec: "Recording") -> str:
    tree = recording_tree(rec)
    boxes, dropped, deepest = _layout(tree)
    total = sum(tree.weight[r] for r in tree.roots)
    unit = "wall" if rec.clock == "wall" else "CPU"
    title = str(rec.meta.get("name") or ", ".join(m.name for m in rec.modules) or "guest")
    height = PAD_TOP + (deepest + 1) * FRAME_HEIGHT + PAD_BOTTOM
    bottom = height - PAD_BOTTOM
    out = [f'<?xml version="1.0" encoding="UTF-8"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH + 2 * PAD_SIDE}" '
           f'height="{height}" viewBox="0 0 {WIDTH + 2 * PAD_SIDE} {height}" '
           f'data-width="{WIDTH}" data-side="{PAD_SIDE}" data-char="{CHAR_WIDTH}" '
           f'data-total="{total:.0f}">',
           '<style>text{font:11px monospace;fill:#000}.f{cursor:pointer}.f:hover rect'
           '{stroke:#000;stroke-width:.5}.h{display:none}.m rect{fill:rgb(230,0,230)!important}'
           '.ui{cursor:pointer;font-size:12px;fill:#336}#t{font-size:15px;text-anchor:middle}'
           '</style>',
           f'<rect width="100%" height="100%" fill="#f8f8f4"/>',
           f'<text id="t" x="{WIDTH / 2 + PAD_SIDE}" y="20">{escape(title)}: '
           f'{tree.total_weight / 1e6:.1f} ms {unit}, {rec.samples} samples</text>',
           *_warnings_line(rec),
           f'<text id="reset" class="ui h" x="{PAD_SIDE}" y="40">Reset zoom</text>',
           f'<text id="search" class="ui" x="{WIDTH + PAD_SIDE - 60}" y="40">Search</text>',
           f'<text id="matched" class="ui" x="{WIDTH / 2}" y="40"></text>',
           f'<text id="note" x="{PAD_SIDE}" y="{height - 10}">'
           + (f"{dropped} frames narrower than a pixel are not drawn" if dropped else "")
           + "</text>",
           '<g id="frames">']
    for node, depth, x, width in boxes:
        function = tree.label[node]
        weight = tree.weight[node]
        where = f" [{function.module}]" if function.module else ""
        tip = (f"{function.name}{where} -- {weight / 1e6:.2f} ms {unit}, "
               f"{100 * weight / tree.total_weight:.2f}%")
        y = bottom - (depth + 1) * FRAME_HEIGHT
        out.append(f'<g class="f" id="f{node}" data-x="{x:.3f}" data-w="{width:.3f}" '
                   f'data-d="{depth}" data-n="{escape(function.name, {chr(34): "&quot;"})}">'
                   f'<title>{escape(tip)}</title>'
                   f'<rect x="{x + PAD_SIDE:.2f}" y="{y}" width="{width:.2f}" '
                   f'height="{FRAME_HEIGHT - 1}" rx="2" fill="{_colour(function)}"/>'
                   f'<text x="{x + PAD_SIDE + 3:.2f}" y="{y + 11}">'
                   f'{escape(_clip(function.name, width))}</text></g>')
    out.append("</g>")
    out.append("<script><![CDATA[" + _SCRIPT + "]]></script>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


_SCRIPT = r"""
(function () {
  var svg = document.documentElement, W = +svg.dataset.width, side = +svg.dataset.side;
  var charW = +svg.dataset.char, frames = [].slice.call(document.querySelectorAll('.f'));
  function label(g, w) {
    var full = g.dataset.n, room = Math.floor((w - 6) / charW);
    g.querySelector('text').textContent = room < 3 ? '' :
      (full.length <= room ? full : full.slice(0, room - 2) + '..');
  }
  function place(g, x, w) {
    var r = g.querySelector('rect'), t = g.querySelector('text');
    r.setAttribute('x', (x + side).toFixed(2)); r.setAttribute('width', w.toFixed(2));
    t.setAttribute('x', (x + side + 3).toFixed(2)); label(g, w);
  }
  function zoom(g) {
    var x0 = +g.dataset.x, w0 = +g.dataset.w, d0 = +g.dataset.d, scale = W / w0;
    frames.forEach(function (f) {
      var x = +f.dataset.x, w = +f.dataset.w, d = +f.dataset.d;
      var inside = x >= x0 - 1e-6 && x + w <= x0 + w0 + 1e-6;
      var above = x <= x0 + 1e-6 && x + w >= x0 + w0 - 1e-6 && d < d0;
      if (d >= d0 && inside) { f.classList.remove('h'); place(f, (x - x0) * scale, w * scale); }
      else if (above) { f.classList.remove('h'); place(f, 0, W); }
      else { f.classList.add('h'); }
    });
    document.getElementById('reset').classList.remove('h');
    location.hash = 'zoom=' + g.id.slice(1);
  }
  function reset() {
    frames.forEach(function (f) { f.classList.remove('h'); place(f, +f.dataset.x, +f.dataset.w); });
    document.getElementById('reset').classList.add('h');
  }
  function search(term) {
    var re; try { re = new RegExp(term, 'i'); } catch (e) { re = null; }
    var spans = [];
    frames.forEach(function (f) {
      var hit = term && (re ? re.test(f.dataset.n) : f.dataset.n.toLowerCase().indexOf(term.toLowerCase()) >= 0);
      f.classList.toggle('m', !!hit);
      if (hit) spans.push([+f.dataset.x, +f.dataset.x + +f.dataset.w]);
    });
    spans.sort(function (a, b) { return a[0] - b[0]; });
    var covered = 0, end = -1;
    spans.forEach(function (s) {
      if (s[1] > end) { covered += s[1] - Math.max(s[0], end); end = s[1]; }
    });
    document.getElementById('matched').textContent =
      term ? 'Matched: ' + (100 * covered / W).toFixed(1) + '%' : '';
  }
  frames.forEach(function (f) { f.addEventListener('click', function () { zoom(f); }); });
  document.getElementById('reset').addEventListener('click', reset);
  document.getElementById('search').addEventListener('click', function () {
    var term = prompt('Search for a function (a regular expression or text):', '');
    if (term !== null) search(term);
  });
  (location.hash.slice(1) ? location.hash.slice(1).split('&') : []).forEach(function (part) {
    var kv = part.split('='), value = decodeURIComponent(kv.slice(1).join('='));
    if (kv[0] === 'zoom' && document.getElementById('f' + value)) zoom(document.getElementById('f' + value));
    if (kv[0] === 'search') search(value);
  });
})();
"""


def render(rec: "Recording", path: str) -> bytes:
    return convert(rec).encode()


EXPORTER = Exporter("svg", (".svg",), "SVG flame graph (open it in a browser)", render)
