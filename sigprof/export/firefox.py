"""Recording -> the Firefox Profiler's processed profile format, version 70.

Spec: firefox-devtools/profiler ``src/types/profile.ts`` and the upgraders in
``src/profile-logic/processed-profile-versioning.ts`` (which document each
version's change; ``docs-developer/CHANGELOG-formats.md`` stops at 48).  The
shape of version 70, step by step from the version 55 that wasmtime writes:

* v56: one ``shared.stringArray`` for the whole profile;
* v58/v61/v64: ``shared.sources`` (id, filename, startLine, startColumn,
  sourceMapURL, content) replaces ``funcTable.fileName``; ``funcTable`` and
  ``frameTable`` gain ``originalLocation``; ``shared.sourceLocationTable``;
* v60: stack, frame, func, resource and native-symbol tables move from each
  thread to ``shared``;
* v66: ``stackTable.prefix`` becomes ``prefixOffset`` (index minus prefix
  index; 0 for a root);
* v70: ``frameTable.lib`` (the frame's library, -1 for none) replaces
  ``resourceTable.lib``.

The loader upgrades older versions and refuses newer ones, so 70 loads in
every profiler.firefox.com deployed since that version.

Mapping: each guest module is a library and a library resource; a guest
function is a func with a native symbol (its code range in the module's
.text); a frame is one return address, nudged back by one byte as the format
asks.  Host functions are funcs of a "Python host" resource; Python code on
the caller's side is in its own category, one resource per source file.  Each
OS thread that has samples is its own thread.  Samples carry
``weightType: "tracing-ms"`` weights -- CPU (or wall) milliseconds per
sample, measured -- so the call tree shows time, not sample counts; and
``threadCPUDelta`` in µs drives the CPU graph.

``meta.extra`` (the profile info panel) shows the clock and counters, and the
recording's warnings as a "sigprof warnings" section; ``meta.sigprof`` marks
the file as sigprof's and holds what reading it back into a ``Recording``
needs besides the tables (``sigprof/firefoxfile.py``).
"""

from __future__ import annotations

import gzip
import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..frames import (FRAME_GUEST, FRAME_HOST, FRAME_OPAQUE, FRAME_PYCODE, FRAME_PYTHON,
                      FRAME_TRUNCATED)
from . import raw
from .base import Exporter

if TYPE_CHECKING:
    from ..recording import Recording

JSON = Dict[str, Any]

PROCESSED_PROFILE_VERSION = 70
GECKO_PROFILE_VERSION = 31
RESOURCE_LIBRARY = 1      # ResourceType.Library
RESOURCE_UNKNOWN = 0

CATEGORIES = [
    {"name": "Other", "color": "grey", "subcategories": ["Other"]},
    {"name": "WebAssembly", "color": "blue", "subcategories": ["Other"]},
    {"name": "Python host", "color": "yellow", "subcategories": ["Other"]},
    {"name": "Profiler", "color": "purple", "subcategories": ["Other"]},
    {"name": "Python", "color": "green", "subcategories": ["Other"]},
]
CAT_OTHER, CAT_WASM, CAT_HOST, CAT_PROFILER, CAT_PYTHON = 0, 1, 2, 3, 4

# The markers' schemas, one per ``recording.MARKER_KINDS``: interval markers in the Marker
# Chart and Table, named by the host function or export; ``data.type`` names one.
MARKER_SCHEMAS = {
    "host call": {"name": "HostCall", "display": ["marker-chart", "marker-table"],
                  "chartLabel": "{marker.name}", "tooltipLabel": "host call {marker.name}",
                  "tableLabel": "{marker.name}",
                  "description": "A Python host function the guest called",
                  "fields": [{"key": "function", "label": "Host function", "format": "string"}]},
    "guest call": {"name": "GuestCall", "display": ["marker-chart", "marker-table"],
                   "chartLabel": "{marker.name}", "tooltipLabel": "guest call {marker.name}",
                   "tableLabel": "{marker.name}",
                   "description": "A call from Python into the guest",
                   "fields": [{"key": "function", "label": "Export", "format": "string"}]},
}
MARKER_CATEGORY = {"host call": CAT_HOST, "guest call": CAT_WASM}
INTERVAL_PHASE = 1

