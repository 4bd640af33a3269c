"""A structural checker for Firefox processed profiles of version 70.

Checks what the Firefox Profiler's loader does not reject but its UI breaks
on: every column present and as long as
the table, every index in range, the stack table a prefix tree, the meta
fields the loader reads, valid categories.  The shapes follow the profiler's
``src/types/profile.ts`` and the version upgraders up to 70.
"""

from __future__ import annotations

import math

SHARED_TABLES = {
    "stackTable": ["frame", "prefixOffset"],
    "frameTable": ["address", "inlineDepth", "category", "subcategory", "func", "nativeSymbol",
                   "innerWindowID", "line", "column", "originalLocation", "lib"],
    "funcTable": ["name", "isJS", "relevantForJS", "resource", "source", "lineNumber",
                  "columnNumber", "originalLocation"],
    "resourceTable": ["type", "name", "host"],
    "nativeSymbols": ["libIndex", "address", "name", "functionSize"],
    "sources": ["id", "filename", "startLine", "startColumn", "sourceMapURL", "content"],
    "sourceLocationTable": ["source", "line", "column"],
}
SAMPLE_COLUMNS = ["stack", "time", "weight", "weightType", "threadCPUDelta"]
META_FIELDS = ["interval", "startTime", "processType", "product", "stackwalk", "version",
               "preprocessedProfileVersion", "categories", "markerSchema", "sampleUnits"]
COLORS = {"transparent", "purple", "green", "orange", "yellow", "lightblue", "blue", "brown",
          "magenta", "red", "lightred", "darkgrey", "grey"}


class ProfileError(AssertionError):
    pass


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ProfileError(what)


def _table(table: dict, columns, name: str) -> int:
    _check(isinstance(table, dict), f"{name} is not an object")
    n = table.get("length")
    _check(isinstance(n, int) and n >= 0, f"{name}.length missing or invalid")
    for col in columns:
        _check(col in table, f"{name}.{col} missing")
        _check(isinstance(table[col], list), f"{name}.{col} is not a list")
        _check(len(table[col]) == n, f"{name}.{col} has {len(table[col])} entries, length is {n}")
    return n


def _index(value, size: int, what: str, nullable: bool = False, minus_one: bool = False) -> None:
    if value is None:
        _check(nullable, f"{what} is null")
        return
    _check(isinstance(value, int) and not isinstance(value, bool), f"{what} is not an integer")
    if minus_one and value == -1:
        return
    _check(0 <= value < size, f"{what} = {value} out of range 0..{size - 1}")


