"""Recording -> collapsed stacks ("folded" format).

Spec: Brendan Gregg's FlameGraph ``stackcollapse`` output, as read by
flamegraph.pl, inferno and speedscope: one line per distinct stack,
``frame;frame;frame weight``, root first, weight an integer.  Weights are
CPU microseconds (wall microseconds for the wall clock).  Frames are
``module!function``; characters that would break the format (``;`` and line
breaks) are replaced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Tuple

from .base import Exporter

if TYPE_CHECKING:
    from ..recording import Recording


def convert(rec: "Recording") -> str:
    by_stack: Dict[int, int] = {}
    for stack, weight_ns in zip(rec.sample_table.stack, rec.weights_ns()):
        by_stack[stack] = by_stack.get(stack, 0) + weight_ns
    folded: Dict[Tuple[str, ...], int] = {}
    for stack, weight_ns in by_stack.items():
        frames = rec.stack_frames(stack) if stack >= 0 else []
        key = tuple(rec.function(f).label("collapsed") for f in frames) or ("(no stack)",)
        folded[key] = folded.get(key, 0) + weight_ns
    lines = []
    for key, weight_ns in sorted(folded.items()):
        us = round(weight_ns / 1000)
        if us > 0:
            lines.append(f"{';'.join(key)} {us}")
    return "\n".join(lines) + ("\n" if lines else "")


def render(rec: "Recording", path: str) -> bytes:
    return convert(rec).encode()


EXPORTER = Exporter("collapsed", (".collapsed", ".folded"), "collapsed stacks", render)
