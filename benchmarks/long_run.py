"""A long profiled run: memory stays flat, the sample rate stays steady, it converts.

    python benchmarks/long_run.py [--minutes 10] [--json out.json]

One profile around a guest that runs for ``--minutes`` of CPU time (the demo
guest's ``run`` in a loop of calls, with a Python host function mixed in via
host.wat).  Every 10 s of wall time the script notes the process's resident
memory (psutil) and the samples taken so far; afterwards it saves the
recording as raw and Firefox JSON and converts the raw file again.

Default ring: 20 000 samples, keep newest -- so after ~80 s of CPU the ring is
full and memory must stop growing; the dropped count grows instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sigprof  # noqa: E402
from sigprof._ring import HEADER_FIELDS, Ring  # noqa: E402
from sigprof.profiler import DEFAULT_CAPACITY, DEFAULT_MAX_DEPTH  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY,
                    help="ring size in samples")
    ap.add_argument("--max-depth", type=int, default=DEFAULT_MAX_DEPTH)
    ap.add_argument("--json")
    a = ap.parse_args()
    engine = sigprof.engine()
    demo = wasmtime.Module.from_file(engine, str(ROOT / "examples" / "demo.wat"))
    host = wasmtime.Module.from_file(engine, str(ROOT / "examples" / "host.wat"))
    store = wasmtime.Store(engine)
    linker = wasmtime.Linker(engine)

    def burn(n):
        x = 0
        for i in range(n):
            x += i * i

    linker.define_func("env", "burn", wasmtime.FuncType([wasmtime.ValType.i32()], []), burn)
    linker.define_func("env", "nap", wasmtime.FuncType([wasmtime.ValType.i32()], []),
                       lambda ms: None)
    run_demo = linker.instantiate(store, demo).exports(store)["run"]
    run_host = linker.instantiate(store, host).exports(store)["run"]
    proc = psutil.Process()
    marks = []
    stop = threading.Event()
    prof = sigprof.profile(store, modules=[("demo", demo), ("host", host)],
                           capacity=a.capacity, max_depth=a.max_depth)

    def watch():
        t0 = time.monotonic()
        while not stop.wait(10.0):
            marks.append({"t_s": round(time.monotonic() - t0, 1),
                          "rss_mb": proc.memory_info().rss / 1e6,
                          "samples": prof.samples, "dropped": prof.dropped,
                          "cpu_s": proc.cpu_times().user + proc.cpu_times().system})
    watcher = threading.Thread(target=watch, daemon=True)
    deadline = time.thread_time() + a.minutes * 60
    calls = 0
    with prof:
        watcher.start()
        while time.thread_time() < deadline:
            run_demo(store, 2)
            run_host(store, 3, 2_000_000, 50_000, 0)
            calls += 1
        stop.set()
        watcher.join()
    rec = prof.recording
    with tempfile.TemporaryDirectory() as tmp:
        raw, js, again = Path(tmp, "long.sigprof"), Path(tmp, "long.json"), Path(tmp, "again.json")
        t = time.perf_counter()
        rec.save(raw)
        rec.save(js)
        sigprof.load(raw).save(again)
        convert_s = time.perf_counter() - t
        same = js.read_bytes() == again.read_bytes()
        sizes = (raw.stat().st_size, js.stat().st_size)
    rates = []
    for prev, cur in zip(marks, marks[1:]):
        dt_cpu = cur["cpu_s"] - prev["cpu_s"]
        taken = cur["samples"] - prev["samples"]   # while running: samples taken so far
        if dt_cpu > 0:
            rates.append(taken / dt_cpu)
    full = [m["rss_mb"] for m in marks if m["dropped"] > 0]
    print(f"long run: {a.minutes} min of guest CPU, {calls} rounds of calls")
    print(f"  samples kept {rec.samples}, dropped (ring full, keep newest) {rec.dropped}, "
          f"taken {rec.meta['samples_taken']}")
    line = (f"  resident memory: start {marks[0]['rss_mb']:.1f} MB, end {marks[-1]['rss_mb']:.1f} MB, "
            f"max {max(m['rss_mb'] for m in marks):.1f} MB")
    if full:
        line += f"; once the ring was full: min {min(full):.1f} / max {max(full):.1f} MB"
    print(line)
    ring = Ring(a.capacity, a.max_depth)
    print(f"  the ring's maps: {(8 * HEADER_FIELDS * ring.capacity + 8 * ring.pc_capacity) / 1e6:.1f} MB, "
          f"touched as they are first written")
    print(f"  sample rate per CPU-second, 10 s windows: median {statistics.median(rates):.0f}, "
          f"min {min(rates):.0f}, max {max(rates):.0f}")
    print(f"  saved raw {sizes[0] / 1e6:.1f} MB + JSON {sizes[1] / 1e6:.1f} MB and reconverted "
          f"in {convert_s:.1f} s; identical: {same}")
    if a.json:
        Path(a.json).write_text(json.dumps({"marks": marks, "rates": rates, "samples": rec.samples,
                                            "dropped": rec.dropped, "convert_s": convert_s,
                                            "identical": same, "sizes": sizes}, indent=2))


if __name__ == "__main__":
    main()
