"""The preallocated ring buffer that samples are written into.

Two fixed arrays in anonymous memory maps, allocated once at start and never
resized (the kernel hands out zeroed pages as they are first written, so a
large ring costs nothing until it fills):

* ``header``: ``capacity`` records of ``HEADER_FIELDS`` signed 64-bit integers
  (the ``H_*`` indices below).
* ``pcs``: a stream of ``pc_capacity`` unsigned 64-bit words.  The capture
  writes each sample's raw return addresses straight into it, so a sample
  costs as many words as its stack is deep, not a fixed slot.

Positions in the PC stream are kept as absolute counts that only grow; a
sample's words live at ``abs_start % pc_capacity``.  When fewer than
``max_depth`` words remain before the end, the writer skips to the start
(counting the skipped words), so one sample never wraps.  A sample is intact
while no later sample has written over its words, which ``intact`` checks
from the absolute positions alone.

The writers are the native capture (``_native_src/sample.c``; ``sigprof.h``
there repeats the layout) and the pure-Python one (``_capture.py``); this module
owns the layout and the reading back, which happens after the run.  The C
extension reports the layout it was compiled with (``ring_layout()``) and
``check_layout`` compares it with this one before the native path is used, so a
change made on one side only turns the native capture off with the field's name
instead of writing records Python misreads.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
from typing import Dict, Iterator, NamedTuple

# Header record layout (indices into one record).
H_TIME = 0        # ns since the start of the profile: when the sample's tick came
H_CPU = 1         # thread CPU ns in this sample's interval (profiler time excluded)
H_WALL = 2        # wall ns in this sample's interval (profiler time excluded)
H_PC_START = 3    # absolute position of the first PC in the stream
H_PC_COUNT = 4    # number of PCs the walk wrote
H_ORIGIN = 5        # where the sample was taken: ORIGIN_* below, or host function id + 1
H_TICKS = 6       # timer ticks this sample accounts for
H_TICK_PC = 7     # where the latest tick interrupted the process (0 = unknown)
H_FLAGS = 8       # FLAG_DEPTH_LIMITED
H_HASH = 9        # FNV-1a of the raw PCs (native capture), 0 if not computed
H_RSS = 10        # the process's resident set, bytes (-1 unknown)
H_MEMORY = 11     # the guest's linear memories (the profile's ``memories``), bytes
H_TID = 12        # the thread the sample was taken on (kernel thread id)
H_ENTRY = 13      # serial of the innermost guest entry its stack's ENTRY marks stand for
H_CALLEE = 14     # serial of the Python frames a host function was running (0: none)
HEADER_FIELDS = 15
HEADER_WORD_BYTES = 8   # each header field: a signed 64-bit integer
PC_WORD_BYTES = 8       # each PC stream word: an unsigned 64-bit integer

FLAG_DEPTH_LIMITED = 1  # the walk stopped at max_depth (or at a frame chain it did not trust)

ORIGIN_GUEST = 0         # the guest reached an epoch check; >0: host function id + 1
ORIGIN_OUTSIDE = -1      # the thread was running Python outside any guest call

# Stack words that are not return addresses (bit 63, never set in a user address),
# written by the native capture: MARK_ENTRY where Python called the guest (the
# innermost such entry's serial is the record's H_ENTRY), MARK_HOST | origin for
# the Python host function an outer guest activation called.
MARK_ENTRY = 0x8000000000000000
MARK_HOST = 0xC000000000000000
MARK_PAYLOAD = 0x3FFFFFFFFFFFFFFF

FULL_KEEP_NEWEST = "newest"
FULL_STOP = "stop"


class Ring:
    """Fixed-size storage for raw samples; see the module docstring."""

    def __init__(self, capacity: int, max_depth: int, pcs_per_sample: int = 96,
                 when_full: str = FULL_KEEP_NEWEST):
        # The values were checked where the user gave them (Profiler).
        self.capacity = capacity
        self.max_depth = max_depth
        self.when_full = when_full
        # ``capacity`` samples of average depth, plus the slack the writer may skip
        # at the end of the stream (it needs ``max_depth`` free words per sample).
        self.pc_capacity = capacity * pcs_per_sample + max_depth
        self._maps = (mmap.mmap(-1, HEADER_WORD_BYTES * HEADER_FIELDS * capacity),
                      mmap.mmap(-1, PC_WORD_BYTES * self.pc_capacity))
        self.header = memoryview(self._maps[0]).cast("q")
        self.pcs = memoryview(self._maps[1]).cast("Q")
        self.header_address = _address(self._maps[0])
        self.pcs_address = _address(self._maps[1])
        # Writer state, advanced by the capture code.
        self.count = 0          # samples written, ever
        self.pc_end = 0         # absolute stream position after the last sample
        self.refused = 0        # samples not written because the ring was full (stop mode)

    def retained(self) -> range:
        """Sample numbers still held: the newest ``capacity`` at most."""
        return range(max(0, self.count - self.capacity), self.count)

    def intact(self, start: int) -> bool:
        """No later sample has written over the words starting at ``start``."""
        return self.pc_end - start <= self.pc_capacity

    def read(self) -> Iterator["RawSample"]:
        """Yield retained samples whose PCs are intact, oldest first."""
        hdr = self.header
        pc_words = self.pcs
        cap = self.pc_capacity
        oldest_intact = self.pc_end - cap
        for n in self.retained():
            base = (n % self.capacity) * HEADER_FIELDS
            # One record, unpacked in H_* order.
            (time_ns, cpu_ns, wall_ns, start, count, origin, ticks, tick_pc, flags, stack_hash,
             rss, memory, tid, entry, callee) = hdr[base:base + HEADER_FIELDS].tolist()
            if start < oldest_intact:           # written over (see ``intact``)
                continue
            pos = start % cap
            pcs = pc_words[pos:pos + count]
            yield RawSample(time_ns, cpu_ns, wall_ns, origin, ticks, pcs,
                            stack_hash or hash(pcs.tobytes()),
                            bool(flags & FLAG_DEPTH_LIMITED), tick_pc & 0xFFFFFFFFFFFFFFFF,
                            rss, memory, tid, entry, callee)

    def serials(self) -> "set[int]":
        """Entry and callee serials the held records name (and zeros): the Python
        frames still needed (``_capture.NativeCapture.keep_segments``)."""
        return set(self.header[H_ENTRY::HEADER_FIELDS]) | set(self.header[H_CALLEE::HEADER_FIELDS])

    def dropped(self) -> int:
        """Samples lost: written but no longer readable, plus refused (stop mode)."""
        held = min(self.count, self.capacity)           # slots 0..held-1 hold a record
        starts = sorted(self.header[H_PC_START:held * HEADER_FIELDS:HEADER_FIELDS])
        readable = held - bisect.bisect_left(starts, self.pc_end - self.pc_capacity)  # intact
        return self.count - readable + self.refused


class RingLayoutError(Exception):
    """The C extension was built with a ring layout other than this module's."""


