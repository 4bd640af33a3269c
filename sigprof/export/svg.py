"""Recording -> an interactive SVG flame graph, one self-contained file.

Spec: the flame graph of Brendan Gregg's flamegraph.pl -- one box per function
on a stack path, width proportional to weight (CPU time, or wall time for the
wall clock), children in name order -- drawn as an icicle: the root at the top
and callees below it.  A deep profile is taller than a screen, and a browser
opens a page at its top; with the root there, the first screen shows the
widest boxes, in a browser and as an ``<img>`` alike, where scrolling to a
bottom root would need script (which an ``<img>`` does not run) and would
still open on a jump.

The file is drawn 1200 px wide (its static render, e.g. in an ``<img>``); its
script lays the boxes out again to the window's width, and on every resize.
Labels show short names (``ns::Class::method``, ``demangle.short_name``);
"Full names" switches them to the whole demangled name, which the hover text
always gives.  The interactions are the file's own script, so it needs no
network:

* hover: a ``<title>`` per box gives function, module, time and percent of
  the whole profile (as the text report counts it);
* click a box to zoom into it (its ancestors stay, full width); "Reset zoom";
* "Search" highlights every box whose function (full or short name) matches
  (a case-insensitive substring, or a regular expression) and shows the share
  they cover;
* ``#zoom=N``, ``#search=TEXT`` and ``#names=full`` in the URL apply on load,
  so a view can be shared (and tested in a browser).

The recording's warnings (or the ``warnings`` given) are lines under the
title.  Colours: guest (wasm) functions warm, Python host functions green,
Python code on the caller's side (and Python outside the guest) blue,
everything else grey; the shade follows the name so neighbours differ.
Identical stacks are merged by the function tree (``analysis.function_tree``),
and boxes narrower than a pixel (of the 1200) are not drawn -- the file says
how many -- so 100 000 samples make a file of the tree's size.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

from ..analysis import FunctionTree, recording_tree
from ..demangle import short_name
from ..frames import FunctionRef
from .base import Exporter

if TYPE_CHECKING:
    from ..recording import Recording

WIDTH = 1200            # px of the drawing area in the static render
FRAME_HEIGHT = 16       # px per stack level
PAD_BOTTOM, PAD_SIDE = 28, 10
TITLE_Y, LINE_HEIGHT = 20, 16   # px: the title's baseline; each line under it
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


def _attr(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def _change_colour(change_pts: float, largest_pts: float) -> str:
    """Red where a path's share grew, blue where it shrank, white where it held."""
    fade = 0 if not largest_pts else round(200 * min(1.0, abs(change_pts) / largest_pts))
    return (f"rgb(255,{255 - fade},{255 - fade})" if change_pts > 0
            else f"rgb({255 - fade},{255 - fade},255)")


