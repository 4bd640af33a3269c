"""What a 4 kHz perf task-clock event costs, split: the timer interrupt, the kernel's
own sample into perf's ring, the signal -- and ``perf record`` on the same work.

    python benchmarks/perf_interrupt_cost.py [--depth 60] [--repeat 5]

A wasm guest recurses ``--depth`` calls deep and spins in a loop at the bottom (no
epoch checks: a plain engine), for a fixed number of iterations on one thread, with:

* ``none``: no event;
* ``event``: a task-clock event every 0.25 ms of the thread's CPU, counting,
  sampling into nothing (no O_ASYNC, no ring): the high-resolution timer
  interrupt alone;
* ``ring``: the same event writing a sample per overflow into its mmap ring --
  ``PERF_SAMPLE_IP | TID | TIME | CALLCHAIN``, user call chains only, the
  kernel walking the frame pointers -- with no signal and nothing reading the
  ring until the run ends (issue 20's route, its cost on the sampled thread);
  the ring is then read and its chains checked for the guest's frames;
* ``signal``: the event sending a signal per overflow to sigprof's C tick
  handler (no engines to bump): interrupt + signal delivery, what
  ``source="perf"`` costs per tick before any sample is taken;
* ``perf-record``: the same work in a child process under ``perf record -e
  task-clock -c 250000 --call-graph fp`` (perf's own sampler at the same period,
  frame-pointer chains), against the same child unprofiled (``child``).

Cost per tick = (CPU time - CPU time of the unprofiled run) / ticks; overhead the
same difference over the unprofiled CPU time; median (min-max) of ``--repeat``
runs, modes interleaved.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import mmap
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sigprof import _native, _wasmtime as wt  # noqa: E402
from capture_cost import DEPTH_WAT  # noqa: E402

PERIOD_NS = 250_000
_SYS_PERF_EVENT_OPEN = 298          # x86-64
_PERF_TYPE_SOFTWARE, _PERF_COUNT_SW_TASK_CLOCK = 1, 1
_IOC_ENABLE, _IOC_DISABLE = 0x2400, 0x2401
_F_SETSIG, _F_SETOWN_EX, _F_OWNER_TID = 10, 15, 0
# perf_event_attr.flags bits
_DISABLED, _EXCLUDE_KERNEL, _EXCLUDE_HV = 1 << 0, 1 << 5, 1 << 6
_WATERMARK, _EXCLUDE_CALLCHAIN_KERNEL = 1 << 14, 1 << 21
_SAMPLE_IP, _SAMPLE_TID, _SAMPLE_TIME, _SAMPLE_CALLCHAIN = 1, 2, 4, 32
_RECORD_LOST, _RECORD_SAMPLE = 2, 9
_CONTEXT_MARKERS = 0xFFFFFFFFFFFFF000     # PERF_CONTEXT_* are the top 4095 values
RING_PAGES = 1024                         # 4 MB of samples: a run's worth, read at its end


def _open_event(mode: str) -> Tuple[int, "mmap.mmap | None"]:
    # struct perf_event_attr (version 8, 136 bytes): type, size, config, sample_period,
    # sample_type, read_format, flags, wakeup_events / wakeup_watermark (48), ...
    attr = bytearray(136)
    sample_type = _SAMPLE_IP | _SAMPLE_TID | _SAMPLE_TIME | _SAMPLE_CALLCHAIN if mode == "ring" else 0
    flags = _DISABLED | _EXCLUDE_KERNEL | _EXCLUDE_HV
    wakeup = 1                                # a signal per overflow
    if mode == "ring":
        # No reader to wake but at half the ring: a wakeup per sample is an irq_work
        # (a self-interrupt) each, which costs as much again as the sample here.
        flags |= _EXCLUDE_CALLCHAIN_KERNEL | _WATERMARK
        wakeup = RING_PAGES * mmap.PAGESIZE // 2
    struct.pack_into("<IIQQQQQI", attr, 0, _PERF_TYPE_SOFTWARE, 136, _PERF_COUNT_SW_TASK_CLOCK,
                     PERIOD_NS, sample_type, 0, flags, wakeup)
    buf = (ctypes.c_char * 136).from_buffer(attr)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(_SYS_PERF_EVENT_OPEN, buf, 0, -1, -1, 8)   # PERF_FLAG_FD_CLOEXEC
    if fd < 0:
        raise OSError(ctypes.get_errno(), "perf_event_open")
    ring = None
    if mode == "ring":
        ring = mmap.mmap(fd, (1 + RING_PAGES) * mmap.PAGESIZE, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE)
    if mode == "signal":
        fcntl.fcntl(fd, fcntl.F_SETFL, os.O_ASYNC)
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGVTALRM)
        owner = struct.pack("<ii", _F_OWNER_TID, threading.get_native_id())
        fcntl.fcntl(fd, _F_SETOWN_EX, owner)
    fcntl.ioctl(fd, _IOC_ENABLE, 0)
    return fd, ring


def read_ring(ring: "mmap.mmap") -> Tuple[List[List[int]], int]:
    """The ring's samples' user call chains (leaf first, context markers dropped) and
    the samples the kernel reported lost."""
    head, = struct.unpack_from("<Q", ring, 1024)             # data_head
    data = ring[mmap.PAGESIZE:]
    if head > len(data):
        raise SystemExit("perf_interrupt_cost: the ring wrapped; raise RING_PAGES")
    chains: List[List[int]] = []
    lost = at = 0
    while at < head:
        kind, _, size = struct.unpack_from("<IHH", data, at)
        if kind == _RECORD_SAMPLE:
            nr, = struct.unpack_from("<Q", data, at + 8 + 24)  # after ip, pid/tid, time
            ips = struct.unpack_from(f"<{nr}Q", data, at + 8 + 32)
            chains.append([ip for ip in ips if ip < _CONTEXT_MARKERS])
        elif kind == _RECORD_LOST:
            lost += struct.unpack_from("<Q", data, at + 16)[0]
        at += size
    return chains, lost


def _guest(depth: int) -> Tuple[wasmtime.Store, wasmtime.Func, Tuple[int, int]]:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, DEPTH_WAT)
    down = wasmtime.Instance(store, module, []).exports(store)["down"]
    assert isinstance(down, wasmtime.Func)
    return store, down, wt.module_image_range(module)


def run(store: wasmtime.Store, down: wasmtime.Func, depth: int, n: int, mode: str,
        image: Tuple[int, int]) -> Dict[str, float]:
    ext = _native.extension()
    fd, ring = -1, None
    before = ext.tick_counts()[0]
    if mode == "signal":
        ext.install(signal.SIGVTALRM, wt.INCREMENT_EPOCH_ADDRESS, wt.RELEASE.tick_handler_on_alt_stack)
    try:
        if mode != "none":
            fd, ring = _open_event(mode)
        c0 = time.thread_time_ns()
        down(store, depth, n)
        cpu = time.thread_time_ns() - c0
    finally:
        if fd >= 0:
            fcntl.ioctl(fd, _IOC_DISABLE, 0)
            fcntl.fcntl(fd, fcntl.F_SETFL, 0)
        if mode == "signal":
            time.sleep(0.01)
            ext.uninstall(True)
    out = {"cpu_ns": cpu, "ticks": cpu / PERIOD_NS, "delivered": ext.tick_counts()[0] - before}
    if ring is not None:
        chains, lost = read_ring(ring)
        ring.close()
        guest_frames = [sum(1 for ip in chain if image[0] <= ip < image[1]) for chain in chains]
        out.update(delivered=len(chains), lost=lost,
                   full_depth=sum(1 for g in guest_frames if g >= depth + 1) / max(1, len(chains)),
                   median_guest_frames=statistics.median(guest_frames) if chains else 0)
    if fd >= 0:
        os.close(fd)
    return out


def child_run(depth: int, n: int, under_perf: bool, scratch: Path) -> Dict[str, float]:
    """The same work in a child process, under ``perf record`` or not: its CPU time."""
    child = [sys.executable, __file__, "--child", str(n), "--depth", str(depth)]
    if under_perf:
        child = ["perf", "record", "-q", "-e", "task-clock", "-c", str(PERIOD_NS),
                 "--call-graph", "fp", "-o", str(scratch / "perf.data"), "--", *child]
    proc = subprocess.run(child, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"perf_interrupt_cost: {' '.join(child)}: {proc.stderr[-500:]}")
    cpu = int(proc.stdout.split()[-1])
    return {"cpu_ns": cpu, "ticks": cpu / PERIOD_NS, "delivered": 0}


def _spread(values: List[float], digits: int = 2) -> str:
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=1_500_000_000)
    ap.add_argument("--depth", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)   # the perf-record child
    a = ap.parse_args()
    store, down, image = _guest(a.depth)
    if a.child is not None:
        c0 = time.thread_time_ns()
        down(store, a.depth, a.child)
        print(time.thread_time_ns() - c0)
        return
    in_process = ("none", "event", "ring", "signal")
    runs: Dict[str, List[Dict[str, float]]] = {m: [] for m in (*in_process, "child", "perf-record")}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(a.repeat):
            for mode in in_process:
                runs[mode].append(run(store, down, a.depth, a.iterations, mode, image))
            runs["child"].append(child_run(a.depth, a.iterations, False, Path(scratch)))
            runs["perf-record"].append(child_run(a.depth, a.iterations, True, Path(scratch)))
    print(f"guest {a.depth} calls deep, spinning; {statistics.median(r['cpu_ns'] for r in runs['none']) / 1e9:.2f} s "
          f"of CPU; task-clock every {PERIOD_NS / 1e3:g} us; median (min-max) of {a.repeat}")
    for mode in ("event", "ring", "signal", "perf-record"):
        base = [r["cpu_ns"] for r in runs["child" if mode == "perf-record" else "none"]]
        per_tick = [(r["cpu_ns"] - b) / r["ticks"] / 1e3 for r, b in zip(runs[mode], base)]
        overhead = [100 * (r["cpu_ns"] - b) / b for r, b in zip(runs[mode], base)]
        line = (f"{mode:12s} us per tick {_spread(per_tick)}, overhead {_spread(overhead, 1)}%")
        if mode == "signal":
            line += f"; signals handled {statistics.median(r['delivered'] for r in runs[mode]):.0f}"
        if mode == "ring":
            line += (f"; samples {statistics.median(r['delivered'] for r in runs[mode]):.0f}, "
                     f"lost {max(r['lost'] for r in runs[mode]):.0f}, guest frames per chain "
                     f"{statistics.median(r['median_guest_frames'] for r in runs[mode]):.0f}, "
                     f"chains with all {a.depth + 1} "
                     f"{statistics.median(r['full_depth'] for r in runs[mode]):.3f}")
        print(line)


if __name__ == "__main__":
    main()