# ``meta.sigprof``: marks the profile as sigprof's and holds what reading it back
# needs (``sigprof/firefoxfile.py``); the version counts changes of its layout.
SIGPROF_KEY = "sigprof"
SIGPROF_SECTION_VERSION = 1


class _Strings:
    def __init__(self) -> None:
        self.array: List[str] = []
        self._index: Dict[str, int] = {}

    def __call__(self, s: str) -> int:
        i = self._index.get(s)
        if i is None:
            i = self._index[s] = len(self.array)
            self.array.append(s)
        return i


def _table(*columns: str) -> JSON:
    t: JSON = {c: [] for c in columns}
    t["length"] = 0
    return t


def _ms(ns: int) -> float:
    return round(ns / 1e6, 6)


def convert(rec: "Recording") -> JSON:
    strings = _Strings()
    meta = rec.meta
    start_ms = meta.get("start_unix_ns", 0) / 1e6
    duration_ms = _ms(int(meta.get("duration_ns", 0)))
    title = meta.get("name") or (rec.modules[0].name if rec.modules else "wasm guest")

    libs = []
    resources = _table("type", "name", "host")
    module_resource: Dict[int, int] = {}
    for i, module in enumerate(rec.modules):
        libs.append({"name": module.name, "path": "", "debugName": module.name, "debugPath": "",
                     "breakpadId": (module.digest[:32].upper() + "0"), "codeId": None,
                     "arch": str(meta.get("arch") or "")})
        module_resource[i] = _append(resources, type=RESOURCE_LIBRARY, name=strings(module.name),
                                     host=None)
    host_resource: Optional[int] = None
    file_resource: Dict[str, int] = {}          # Python source file -> its resource

    funcs = _table("name", "isJS", "relevantForJS", "resource", "source", "lineNumber",
                   "columnNumber", "originalLocation")
    symbols = _table("libIndex", "address", "name", "functionSize")
    frames = _table("address", "inlineDepth", "category", "subcategory", "func", "nativeSymbol",
                    "innerWindowID", "line", "column", "originalLocation", "lib")
    sources = _table("id", "filename", "startLine", "startColumn", "sourceMapURL", "content")
    source_index: Dict[str, int] = {}
    func_index: Dict[Tuple[object, ...], int] = {}
    symbol_index: Dict[Tuple[int, int], int] = {}

    def source_for(filename: str) -> Optional[int]:
        if not filename:
            return None
        i = source_index.get(filename)
        if i is None:
            i = source_index[filename] = _append(sources, id=None, filename=strings(filename),
                                                 startLine=1, startColumn=1, sourceMapURL=None,
                                                 content=None)
        return i

    def func_for(key: Tuple[object, ...], name: str, resource: int,
                 source: Optional[int] = None, line: Optional[int] = None) -> int:
        i = func_index.get(key)
        if i is None:
            i = func_index[key] = _append(funcs, name=strings(name), isJS=False,
                                          relevantForJS=False, resource=resource, source=source,
                                          lineNumber=line, columnNumber=None,
                                          originalLocation=None)
        return i

    frame_map: List[int] = []
    for fi, (kind, a, b, depth) in enumerate(rec.frames):
        ref = rec.function(fi)
        if kind == FRAME_GUEST:
            func = rec.guest_function(fi)
            native = None
            if func is not None:
                native = symbol_index.get((a, func.start))
                if native is None:
                    native = symbol_index[(a, func.start)] = _append(
                        symbols, libIndex=a, address=func.start, name=strings(func.name),
                        functionSize=func.size)
            # Lines where the module's DWARF was known: an inlined call is a frame
            # of its own at the same address, one inline level deeper.
            source = rec.source_line(fi)
            f = func_for(ref.key, ref.name, module_resource[a], source_for(ref.file),
                         ref.line or None)
            frame_map.append(_append(frames, address=max(b - 1, 0), inlineDepth=depth,
                                     category=CAT_WASM, subcategory=0, func=f,
                                     nativeSymbol=native, innerWindowID=0,
                                     line=source.line or None if source else None,
                                     column=source.column or None if source else None,
                                     originalLocation=None, lib=a))
            continue
        if kind == FRAME_PYCODE:
            code = rec.host_functions[a]
            if code.file not in file_resource:
                file_resource[code.file] = _append(resources, type=RESOURCE_UNKNOWN,
                                                   name=strings(code.file or "(python)"),
                                                   host=None)
            f = func_for(ref.key, ref.name, file_resource[code.file], source_for(code.file),
                         code.line or None)
            frame_map.append(_append(frames, address=-1, inlineDepth=0, category=CAT_PYTHON,
                                     subcategory=0, func=f, nativeSymbol=None, innerWindowID=0,
                                     line=b or None, column=None, originalLocation=None, lib=-1))
            continue
        if kind == FRAME_HOST:
            if host_resource is None:
                host_resource = _append(resources, type=RESOURCE_UNKNOWN,
                                        name=strings("Python host"), host=None)
            host = rec.host_functions[a]
            f = func_for(ref.key, ref.name, host_resource, source_for(host.file),
                         host.line or None)
            category = CAT_HOST
        else:
            f = func_for(ref.key, ref.name, -1)
            category = CAT_HOST if kind == FRAME_PYTHON else (
                CAT_WASM if kind == FRAME_OPAQUE else CAT_PROFILER if kind == FRAME_TRUNCATED
                else CAT_OTHER)
        frame_map.append(_append(frames, address=-1, inlineDepth=0, category=category,
                                 subcategory=0, func=f, nativeSymbol=None, innerWindowID=0,
                                 line=None, column=None, originalLocation=None, lib=-1))

    stacks = _table("frame", "prefixOffset")
    for i, (parent, frame) in enumerate(zip(rec.stack_parent, rec.stack_frame)):
        _append(stacks, frame=frame_map[frame], prefixOffset=0 if parent < 0 else i - parent)

    threads = _threads(rec, title, duration_ms, strings)
    profile: JSON = {
        "meta": {
            "interval": float(meta.get("interval_s", 0.001)) * 1000,
            "startTime": start_ms,
            "profilingStartTime": 0,
            "profilingEndTime": duration_ms,
            "processType": 0,
            "product": f"sigprof: {title}",
            "stackwalk": 1,
            "debug": False,
            "version": GECKO_PROFILE_VERSION,
            "preprocessedProfileVersion": PROCESSED_PROFILE_VERSION,
            "symbolicated": True,
            "importedFrom": "sigprof",
            "categories": CATEGORIES,
            "markerSchema": list(MARKER_SCHEMAS.values()) if rec.markers else [],
            "sampleUnits": {"time": "ms", "eventDelay": "ms", "threadCPUDelta": "µs"},
            "usesOnlyOneStackType": True,
            "sourceCodeIsNotOnSearchfox": True,
            "extra": _extra_sections(rec),
            SIGPROF_KEY: _sigprof_section(rec),
        },
        "libs": libs,
        "pages": [],
        "counters": [],
        "threads": threads,
        "shared": {
            "stringArray": strings.array,
            "sources": sources,
            "sourceLocationTable": _table("source", "line", "column"),
            "stackTable": stacks,
            "frameTable": frames,
            "funcTable": funcs,
            "resourceTable": resources,
            "nativeSymbols": symbols,
        },
    }
    host_details = meta.get("host")
    if host_details:
        profile["meta"]["oscpu"] = host_details.get("platform", "")
        profile["meta"]["CPUName"] = host_details.get("cpu", "")
        for thread in threads:
            thread["pid"] = str(host_details.get("pid", 0))
    profile["counters"] = _memory_counters(rec, threads[0]["pid"])
    return profile