def check_layout(native_layout: Dict[str, int]) -> None:
    """Raise ``RingLayoutError`` naming the first field whose value in
    ``native_layout`` (the extension's ``ring_layout()``) differs from this
    module's, or that only one side defines."""
    ours = globals()
    for name, value in native_layout.items():
        if name not in ours:
            raise RingLayoutError(f"the C extension's ring layout has {name} = {value}, which "
                                  f"sigprof/_ring.py does not define ({_REBUILD})")
        if ours[name] != value:
            raise RingLayoutError(f"ring layout mismatch: {name} is {value} in the C extension "
                                  f"but {ours[name]} in sigprof/_ring.py ({_REBUILD})")
    for name in _LAYOUT_NAMES:
        if name not in native_layout:
            raise RingLayoutError(f"the C extension's ring layout has no {name}, which "
                                  f"sigprof/_ring.py defines ({_REBUILD})")


_REBUILD = ("_native_src/sigprof.h and _ring.py must agree: fix the side that changed and "
            "rebuild the extension")
# The names the C side must report: the H_* fields and the record constants.
_LAYOUT_NAMES = tuple(name for name in list(globals())
                      if name.startswith("H_") or name in (
                          "HEADER_FIELDS", "HEADER_WORD_BYTES", "PC_WORD_BYTES",
                          "FLAG_DEPTH_LIMITED", "ORIGIN_GUEST", "ORIGIN_OUTSIDE",
                          "MARK_ENTRY", "MARK_HOST"))


def _address(buffer: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


class RawSample(NamedTuple):
    time_ns: int
    cpu_ns: int
    wall_ns: int
    origin: int                # ORIGIN_GUEST, ORIGIN_OUTSIDE, or host function id + 1
    ticks: int
    pcs: memoryview            # u64 return addresses, innermost first (a view of the ring),
                               # and, from the native capture, entry and host marks (MARK_*)
    stack_hash: int            # 64-bit hash of the PCs: with the depth, identifies the stack
    depth_limited: bool        # the walk stopped at max_depth: the root may be missing
    tick_pc: int = 0           # where the latest tick interrupted the process, if known
    rss_bytes: int = -1        # the process's resident set at the sample (-1 unknown)
    memory_bytes: int = 0      # the guest's linear memories at the sample
    tid: int = 0               # the thread it was taken on (kernel thread id)
    entry: int = 0             # the innermost guest entry's serial (0: no Python frames)
    callee: int = 0            # serial of the Python frames a host function was running