def convert(rec: "Recording", warnings: Optional[Sequence[str]] = None,
            path_changes_pts: Optional[Sequence[float]] = None,
            title: Optional[str] = None) -> str:
    """The flame graph of ``rec``; ``warnings`` (default: the recording's own) are shown
    under the title.  ``path_changes_pts`` (one per node of ``recording_tree(rec)``, as
    ``diff.path_share_changes`` gives them) makes it a differential one: colours by
    change in share instead of by kind."""
    if warnings is None:
        warnings = [str(w) for w in rec.meta.get("warnings", [])]
    tree = recording_tree(rec)
    largest_pts = max((abs(c) for c in path_changes_pts or ()), default=0.0)
    boxes, dropped, deepest = _layout(tree)
    total = sum(tree.weight[r] for r in tree.roots)
    unit = "wall" if rec.clock == "wall" else "CPU"
    if title is None:
        title = str(rec.meta.get("name") or ", ".join(m.name for m in rec.modules) or "guest")
    controls_y = TITLE_Y + (len(warnings) + 1) * LINE_HEIGHT + 4
    top = controls_y + 10
    height = top + (deepest + 1) * FRAME_HEIGHT + PAD_BOTTOM
    right = WIDTH + PAD_SIDE
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH + 2 * PAD_SIDE}" '
           f'height="{height}" viewBox="0 0 {WIDTH + 2 * PAD_SIDE} {height}" '
           f'data-width="{WIDTH}" data-side="{PAD_SIDE}" data-char="{CHAR_WIDTH}" '
           f'data-total="{total:.0f}">',
           '<style>:root{background:#f8f8f4}text{font:11px monospace;fill:#000}'
           '.f{cursor:pointer}.f:hover rect{stroke:#000;stroke-width:.5}.h{display:none}'
           '.m rect{fill:rgb(230,0,230)!important}'
           '.ui{cursor:pointer;font-size:12px;fill:#336}.end{text-anchor:end}'
           '#t{font-size:15px;text-anchor:middle}.w{fill:#a40;font-size:12px}</style>',
           '<rect width="100%" height="100%" fill="#f8f8f4"/>',
           f'<text id="t" x="{WIDTH / 2 + PAD_SIDE}" y="{TITLE_Y}">{escape(title)}: '
           f'{tree.total_weight / 1e6:.1f} ms {unit}, {rec.samples} samples</text>']
    for i, warning in enumerate(warnings):
        out.append(f'<text class="w" x="{PAD_SIDE}" y="{TITLE_Y + (i + 1) * LINE_HEIGHT}">'
                   f'warning: {escape(warning)}</text>')
    out += [f'<text id="reset" class="ui h" x="{PAD_SIDE}" y="{controls_y}">Reset zoom</text>',
            f'<text id="matched" class="ui" x="{WIDTH / 2}" y="{controls_y}"></text>',
            f'<text id="names" class="ui end" x="{right - 70}" y="{controls_y}">Full names</text>',
            f'<text id="search" class="ui end" x="{right}" y="{controls_y}">Search</text>',
            f'<text id="note" x="{PAD_SIDE}" y="{height - 10}">'
            + (f"{dropped} frames narrower than a pixel are not drawn" if dropped else "")
            + "</text>",
            '<g id="frames">']
    for node, depth, x, width in boxes:
        function = tree.label[node]
        weight = tree.weight[node]
        where = f" [{function.module}]" if function.module else ""
        tip = (f"{function.name}{function.where}{where} -- {weight / 1e6:.2f} ms {unit}, "
               f"{100 * weight / tree.total_weight:.2f}%")
        fill = _colour(function)
        if path_changes_pts is not None:
            change = path_changes_pts[node]
            tip += f" ({change:+.2f} points)"
            fill = _change_colour(change, largest_pts)
        short = short_name(function.name) if function.kind == "wasm" else function.name
        y = top + depth * FRAME_HEIGHT
        out.append(f'<g class="f" id="f{node}" data-x="{x:.3f}" data-w="{width:.3f}" '
                   f'data-d="{depth}" data-n="{_attr(function.name)}"'
                   + (f' data-s="{_attr(short)}"' if short != function.name else "") + '>'
                   f'<title>{escape(tip)}</title>'
                   f'<rect x="{x + PAD_SIDE:.2f}" y="{y}" width="{width:.2f}" '
                   f'height="{FRAME_HEIGHT - 1}" rx="2" fill="{fill}"/>'
                   f'<text x="{x + PAD_SIDE + 3:.2f}" y="{y + 11}">'
                   f'{escape(_clip(short, width))}</text></g>')
    out.append("</g>")
    out.append("<script><![CDATA[" + _SCRIPT + "]]></script>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


_SCRIPT = r"""
(function () {
  // Boxes carry their place in the static 1200 px layout (data-x, data-w); everything is
  // drawn again from those at the window's width, the zoomed box and the names chosen.
  var svg = document.documentElement, W0 = +svg.dataset.width, side = +svg.dataset.side;
  var charW = +svg.dataset.char, frames = [].slice.call(document.querySelectorAll('.f'));
  var $ = function (id) { return document.getElementById(id); };
  var state = {zoom: null, names: 'short', search: ''}, W = W0;
  function name(g) {
    return state.names === 'short' && g.dataset.s !== undefined ? g.dataset.s : g.dataset.n;
  }
  function label(g, w) {
    var text = name(g), room = Math.floor((w - 6) / charW);
    g.querySelector('text').textContent = room < 3 ? '' :
      (text.length <= room ? text : text.slice(0, room - 2) + '..');
  }
  function place(g, x, w) {
    var r = g.querySelector('rect'), t = g.querySelector('text');
    r.setAttribute('x', (x + side).toFixed(2)); r.setAttribute('width', w.toFixed(2));
    t.setAttribute('x', (x + side + 3).toFixed(2)); label(g, w);
  }
  function draw() {
    var g = state.zoom, x0 = 0, w0 = W0, d0 = 0;
    if (g) { x0 = +g.dataset.x; w0 = +g.dataset.w; d0 = +g.dataset.d; }
    var scale = W / w0;
    frames.forEach(function (f) {
      var x = +f.dataset.x, w = +f.dataset.w, d = +f.dataset.d;
      var inside = x >= x0 - 1e-6 && x + w <= x0 + w0 + 1e-6;
      var above = x <= x0 + 1e-6 && x + w >= x0 + w0 - 1e-6 && d < d0;
      if (d >= d0 && inside) { f.classList.remove('h'); place(f, (x - x0) * scale, w * scale); }
      else if (above) { f.classList.remove('h'); place(f, 0, W); }
      else { f.classList.add('h'); }
    });
    $('reset').classList.toggle('h', !g);
    $('names').textContent = state.names === 'short' ? 'Full names' : 'Short names';
  }
  function fit() {
    // The drawing's own width is the window's: user units become CSS pixels.
    svg.removeAttribute('viewBox');
    svg.setAttribute('width', '100%');
    W = Math.max(200, svg.getBoundingClientRect().width - 2 * side);
    $('t').setAttribute('x', W / 2 + side);
    $('matched').setAttribute('x', W / 2);
    $('names').setAttribute('x', W + side - 70);
    $('search').setAttribute('x', W + side);
    draw();
  }
  function share() {
    var parts = [];
    if (state.zoom) parts.push('zoom=' + state.zoom.id.slice(1));
    if (state.search) parts.push('search=' + encodeURIComponent(state.search));
    if (state.names !== 'short') parts.push('names=' + state.names);
    if (parts.length || location.hash) location.hash = parts.join('&');
  }
  function search(term) {
    var re; try { re = new RegExp(term, 'i'); } catch (e) { re = null; }
    var spans = [];
    state.search = term;
    frames.forEach(function (f) {
      var hit = term && [f.dataset.n, f.dataset.s || ''].some(function (n) {
        return re ? re.test(n) : n.toLowerCase().indexOf(term.toLowerCase()) >= 0;
      });
      f.classList.toggle('m', !!hit);
      if (hit) spans.push([+f.dataset.x, +f.dataset.x + +f.dataset.w]);
    });
    spans.sort(function (a, b) { return a[0] - b[0]; });
    var covered = 0, end = -1;
    spans.forEach(function (s) {
      if (s[1] > end) { covered += s[1] - Math.max(s[0], end); end = s[1]; }
    });
    $('matched').textContent = term ? 'Matched: ' + (100 * covered / W0).toFixed(1) + '%' : '';
  }
  frames.forEach(function (f) {
    f.addEventListener('click', function () { state.zoom = f; draw(); share(); });
  });
  $('reset').addEventListener('click', function () { state.zoom = null; draw(); share(); });
  $('names').addEventListener('click', function () {
    state.names = state.names === 'short' ? 'full' : 'short'; draw(); share();
  });
  $('search').addEventListener('click', function () {
    var term = prompt('Search for a function (a regular expression or text):', '');
    if (term !== null) { search(term); share(); }
  });
  (location.hash.slice(1) ? location.hash.slice(1).split('&') : []).forEach(function (part) {
    var kv = part.split('='), value = decodeURIComponent(kv.slice(1).join('='));
    if (kv[0] === 'zoom' && $('f' + value)) state.zoom = $('f' + value);
    if (kv[0] === 'search') search(value);
    if (kv[0] === 'names' && (value === 'full' || value === 'short')) state.names = value;
  });
  window.addEventListener('resize', fit);
  fit();
})();
"""


def render(rec: "Recording", path: str) -> bytes:
    return convert(rec).encode()


EXPORTER = Exporter("svg", (".svg",), "SVG flame graph (open it in a browser)", render)
