"""Recording -> collapsed stacks ("folded" format).

Spec: Brendan Gregg's FlameGraph ``stackcollapse`` output, as read by
flamegraph.pl, inferno and speedscope: one line per distinct stack,
``frame;frame;frame weight``, root first, weight an integer.  Weights are
CPU microseconds (wall microseconds for the wall clock).  Frames are
``module!function``; characters that would break the format (``;`` and line
breaks) are replaced.
"""

from __future__ import annotations

from typing import Dict, Tuple

from ..recording import Recording


def frame_label(ref) -> str:
    label = f"{ref.module}!{ref.name}" if ref.kind == "wasm" else ref.name
    return label.replace(";", ":").replace("\n", " ").replace("\r", " ")


def convert(rec: Recording) -> str:
    folded: Dict[Tuple[str, ...], int] = {}
    for funcs, weight_ns in rec.iter_stacks():
        key = tuple(frame_label(f) for f in funcs) or ("(no stack)",)
        folded[key] = folded.get(key, 0) + weight_ns
    lines = []
    for key, weight_ns in sorted(folded.items()):
        us = round(weight_ns / 1000)
        if us > 0:
            lines.append(f"{';'.join(key)} {us}")
    return "\n".join(lines) + ("\n" if lines else "")