def _threads(rec: "Recording", title: str, duration_ms: float,
             strings: _Strings) -> List[JSON]:
    """One profile thread per OS thread that has samples or markers (at least one)."""
    st = rec.sample_table
    weights = rec.weights_ns()
    rows = rec.meta.get("threads") or [{"name": title, "tid": 0}]
    by_thread: List[List[int]] = [[] for _ in rows]         # sample indices, one pass
    if len(st.thread) == len(st):
        for i, t in enumerate(st.thread):
            by_thread[t].append(i)
    else:                                                    # recorded before threads
        by_thread[0] = list(range(len(st)))
    markers = _markers(rec, len(rows), strings)
    main = next((i for i, row in enumerate(rows) if row.get("name") == "MainThread"), 0)
    out: List[JSON] = []
    for t, row in enumerate(rows):
        picked = by_thread[t]
        if not picked and not markers[t]["length"] and (out or t + 1 < len(rows)):
            continue
        # The profiler reads a sample's CPU delta as the time since the sample
        # before it, and so ignores the first one's: an empty, weightless sample
        # where the first interval began keeps that interval's CPU in the thread.
        # (Never after the first sample, whose time may be below 0 in a hand-made file.)
        t0 = st.time_ns[picked[0]] if picked else 0
        first = max(min(0, t0), t0 - st.wall_ns[picked[0]]) if picked else 0
        samples = {
            "length": len(picked) + bool(picked),
            "stack": [None] * bool(picked) + [st.stack[i] if st.stack[i] >= 0 else None
                                              for i in picked],
            "time": [_ms(first)] * bool(picked) + [_ms(st.time_ns[i]) for i in picked],
            "weight": [0.0] * bool(picked) + [_ms(weights[i]) for i in picked],
            "weightType": "tracing-ms",
            "threadCPUDelta": [0] * bool(picked) + [round(st.cpu_ns[i] / 1000) for i in picked],
        }
        out.append({
            "processType": "default",
            "processStartupTime": 0,
            "processShutdownTime": duration_ms,
            "registerTime": 0,
            "unregisterTime": duration_ms,
            "pausedRanges": [],
            "showMarkersInTimeline": False,
            "name": str(row.get("name") or title),
            "isMainThread": t == main,
            "processName": title,
            "pid": "0",
            "tid": row.get("tid", t),
            "samples": samples,
            "markers": markers[t],
        })
    return out


