"""What changed between two recordings: self shares side by side, and a change per stack path.

Functions are matched across the two by what they are called -- kind, module
name and function name -- not by the recording's own identity (which holds
the module's digest), so a rebuilt module's functions still meet their old
selves.  Shares are percent of each recording's own total weight (CPU or
wall time), so two runs of different length compare fairly.

For the differential flame graph (``sigprof diff ... -o diff.svg``): widths
come from AFTER, and each box's colour from the change in its path's total
share -- the share of time spent in that function reached by that chain of
callers, before and after -- red where it grew, blue where it shrank, as
Brendan Gregg's differential flame graphs draw it; a path only AFTER has
counts as grown from zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Tuple

from .analysis import FunctionTree, recording_tree, summarise
from .export import svg
from .frames import FunctionRef

if TYPE_CHECKING:
    from .recording import Recording

FunctionName = Tuple[str, str, str]        # kind, module, name


def function_name(function: FunctionRef) -> FunctionName:
    return (function.kind, function.module, function.name)


@dataclass
class ShareChange:
    function: FunctionRef                  # as AFTER names it (BEFORE's if only there)
    before_pct: float
    after_pct: float

    @property
    def change_pct(self) -> float:
        return self.after_pct - self.before_pct


def self_share_changes(before: "Recording", after: "Recording") -> List[ShareChange]:
    """Every function's self share in both, largest change first."""
    shares: Dict[FunctionName, ShareChange] = {}
    for which, rec in (("before", before), ("after", after)):
        summary = summarise(recording_tree(rec))
        for totals in summary.functions:
            key = function_name(totals.function)
            change = shares.get(key)
            if change is None:
                change = shares[key] = ShareChange(totals.function, 0.0, 0.0)
            if which == "after":
                change.function = totals.function
                change.after_pct = summary.share(totals.self_weight)
            else:
                change.before_pct = summary.share(totals.self_weight)
    return sorted(shares.values(),
                  key=lambda c: (-abs(c.change_pct), c.function.label("summary")))


def path_share_changes(before: FunctionTree, after: FunctionTree) -> List[float]:
    """For each node of AFTER's tree, its path's total share after minus before (points)."""
    before_pct: Dict[Tuple[FunctionName, ...], float] = {}
    before_paths: List[Tuple[FunctionName, ...]] = []
    for node, label in enumerate(before.label):
        parent = before.parent[node]
        path = (before_paths[parent] if parent >= 0 else ()) + (function_name(label),)
        before_paths.append(path)
        if before.total_weight:
            before_pct[path] = before_pct.get(path, 0.0) + (
                100.0 * before.weight[node] / before.total_weight)
    changes: List[float] = []
    after_paths: List[Tuple[FunctionName, ...]] = []
    for node, label in enumerate(after.label):
        parent = after.parent[node]
        path = (after_paths[parent] if parent >= 0 else ()) + (function_name(label),)
        after_paths.append(path)
        after_pct = 100.0 * after.weight[node] / after.total_weight if after.total_weight else 0.0
        changes.append(after_pct - before_pct.get(path, 0.0))
    return changes


def render_text(changes: List[ShareChange], top: int, before_name: str,
                after_name: str) -> str:
    """The ``top`` functions whose self share changed most, with both shares."""
    rows = [c for c in changes if abs(c.change_pct) >= 0.005][:top]
    width = max([len(c.function.label("report")) for c in rows] + [8])
    lines = [f"self share, before: {before_name}, after: {after_name}",
             f"{'before':>8} {'after':>8} {'change':>8}  function"]
    for c in rows:
        lines.append(f"{c.before_pct:7.2f}% {c.after_pct:7.2f}% {c.change_pct:+7.2f}  "
                     f"{c.function.label('report'):<{width}}".rstrip())
    if not rows:
        lines.append("(no function's self share changed)")
    return "\n".join(lines) + "\n"


def render_svg(before: "Recording", after: "Recording", before_name: str,
               after_name: str) -> bytes:
    """The differential flame graph: AFTER's widths, each path coloured by its change."""
    changes = path_share_changes(recording_tree(before), recording_tree(after))
    title = f"{after_name} against {before_name} (red: share grew, blue: shrank)"
    return svg.convert(after, path_changes_pts=changes, title=title).encode()
