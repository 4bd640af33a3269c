"""Time per source line: ``sigprof report --lines`` and ``sigprof annotate``.

A sample's self line is where its innermost frame is (the innermost inlined
call, where the compiler inlined one); its total lines are every line on its
stack, each counted once per sample.  Lines come from the module's DWARF
(``Recording.source_line``); code clang maps to line 0 (no line: generated or
merged code) is never a line here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

if TYPE_CHECKING:
    from .recording import Recording

SourceLine = Tuple[str, int]           # file as the recording keeps it, line (from 1)


class AnnotateError(ValueError):
    """The source file cannot be annotated (the message says why, in one line)."""


@dataclass(frozen=True)
class LineTimes:
    self_ns: Dict[SourceLine, int]
    total_ns: Dict[SourceLine, int]
    function: Dict[SourceLine, str]    # the function a line is in (the first seen)
    weight_ns: int                     # every sample's weight: what shares are of

    def share(self, weight_ns: int) -> float:
        return 100.0 * weight_ns / self.weight_ns if self.weight_ns else 0.0


def line_times(rec: "Recording") -> LineTimes:
    self_ns: Dict[SourceLine, int] = {}
    total_ns: Dict[SourceLine, int] = {}
    function: Dict[SourceLine, str] = {}
    frame_line: Dict[int, Optional[SourceLine]] = {}
    stack_lines: Dict[int, Tuple[Optional[SourceLine], Set[SourceLine]]] = {}

    def line_of(frame: int) -> Optional[SourceLine]:
        if frame not in frame_line:
            source = rec.source_line(frame)
            found = (source.file, source.line) if source is not None and source.line else None
            frame_line[frame] = found
            if found is not None:
                function.setdefault(found, rec.function(frame).name)
        return frame_line[frame]

    for stack, weight in zip(rec.sample_table.stack, rec.weights_ns()):
        if stack < 0:
            continue
        found = stack_lines.get(stack)
        if found is None:
            frames = rec.stack_frames(stack)
            lines = {line for line in map(line_of, frames) if line is not None}
            found = stack_lines[stack] = (line_of(frames[-1]) if frames else None, lines)
        leaf, lines = found
        if leaf is not None:
            self_ns[leaf] = self_ns.get(leaf, 0) + weight
        for line in lines:
            total_ns[line] = total_ns.get(line, 0) + weight
    return LineTimes(self_ns, total_ns, function, sum(rec.weights_ns()))


def _weight_name(rec: "Recording") -> str:
    return "wall" if rec.weights_ns() is rec.sample_table.wall_ns else "CPU"


def render_hot_lines(rec: "Recording", top: int) -> str:
    """The ``top`` source lines by self time, as ``FILE:LINE``."""
    times = line_times(rec)
    out = [f"Top {top} source lines by self {_weight_name(rec)} time"]
    if not times.total_ns:
        out.append("  (no source lines: the module's binary, with DWARF (-g), was not known "
                   "when it was profiled; record it with sigprof record, or give names=/--names "
                   "a -g build)")
        return "\n".join(out) + "\n"
    out.append(f"  {'self':>13} {'%':>6}   {'total':>13} {'%':>6}   line")
    ranked = sorted(times.self_ns.items(), key=lambda item: (-item[1], item[0]))[:top]
    for line, self_ns in ranked:
        out.append(f"  {self_ns / 1e6:10.1f} ms {times.share(self_ns):5.1f}%  "
                   f"{times.total_ns[line] / 1e6:10.1f} ms {times.share(times.total_ns[line]):5.1f}%"
                   f"   {line[0]}:{line[1]}  {times.function[line]}")
    return "\n".join(out) + "\n"


def _matches(recorded: str, wanted: str) -> bool:
    """A recorded file (a base name unless host details were on) is the one asked for."""
    if recorded == wanted:
        return True
    return os.path.basename(recorded) == os.path.basename(wanted) and (
        not os.path.isabs(recorded) or not os.path.isabs(wanted)
        or os.path.normpath(recorded) == os.path.normpath(wanted))


def _find_source(wanted: str, recorded: List[str], source_dir: Optional[str]) -> str:
    candidates = [wanted] if source_dir is None else [
        os.path.join(source_dir, name) for name in [wanted, *recorded, os.path.basename(wanted)]]
    for path in candidates:
        if os.path.isfile(path):
            return path
    where = f" in {source_dir}" if source_dir is not None else " (give --source-dir DIR)"
    raise AnnotateError(f"{wanted}: source file not found{where}")


def render_annotated(rec: "Recording", source_file: str, source_dir: Optional[str]) -> str:
    """``source_file`` line by line with each line's self and total share, as ``pprof -list``."""
    times = line_times(rec)
    files = sorted({f for f, _ in times.total_ns if _matches(f, source_file)})
    if not files:
        known = sorted({f for f, _ in times.total_ns})
        raise AnnotateError(f"{source_file}: no sampled code has lines in this file (files with "
                            f"lines: {', '.join(known) if known else 'none'})")
    path = _find_source(source_file, files, source_dir)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().splitlines()
    except OSError as exc:
        raise AnnotateError(f"{path}: cannot read the source file: {exc.strerror or exc}") from None
    self_ns = {n: sum(times.self_ns.get((f, n), 0) for f in files) for n in range(1, len(text) + 1)}
    total_ns = {n: sum(times.total_ns.get((f, n), 0) for f in files)
                for n in range(1, len(text) + 1)}
    file_self = sum(times.self_ns.get(key, 0) for key in times.self_ns if key[0] in files)
    file_total = max((w for key, w in times.total_ns.items() if key[0] in files), default=0)
    weight = _weight_name(rec)
    out = [f"{source_file}: {file_self / 1e6:.1f} ms self, {file_total / 1e6:.1f} ms total "
           f"{weight} time of {times.weight_ns / 1e6:.1f} ms",
           f"  {'self':>6} {'total':>6}  {'line':>5}  source"]
    for n, source in enumerate(text, 1):
        self_share = f"{times.share(self_ns[n]):5.1f}%" if self_ns[n] else f"{'.':>6}"
        total_share = f"{times.share(total_ns[n]):5.1f}%" if total_ns[n] else f"{'.':>6}"
        out.append(f"  {self_share} {total_share}  {n:5d}  {source}")
    return "\n".join(out) + "\n"
