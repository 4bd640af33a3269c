"""A Firefox Profiler profile that sigprof wrote (``.json``, ``.json.gz``), read back.

``loads`` turns such a profile into the ``Recording`` it was written from, so
every command and ``sigprof.load`` take a ``.json`` where they take a
``.sigprof``.  The profile's tables hold the stacks and the samples;
``meta.sigprof`` (written by ``export/firefox.py``) holds the rest: the
recording's meta, its module and host-function rows as the raw file has
them, and its frames, one per frame-table row.  A profile without
``meta.sigprof`` -- from the browser, or from another tool -- is refused.

What the profile does not keep is rebuilt, so every output of the read-back
recording is the original's, but for what these columns feed:

* the weight of the recording's clock (CPU, or wall) per sample: exact (the
  profile keeps milliseconds to the nanosecond);
* the other clock per sample: a wall-clock profile's CPU time to the
  microsecond (``threadCPUDelta``); a CPU profile's wall time as the time
  since the thread's previous sample;
* ticks per sample: one each (the total is in the meta); the flag saying a
  sample was re-attributed to its tick: not kept; truncated stacks: from the
  stack's root;
* memory: from the profile's memory tracks, where it has them; samples of
  different threads at the very same nanosecond may trade memory values.

The rebuilt recording then goes through the raw reader's checks
(``rawfile.loads``), so a damaged profile fails as a damaged recording does:
``RecordingFormatError``, one line.
"""

from __future__ import annotations

import gzip
import json
import zlib
from array import array
from typing import Any, Dict, List, Tuple

from . import rawfile
from .export import raw
from .export.firefox import MARKER_SCHEMAS, SIGPROF_KEY, SIGPROF_SECTION_VERSION
from .frames import FRAME_TRUNCATED, SAMPLE_TRUNCATED, Frame
from .rawfile import RecordingFormatError
from .recording import CLOCK_WEIGHT, Marker, Recording, RecordingMeta, SampleTable, checked_meta

GZIP_MAGIC = b"\x1f\x8b"
JSON = Dict[str, Any]