def check_profile(profile: dict) -> None:
    _check(isinstance(profile, dict), "profile is not an object")
    for key in ("meta", "libs", "threads", "shared"):
        _check(key in profile, f"top-level {key} missing")
    meta = profile["meta"]
    for field in META_FIELDS:
        _check(field in meta, f"meta.{field} missing")
    _check(meta["preprocessedProfileVersion"] == 70, "preprocessedProfileVersion is not 70")
    _check(isinstance(meta["markerSchema"], list), "meta.markerSchema is not a list")
    units = meta["sampleUnits"]
    _check(units.get("threadCPUDelta") in ("ns", "µs", "variable CPU cycles"),
           "meta.sampleUnits.threadCPUDelta invalid")
    _check(units.get("time") in ("ms", "bytes") and units.get("eventDelay") == "ms",
           "meta.sampleUnits time/eventDelay invalid")
    cats = meta["categories"]
    _check(isinstance(cats, list) and cats, "meta.categories empty")
    _check(any(c.get("color") == "grey" for c in cats), "no grey (default) category")
    for c in cats:
        _check(c.get("color") in COLORS, f"category color {c.get('color')!r} invalid")
        _check(isinstance(c.get("subcategories"), list) and c["subcategories"],
               f"category {c.get('name')!r} has no subcategories")

    libs = profile["libs"]
    for lib in libs:
        for key in ("name", "path", "debugName", "debugPath", "breakpadId", "codeId", "arch"):
            _check(key in lib, f"lib.{key} missing")

    shared = profile["shared"]
    strings = shared.get("stringArray")
    _check(isinstance(strings, list) and all(isinstance(s, str) for s in strings),
           "shared.stringArray missing or not strings")
    ns = len(strings)
    sizes = {name: _table(shared.get(name), cols, f"shared.{name}")
             for name, cols in SHARED_TABLES.items()}

    res = shared["resourceTable"]
    for i in range(sizes["resourceTable"]):
        _index(res["name"][i], ns, f"resourceTable.name[{i}]")
        _index(res["host"][i], ns, f"resourceTable.host[{i}]", nullable=True)
    src = shared["sources"]
    for i in range(sizes["sources"]):
        _index(src["filename"][i], ns, f"sources.filename[{i}]")
    syms = shared["nativeSymbols"]
    for i in range(sizes["nativeSymbols"]):
        _index(syms["libIndex"][i], len(libs), f"nativeSymbols.libIndex[{i}]")
        _index(syms["name"][i], ns, f"nativeSymbols.name[{i}]")
        _check(isinstance(syms["address"][i], int) and syms["address"][i] >= 0,
               f"nativeSymbols.address[{i}] invalid")
    funcs = shared["funcTable"]
    for i in range(sizes["funcTable"]):
        _index(funcs["name"][i], ns, f"funcTable.name[{i}]")
        _index(funcs["resource"][i], sizes["resourceTable"], f"funcTable.resource[{i}]",
               minus_one=True)
        _index(funcs["source"][i], sizes["sources"], f"funcTable.source[{i}]", nullable=True)
        _check(isinstance(funcs["isJS"][i], bool), f"funcTable.isJS[{i}] not a boolean")
    frames = shared["frameTable"]
    for i in range(sizes["frameTable"]):
        _index(frames["func"][i], sizes["funcTable"], f"frameTable.func[{i}]")
        _index(frames["nativeSymbol"][i], sizes["nativeSymbols"], f"frameTable.nativeSymbol[{i}]",
               nullable=True)
        _index(frames["lib"][i], len(libs), f"frameTable.lib[{i}]", minus_one=True)
        cat = frames["category"][i]
        _index(cat, len(cats), f"frameTable.category[{i}]", nullable=True)
        if cat is not None:
            _index(frames["subcategory"][i], len(cats[cat]["subcategories"]),
                   f"frameTable.subcategory[{i}]")
        addr = frames["address"][i]
        _check(isinstance(addr, int) and addr >= -1, f"frameTable.address[{i}] invalid")
        if addr >= 0:
            _check(frames["lib"][i] >= 0, f"frameTable[{i}] has an address but no lib")
    stacks = shared["stackTable"]
    for i in range(sizes["stackTable"]):
        _index(stacks["frame"][i], sizes["frameTable"], f"stackTable.frame[{i}]")
        off = stacks["prefixOffset"][i]
        _check(isinstance(off, int) and 0 <= off <= i,
               f"stackTable.prefixOffset[{i}] = {off} is not a backward offset")

    _check(isinstance(profile["threads"], list) and profile["threads"], "no threads")
    for t, thread in enumerate(profile["threads"]):
        for key in ("processType", "processStartupTime", "registerTime", "name", "isMainThread",
                    "pid", "tid", "samples", "markers", "pausedRanges"):
            _check(key in thread, f"threads[{t}].{key} missing")
        _check(isinstance(thread["pid"], str), f"threads[{t}].pid must be a string")
        samples = thread["samples"]
        n = _table(samples, ["stack", "time", "weight", "threadCPUDelta"], f"threads[{t}].samples")
        _check(samples.get("weightType") in ("samples", "tracing-ms", "bytes"),
               f"threads[{t}].samples.weightType invalid")
        prev = -math.inf
        for i in range(n):
            _index(samples["stack"][i], sizes["stackTable"], f"samples.stack[{i}]", nullable=True)
            time = samples["time"][i]
            _check(isinstance(time, (int, float)) and time >= prev, f"samples.time[{i}] not sorted")
            prev = time
            w = samples["weight"][i]
            _check(isinstance(w, (int, float)) and w >= 0, f"samples.weight[{i}] invalid")
            d = samples["threadCPUDelta"][i]
            _check(d is None or (isinstance(d, int) and d >= 0), f"threadCPUDelta[{i}] invalid")
        markers = thread["markers"]
        n = _table(markers, ["data", "name", "startTime", "endTime", "phase", "category"],
                   f"threads[{t}].markers")
        schemas = {schema["name"] for schema in meta["markerSchema"]}
        for i in range(n):
            _index(markers["name"][i], len(profile["shared"]["stringArray"]), f"markers.name[{i}]")
            _index(markers["category"][i], len(meta["categories"]), f"markers.category[{i}]")
            data = markers["data"][i]
            _check(data is None or data.get("type") in schemas,
                   f"markers.data[{i}] has a type no markerSchema names")
            start, end = markers["startTime"][i], markers["endTime"][i]
            _check(markers["phase"][i] == 1 and isinstance(start, (int, float))
                   and isinstance(end, (int, float)) and start <= end,
                   f"markers[{i}] is not an interval")

    # Counters (format 62+: the drawing in `display`, tooltip rows since 63).
    pids = {thread["pid"] for thread in profile["threads"]}
    for c, counter in enumerate(profile.get("counters", [])):
        for key in ("name", "category", "description", "pid", "mainThreadIndex", "display",
                    "samples"):
            _check(key in counter, f"counters[{c}].{key} missing")
        _check(counter["pid"] in pids, f"counters[{c}].pid matches no thread")
        _index(counter["mainThreadIndex"], len(profile["threads"]), f"counters[{c}].mainThreadIndex")
        display = counter["display"]
        for key in ("graphType", "unit", "color", "markerSchemaLocation", "sortWeight", "label",
                    "tooltipRows"):
            _check(key in display, f"counters[{c}].display.{key} missing")
        _check(display["color"] in COLORS, f"counters[{c}].display.color invalid")
        n = _table(counter["samples"], ["time", "count"], f"counters[{c}].samples")
        times = counter["samples"]["time"]
        _check(all(a <= b for a, b in zip(times, times[1:])), f"counters[{c}] times not sorted")
        _check(all(isinstance(v, int) for v in counter["samples"]["count"][:n]),
               f"counters[{c}].samples.count not integers")


def call_tree_functions(profile: dict):
    """(function name, library or '') root first, per sample, with its weight."""
    shared = profile["shared"]
    strings = shared["stringArray"]
    stacks, frames, funcs = shared["stackTable"], shared["frameTable"], shared["funcTable"]
    libs = profile["libs"]
    for thread in profile["threads"]:
        for stack, weight in zip(thread["samples"]["stack"], thread["samples"]["weight"]):
            path = []
            s = stack
            while s is not None:
                frame = stacks["frame"][s]
                lib = frames["lib"][frame]
                path.append((strings[funcs["name"][frames["func"][frame]]],
                             libs[lib]["name"] if lib >= 0 else ""))
                off = stacks["prefixOffset"][s]
                s = s - off if off else None
            yield path[::-1], weight