def _markers(rec: "Recording", threads: int, strings: _Strings) -> List[JSON]:
    """Each thread's markers table: the recording's markers as interval markers."""
    tables = [_table("data", "name", "startTime", "endTime", "phase", "category")
              for _ in range(threads)]
    for marker in rec.markers:
        schema = MARKER_SCHEMAS[marker.kind]
        _append(tables[marker.thread], data={"type": schema["name"], "function": marker.name},
                name=strings(marker.name), startTime=_ms(marker.start_ns),
                endTime=_ms(marker.end_ns), phase=INTERVAL_PHASE,
                category=MARKER_CATEGORY[marker.kind])
    return tables


def _memory_counters(rec: "Recording", pid: str) -> List[JSON]:
    """Memory tracks: the process's resident set and the guest's linear memory over time.

    A counter's ``count`` is the change since its previous sample: the profiler
    draws Memory counters ``line-accumulated``, adding them up, so the first
    sample carries the whole value.
    """
    st = rec.sample_table
    counters = []
    for values, name, description, color in (
            (st.rss_bytes, "Resident memory", "the process's resident set (RSS), bytes", "orange"),
            (st.memory_bytes, "Guest linear memory",
             "the guest's linear memories, bytes", "blue")):
        points = [(t, v) for t, v in zip(st.time_ns, values) if v >= 0]
        if len(points) != len(st) or not any(v for _, v in points):
            continue                  # not recorded (older recordings, no memories given)
        previous = 0
        counts = []
        for _, value in points:
            counts.append(value - previous)
            previous = value
        # ``display`` holds a counter's drawing since format version 62 (the colour
        # moved into it), its tooltip rows since 63 -- what the loader's upgraders
        # make for an older Memory counter, less the row about allocation counts.
        counters.append({"name": name, "category": "Memory", "description": description,
                         "pid": pid, "mainThreadIndex": 0,
                         "display": {"graphType": "line-accumulated", "unit": "bytes",
                                     "color": color, "markerSchemaLocation": "timeline-memory",
                                     "sortWeight": 20, "label": name,
                                     "tooltipRows": [
                                         {"type": "value", "source": "accumulated",
                                          "format": {"unit": "bytes"},
                                          "label": f"{name} at this time"},
                                         {"type": "value", "source": "count-range",
                                          "format": {"unit": "bytes"},
                                          "label": "range in the graph"}]},
                         "samples": {"time": [_ms(t) for t, _ in points], "count": counts,
                                     "length": len(points)}})
    return counters