def loads(data: bytes, source: str = "profile") -> Recording:
    def fail(why: str) -> RecordingFormatError:
        return RecordingFormatError(f"{source}: {why}")

    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise fail("damaged gzip file (it does not decompress)") from None
    try:
        profile = json.loads(data)
    except json.JSONDecodeError as exc:
        raise fail(f"damaged JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except ValueError:                                   # not UTF-8 text
        raise fail("not a JSON profile (not text)") from None
    meta = profile.get("meta") if isinstance(profile, dict) else None
    if not isinstance(meta, dict) or SIGPROF_KEY not in meta:
        raise fail("not a profile written by sigprof (only sigprof's own .json profiles read "
                   "back: record to .sigprof, or to .json with this sigprof)")
    section = meta[SIGPROF_KEY]
    version = section.get("version") if isinstance(section, dict) else None
    if not isinstance(version, int) or version < 1:
        raise fail("damaged sigprof profile (meta.sigprof has no version)")
    if version > SIGPROF_SECTION_VERSION:
        raise fail(f"written by a newer sigprof (profile layout {version}; this sigprof reads "
                   f"{SIGPROF_SECTION_VERSION}): upgrade sigprof")
    try:
        rec = _recording(profile, section)
        data = raw.dumps(rec)
    except KeyError as exc:
        raise fail(f"damaged sigprof profile (field {exc} missing)") from None
    except (TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
        raise fail(f"damaged sigprof profile ({exc})") from None
    return rawfile.loads(data, source=source)


def _recording(profile: JSON, section: JSON) -> Recording:
    meta = checked_meta(section["meta"])
    modules = tuple(rawfile.module_from_row(m) for m in section["modules"])
    hosts = tuple(rawfile.host_from_row(h) for h in section["host_functions"])
    frames = tuple(Frame(*(int(v) for v in frame[:4])) for frame in section["frames"])
    shared = profile["shared"]
    if shared["frameTable"]["length"] != len(frames):
        raise ValueError("meta.sigprof's frames do not match the frame table")
    stacks = shared["stackTable"]
    parent, stack_frame = array("i"), array("i")
    root: List[int] = []          # each stack's root stack
    for i in range(stacks["length"]):
        offset = int(stacks["prefixOffset"][i])
        if not 0 <= offset <= i:
            raise ValueError(f"stack {i} has a bad prefix")
        parent.append(i - offset if offset else -1)
        stack_frame.append(int(stacks["frame"][i]))
        root.append(root[i - offset] if offset else i)
    truncated = [frames[stack_frame[r]].type == FRAME_TRUNCATED for r in root]
    weight_is_wall = CLOCK_WEIGHT.get(str(meta.get("clock", "cpu")), "cpu") == "wall"
    rows = _samples(profile, meta, weight_is_wall)
    rows.sort(key=lambda row: row[0])                    # one time order over the threads
    table = SampleTable.empty()
    for time_ns, weight_ns, other_ns, stack, thread in rows:
        table.time_ns.append(time_ns)
        table.cpu_ns.append(other_ns if weight_is_wall else weight_ns)
        table.wall_ns.append(weight_ns if weight_is_wall else other_ns)
        table.stack.append(stack)
        table.ticks.append(1)
        table.flags.append(SAMPLE_TRUNCATED if stack >= 0 and truncated[stack] else 0)
        if meta.get("threads"):
            table.thread.append(thread)
    _memory(profile, table)
    return Recording(meta=meta, modules=modules, host_functions=hosts, frames=frames,
                     stack_parent=parent, stack_frame=stack_frame, sample_table=table,
                     markers=_markers(profile, meta))


def _ns(ms: Any) -> int:
    return round(float(ms) * 1e6)


def _thread_rows(profile: JSON, meta: RecordingMeta) -> List[int]:
    """Each profile thread's row in the recording's ``meta["threads"]`` (by tid, in
    order: two rows may share one when host details are off)."""
    tids = [row.get("tid", i) for i, row in enumerate(meta.get("threads") or [])]
    taken: set[int] = set()
    out = []
    for thread in profile["threads"]:
        candidates = [i for i, tid in enumerate(tids) if tid == thread["tid"] and i not in taken]
        if tids and not candidates:
            raise ValueError(f"thread {thread['tid']!r} is not among the recording's threads")
        index = candidates[0] if candidates else 0
        taken.add(index)
        out.append(index)
    return out


def _markers(profile: JSON, meta: RecordingMeta) -> Tuple[Marker, ...]:
    """The markers sigprof wrote (the schemas it names), back from each thread's table."""
    kinds: Dict[Any, str] = {schema["name"]: kind for kind, schema in MARKER_SCHEMAS.items()}
    threads = len(meta.get("threads") or [])
    out = []
    for thread, index in zip(profile["threads"], _thread_rows(profile, meta)):
        table = thread.get("markers") or {}
        for data, start, end in zip(table.get("data") or [], table.get("startTime") or [],
                                    table.get("endTime") or []):
            kind = kinds.get(data.get("type")) if isinstance(data, dict) else None
            if kind is not None:
                out.append(rawfile.marker_from_row(
                    [kind, data.get("function", ""), index, _ns(start), _ns(end)], threads))
    return tuple(sorted(out, key=lambda marker: marker.start_ns))


def _samples(profile: JSON, meta: RecordingMeta,
             weight_is_wall: bool) -> List[Tuple[int, int, int, int, int]]:
    """(time, weight, the other clock's time (ns), stack, thread) of every sample."""
    out = []
    for thread, index in zip(profile["threads"], _thread_rows(profile, meta)):
        samples = thread["samples"]
        if not samples["length"]:
            continue
        # The first sample is the thread's opening mark, where its first interval began.
        previous = _ns(samples["time"][0])
        columns = zip(samples["time"][1:], samples["weight"][1:], samples["stack"][1:],
                      samples["threadCPUDelta"][1:])
        for time_ms, weight_ms, stack, cpu_us in columns:
            time_ns = _ns(time_ms)
            other = int(cpu_us) * 1000 if weight_is_wall else max(0, time_ns - previous)
            previous = time_ns
            out.append((time_ns, _ns(weight_ms), other, -1 if stack is None else int(stack),
                        index))
    return out


def _memory(profile: JSON, table: SampleTable) -> None:
    """The memory columns, from the memory tracks (one point per sample, as deltas)."""
    tracks = {c["name"]: c["samples"]["count"] for c in profile.get("counters") or []}
    resident, guest = tracks.get("Resident memory"), tracks.get("Guest linear memory")
    if resident is None and guest is None:
        return
    for column, counts, absent in ((table.rss_bytes, resident, -1), (table.memory_bytes, guest, 0)):
        if counts is None:                  # not drawn: unknown (resident), or none (guest)
            column.extend([absent] * len(table))
            continue
        if len(counts) != len(table):
            raise ValueError("a memory track does not match the samples")
        value = 0
        for count in counts:
            value += int(count)
            column.append(value)
