"""A text report: top functions by self and total time, and the hottest path."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Sequence

from ..analysis import Summary, summarise_recording
from .base import Exporter

if TYPE_CHECKING:
    from ..recording import Recording


def render_summary(summary: Summary, unit_per_ms: float, header: Sequence[str], top: int = 10,
           weight_name: str = "CPU") -> str:
    def ms(weight: float) -> str:
        return f"{weight / unit_per_ms:10.1f} ms"

    lines: List[str] = list(header)
    lines.append("")
    width = 60
    lines.append(f"Top {top} functions by self {weight_name} time")
    lines.append(f"  {'self':>13} {'%':>6}   {'total':>13} {'%':>6}   function")
    for f in summary.top_self(top):
        lines.append(f"  {ms(f.self_weight)} {summary.share(f.self_weight):5.1f}%  "
                     f"{ms(f.total_weight)} {summary.share(f.total_weight):5.1f}%   "
                     f"{f.function.label()[:width + 40]}")
    lines.append("")
    lines.append(f"Top {top} functions by total {weight_name} time")
    lines.append(f"  {'total':>13} {'%':>6}   {'self':>13} {'%':>6}   function")
    for f in summary.top_total(top):
        lines.append(f"  {ms(f.total_weight)} {summary.share(f.total_weight):5.1f}%  "
                     f"{ms(f.self_weight)} {summary.share(f.self_weight):5.1f}%   "
                     f"{f.function.label()[:width + 40]}")
    lines.append("")
    lines.append("Hottest call path")
    for depth, (function, weight) in enumerate(summary.hottest_path):
        lines.append(f"  {summary.share(weight):5.1f}%  {'  ' * min(depth, 30)}{function.label()}")
    return "\n".join(lines) + "\n"


def recording_header(rec: "Recording") -> List[str]:
    meta = rec.meta
    total_ms = sum(rec.weights_ns()) / 1e6
    weight_name = "wall" if rec.clock == "wall" else "CPU"
    head = [f"sigprof report: {meta.get('name') or ', '.join(m.name for m in rec.modules) or 'guest'}",
            f"  clock {rec.clock}, interval {meta.get('interval_s')} s; {rec.samples} samples, "
            f"{total_ms:.1f} ms {weight_name} time sampled"]
    notes = []
    if rec.dropped:
        notes.append(f"{rec.dropped} samples dropped (ring full)")
    if rec.truncated:
        notes.append(f"{rec.truncated} truncated stacks")
    native_threads_ms = meta.get("native_threads_cpu_ns", 0) / 1e6
    if native_threads_ms:
        notes.append(f"{native_threads_ms:.1f} ms CPU on {meta.get('native_threads', 0)} "
                     f"threads without Python (not sampled)")
    overhead = meta.get("overhead_cpu_ns", 0) / 1e6
    if overhead:
        notes.append(f"profiler overhead {overhead:.1f} ms CPU")
    if notes:
        head.append("  " + "; ".join(notes))
    warnings = meta.get("warnings") or []
    if warnings:
        head.append("  warnings:")
        head.extend(f"    {warning}" for warning in warnings)
    return head


def convert(rec: "Recording", top: int = 10) -> str:
    summary = summarise_recording(rec)
    return render_summary(summary, 1e6, recording_header(rec), top,
                  "wall" if rec.clock == "wall" else "CPU")


def render(rec: "Recording", path: str) -> bytes:
    return convert(rec).encode()


EXPORTER = Exporter("text", (".txt",), "text report", render)
