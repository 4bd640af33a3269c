"""What a 4 kHz perf task-clock event costs, split: the timer interrupt vs the signal.

    python benchmarks/perf_interrupt_cost.py [--seconds 1] [--repeat 5]

A pure-C busy loop (a wasm loop, no epoch checks taken) runs for a fixed number
of iterations on one thread, with:

* ``none``: no event;
* ``event``: a task-clock event every 0.25 ms of the thread's CPU, counting,
  sampling into nothing (no O_ASYNC, no ring): the high-resolution timer
  interrupt alone;
* ``signal``: the same event sending a signal per overflow to sigprof's C tick
  handler (no engines to bump): interrupt + signal delivery, what
  ``source="perf"`` costs per tick before any sample is taken.

Cost per tick = (CPU time - CPU time of ``none``) / ticks; median (min-max) of
``--repeat`` runs, modes interleaved.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import signal
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Dict, List

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sigprof import _native, _wasmtime as wt  # noqa: E402

PERIOD_NS = 250_000
LOOP_WAT = """
(module (func (export "spin") (param $n i64) (result i64)
  (local $acc i64)
  (loop $l
    (local.set $acc (i64.add (i64.mul (local.get $acc) (i64.const 3)) (local.get $n)))
    (local.set $n (i64.sub (local.get $n) (i64.const 1)))
    (br_if $l (i64.ne (local.get $n) (i64.const 0))))
  (local.get $acc)))
"""
_SYS_PERF_EVENT_OPEN = 298          # x86-64
_PERF_TYPE_SOFTWARE, _PERF_COUNT_SW_TASK_CLOCK = 1, 1
_IOC_ENABLE, _IOC_DISABLE = 0x2400, 0x2401
_F_SETSIG, _F_SETOWN_EX, _F_OWNER_TID = 10, 15, 0


def _open_event(with_signal: bool) -> int:
    # struct perf_event_attr (version 8, 136 bytes): type, size, config, sample_period,
    # sample_type, read_format, flags (disabled | exclude_kernel | exclude_hv), ...
    attr = bytearray(136)
    struct.pack_into("<IIQQQQQ", attr, 0, _PERF_TYPE_SOFTWARE, 136, _PERF_COUNT_SW_TASK_CLOCK,
                     PERIOD_NS, 0, 0, (1 << 0) | (1 << 5) | (1 << 6))
    struct.pack_into("<I", attr, 56, 1)                   # wakeup_events
    buf = (ctypes.c_char * 136).from_buffer(attr)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(_SYS_PERF_EVENT_OPEN, buf, 0, -1, -1, 8)   # PERF_FLAG_FD_CLOEXEC
    if fd < 0:
        raise OSError(ctypes.get_errno(), "perf_event_open")
    if with_signal:
        fcntl.fcntl(fd, fcntl.F_SETFL, os.O_ASYNC)
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGVTALRM)
        owner = struct.pack("<ii", _F_OWNER_TID, threading_native_id())
        fcntl.fcntl(fd, _F_SETOWN_EX, owner)
    fcntl.ioctl(fd, _IOC_ENABLE, 0)
    return fd


def threading_native_id() -> int:
    import threading
    return threading.get_native_id()


def run(spin: wasmtime.Func, store: wasmtime.Store, n: int, mode: str) -> Dict[str, float]:
    ext = _native.extension()
    fd = -1
    before = ext.tick_counts()[0]
    if mode == "signal":
        ext.install(signal.SIGVTALRM, wt.INCREMENT_EPOCH_ADDRESS)
    try:
        if mode != "none":
            fd = _open_event(mode == "signal")
        c0 = time.thread_time_ns()
        spin(store, n)
        cpu = time.thread_time_ns() - c0
    finally:
        if fd >= 0:
            fcntl.ioctl(fd, _IOC_DISABLE, 0)
            fcntl.fcntl(fd, fcntl.F_SETFL, 0)
            os.close(fd)
        if mode == "signal":
            time.sleep(0.01)
            ext.uninstall(True)
    return {"cpu_ns": cpu, "ticks": cpu / PERIOD_NS,
            "delivered": ext.tick_counts()[0] - before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=1_500_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    spin = wasmtime.Instance(store, wasmtime.Module(engine, LOOP_WAT), []).exports(store)["spin"]
    assert isinstance(spin, wasmtime.Func)
    runs: Dict[str, List[Dict[str, float]]] = {"none": [], "event": [], "signal": []}
    for _ in range(a.repeat):
        for mode in runs:
            runs[mode].append(run(spin, store, a.iterations, mode))
    base = [r["cpu_ns"] for r in runs["none"]]
    print(f"busy loop, {statistics.median(base) / 1e9:.2f} s of CPU; task-clock event every "
          f"{PERIOD_NS / 1e3:g} us; median (min-max) of {a.repeat}")
    for mode in ("event", "signal"):
        per_tick = [(r["cpu_ns"] - b) / r["ticks"] / 1e3 for r, b in zip(runs[mode], base)]
        overhead = [100 * (r["cpu_ns"] - b) / b for r, b in zip(runs[mode], base)]
        print(f"{mode:7s} us per tick {statistics.median(per_tick):6.2f} "
              f"({min(per_tick):.2f}-{max(per_tick):.2f}), overhead "
              f"{statistics.median(overhead):5.1f}% ({min(overhead):.1f}-{max(overhead):.1f}); "
              f"signals handled {statistics.median(r['delivered'] for r in runs[mode]):.0f}")


if __name__ == "__main__":
    main()
