"""After the run: conversion and report times on big and deep recordings.

    python benchmarks/conversion.py [--samples 1000000] [--repeat 3] [--json out.json]

* A million samples of a 30-deep workload: a recording built by hand (a
  100-function module, 2,000 distinct 30-deep stacks drawn from a fixed seed,
  samples spread over them) is saved as Firefox JSON, as raw ``.sigprof`` and
  as pprof (their sizes printed), and reported.  A reference measured in the same run: ``json.dumps`` of a list of
  ``--samples`` floats, so a slower machine is visible as a larger reference.
* A real 3000-deep recording (the recursion guest, 1 s at 2 kHz wall clock):
  ``Recording.report()`` and ``sigprof report`` on its raw file.

Each time is the median of ``--repeat`` runs, with min-max.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Callable, Dict, List

import wasmtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import sigprof  # noqa: E402
from sigprof.frames import FRAME_GUEST, Frame  # noqa: E402
from sigprof.recording import Recording, SampleTable  # noqa: E402
from sigprof.frames import Function, ModuleSymbols  # noqa: E402


def synthetic(samples: int, depth: int = 30, functions: int = 100, stacks: int = 2000) -> Recording:
    rnd = random.Random(1)
    funcs = tuple(Function(64 * i, 64, f"function_{i}", i, "wasm", (5,)) for i in range(functions))
    module = ModuleSymbols("synthetic", "0" * 64, 64 * functions, funcs)
    frames = tuple(Frame(FRAME_GUEST, 0, 64 * i + 9) for i in range(functions))
    parent, frame = array("i"), array("i")
    index: Dict[tuple, int] = {}
    leaves = []
    for _ in range(stacks):
        node = -1
        for level in range(depth):
            f = rnd.randrange(functions) if level > 3 else level      # shared roots
            key = (node, f)
            if key not in index:
                index[key] = len(frame)
                parent.append(node)
                frame.append(f)
            node = index[key]
        leaves.append(node)
    table = SampleTable(array("q", range(0, samples * 1000, 1000)), array("q", [1000]) * samples,
                        array("q", [1000]) * samples,
                        array("i", (leaves[rnd.randrange(stacks)] for _ in range(samples))),
                        array("i", [1]) * samples, array("B", [0]) * samples)
    meta = {"clock": "cpu", "interval_s": 0.001, "name": "synthetic", "duration_ns": samples * 1000}
    return Recording(meta=meta, modules=(module,), host_functions=(), frames=frames,
                     stack_parent=parent, stack_frame=frame, sample_table=table)


def deep(depth: int = 3000, seconds: float = 1.0) -> Recording:
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, str(ROOT / "tests" / "guests" / "recursion.wat"))
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(sigprof.FAR_DEADLINE)
    rec = wasmtime.Instance(store, module, []).exports(store)["rec"]
    t0 = time.perf_counter()
    rec(store, depth, 10_000_000)
    spin = int(10_000_000 * seconds / (time.perf_counter() - t0))
    with sigprof.profile(store, modules=[("recursion", module)], clock="wall",
                         interval=0.0005) as prof:
        rec(store, depth, spin)
    assert prof.recording is not None
    return prof.recording


def timed(fn: Callable[[], object], repeat: int) -> List[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def line(label: str, runs: List[float]) -> dict:
    med = statistics.median(runs)
    print(f"  {label:<44} {med:8.3f} s  ({min(runs):.3f}-{max(runs):.3f})")
    return {"what": label, "median_s": med, "min_s": min(runs), "max_s": max(runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        big = synthetic(a.samples)
        floats = [0.001] * a.samples
        print(f"{a.samples} samples, 30 deep, {len(big.stack_frame)} stack nodes:")
        rows.append(line("reference: json.dumps of as many floats",
                         timed(lambda: json.dumps(floats), a.repeat)))
        rows.append(line("save Firefox JSON (.json)", timed(lambda: big.save(out / "big.json"),
                                                             a.repeat)))
        rows.append(line("save raw (.sigprof)", timed(lambda: big.save(out / "big.sigprof"),
                                                      a.repeat)))
        rows.append(line("save pprof (.pb.gz)", timed(lambda: big.save(out / "big.pb.gz"),
                                                      a.repeat)))
        for name in ("big.json", "big.sigprof", "big.pb.gz"):
            size = (out / name).stat().st_size
            print(f"  size of {name:<38} {size / 1e6:8.2f} MB")
            rows.append({"what": f"size of {name}", "bytes": size})
        rows.append(line("load raw", timed(lambda: sigprof.load(out / "big.sigprof"), a.repeat)))
        rows.append(line("report", timed(big.report, a.repeat)))
        rec = deep()
        rec.save(out / "deep.sigprof")
        print(f"3000-deep recording, {rec.samples} samples:")
        rows.append(line("Recording.report()", timed(rec.report, a.repeat)))
        rows.append(line("sigprof report deep.sigprof (a process)", timed(
            lambda: subprocess.run([sys.executable, "-m", "sigprof", "report",
                                    str(out / "deep.sigprof")], check=True, cwd=ROOT,
                                   capture_output=True), a.repeat)))
        rows.append(line("save Firefox JSON", timed(lambda: rec.save(out / "deep.json"),
                                                    a.repeat)))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