def _append(table: JSON, **values: Any) -> int:
    index: int = table["length"]
    for key, value in values.items():
        table[key].append(value)
    table["length"] = index + 1
    return index


def _sigprof_section(rec: "Recording") -> JSON:
    """What a Recording holds that the profile's tables do not, for
    ``sigprof.firefoxfile`` to read the profile back: the recording's meta, its
    modules' and host functions' rows as the raw file has them, and its frames
    (one frame table row each, in order, as its stacks are one stack table row
    each)."""
    return {"version": SIGPROF_SECTION_VERSION, "meta": rec.meta,
            "modules": raw.module_rows(rec), "host_functions": raw.host_rows(rec),
            "frames": [list(frame) if frame.inline else list(frame[:3]) for frame in rec.frames]}


def _extra_sections(rec: "Recording") -> List[JSON]:
    """The profile's "extra" info (shown in the profiler's profile info panel)."""
    sections = [_extra_section(rec)]
    warnings = rec.meta.get("warnings") or []
    if warnings:
        sections.append({"label": "sigprof warnings", "entries": [
            {"label": f"Warning {i}", "format": "string", "value": str(warning)}
            for i, warning in enumerate(warnings, 1)]})
    return sections


def _extra_section(rec: "Recording") -> JSON:
    meta = rec.meta

    def entry(label: str, fmt: str, value: Any) -> JSON:
        return {"label": label, "format": fmt, "value": value}

    versions = meta.get("versions", {})
    entries = [
        entry("Clock", "string", f"{meta.get('clock')} (interval {meta.get('interval_s')} s)"),
        entry("Samples", "integer", rec.samples),
        entry("Dropped samples", "integer", rec.dropped),
        entry("Truncated stacks", "integer", rec.truncated),
        entry("Sampled CPU time", "milliseconds", _ms(rec.total_cpu_ns)),
        entry("Unsampled CPU time", "milliseconds", _ms(int(meta.get("unsampled_cpu_ns", 0)))),
    ]
    if "native_threads_cpu_ns" in meta:          # a store-less profile's
        entries.append(entry("CPU on threads without Python (not sampled)", "milliseconds",
                             _ms(int(meta["native_threads_cpu_ns"]))))
    if "marker_min_ns" in meta:
        entries.append(entry(f"Markers (host and guest calls of "
                             f"{int(meta['marker_min_ns']) / 1e3:g} µs or more)", "integer",
                             len(rec.markers)))
        entries.append(entry("Markers not kept (past the cap)", "integer",
                             int(meta.get("markers_dropped", 0))))
    entries += [
        entry("Profiler overhead (CPU)", "milliseconds", _ms(int(meta.get("overhead_cpu_ns", 0)))),
        entry("Versions", "string", ", ".join(f"{k} {v}" for k, v in versions.items())),
    ]
    return {"label": "sigprof", "entries": entries}


def render(rec: "Recording", path: str) -> bytes:
    data = json.dumps(rec.to_firefox(), ensure_ascii=False, separators=(",", ":")).encode()
    return gzip.compress(data, mtime=0) if path.lower().endswith(".gz") else data


EXPORTER = Exporter("firefox", (".json.gz", ".json"),
                    "Firefox Profiler profile (open it at https://profiler.firefox.com)", render)
