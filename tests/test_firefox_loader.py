"""Our profiles, loaded by the Firefox Profiler's own code.

``@firefox-devtools/profiler-cli`` (npm) bundles the profiler's loader: the
processed-profile upgraders (it is at version 75, so our version 70 goes
through its 71..75 upgraders) and the call-tree computation.  If our shape
of version 70 were wrong anywhere the upgraders read, its call tree would not
match ours.  ``.ci/run`` installs it; locally the test skips without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

import sigprof

from conftest import link_host, needs_tick_record


@pytest.fixture(scope="module")
def profiler_cli(firefox_profiler_cli):
    def functions(path: Path) -> dict:
        """The selected thread's functions, by name with library."""
        data = firefox_profiler_cli.query(path, "thread", "functions", "--limit", "0")
        return {f["nameWithLibrary"]: f for f in data["functions"]}
    functions.threads = lambda path: firefox_profiler_cli.query(  # type: ignore
        path, "thread", "list")["threads"]
    return functions


def _our_totals(rec):
    self_ms, total_ms = {}, {}
    for funcs, w in rec.iter_stacks():
        names = [f"{f.module}!{f.name}" if f.kind in ("wasm", "py") else
                 f"Python host!{f.name}" if f.kind == "host" else f.name for f in funcs]
        if names:
            self_ms[names[-1]] = self_ms.get(names[-1], 0) + w / 1e6
        for n in set(names):
            total_ms[n] = total_ms.get(n, 0) + w / 1e6
    return self_ms, total_ms


def test_the_firefox_loader_computes_our_call_tree(profiler_cli, guest, tmp_path):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("demo.wasm", g.module)]) as prof:
        inst.exports(store)["run"](store, 4)
    path = tmp_path / "demo.json"
    prof.save(path)
    theirs = profiler_cli(path)
    self_ms, total_ms = _our_totals(prof.recording)
    assert set(theirs) == set(total_ms)
    for name, f in theirs.items():
        assert f["selfSamples"] == pytest.approx(self_ms.get(name, 0), abs=0.01)
        assert f["totalSamples"] == pytest.approx(total_ms[name], abs=0.01)


@needs_tick_record
def test_the_firefox_loader_reads_host_frames_twins_and_truncation(profiler_cli, guest, engine,
                                                                    tmp_path):
    a, b, host, rec = guest("twin_a"), guest("twin_b"), guest("host"), guest("recursion")
    store = wasmtime.Store(engine)
    ih = link_host(store, host.module)
    ia = wasmtime.Instance(store, a.module, [])
    ib = wasmtime.Instance(store, b.module, [])
    ir = wasmtime.Instance(store, rec.module, [])
    with sigprof.profile(store, max_depth=40) as prof:
        ia.exports(store)["run"](store, 60_000_000)
        ib.exports(store)["run"](store, 60_000_000)
        ih.exports(store)["run"](store, 10, 3_000_000, 100_000, 0)
        ir.exports(store)["rec"](store, 60, 60_000_000)
    path = tmp_path / "mixed.json.gz"
    prof.save(path)
    plain = tmp_path / "mixed.json"
    import gzip
    plain.write_bytes(gzip.decompress(path.read_bytes()))
    theirs = profiler_cli(plain)
    assert "twin_a!work" in theirs and "twin_b!work" in theirs
    assert "Python host!busy_python [env.burn]" in theirs, sorted(theirs)
    assert "(truncated stack)" in theirs
    self_ms, total_ms = _our_totals(prof.recording)
    for name, f in theirs.items():
        assert f["totalSamples"] == pytest.approx(total_ms[name], abs=0.01), name


def test_the_firefox_loader_accepts_a_profile_with_no_samples(profiler_cli, guest, tmp_path):
    from sigprof._timer import ManualTicks
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, ticks=ManualTicks()) as prof:
        inst.exports(store)["fib"](store, 5)
    path = tmp_path / "empty.json"
    prof.save(path)
    assert profiler_cli(path) == {}


def test_the_firefox_loader_sees_one_thread_per_os_thread_with_its_cpu(profiler_cli, guest,
                                                                       tmp_path):
    g = guest("twin_a")

    def worker():
        store, inst = g.instance()
        inst.exports(store)["run"](store, 150_000_000)
    import threading
    with sigprof.profile() as prof:
        threads = [threading.Thread(target=worker, name=f"w{i}") for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    path = tmp_path / "threads.json"
    prof.save(path)
    theirs = {t["name"]: t["cpuMs"] for t in profiler_cli.threads(path)}
    ours = prof.recording.cpu_ns_by_thread()
    # The main thread's own Python time (starting and joining) may be sampled too.
    assert {"w0", "w1"} <= set(theirs) == set(ours) <= {"w0", "w1", "MainThread"}
    for name, cpu_ms in theirs.items():
        assert cpu_ms == pytest.approx(ours[name] / 1e6, abs=0.1)


def test_the_firefox_loader_reads_host_and_guest_call_markers(firefox_profiler_cli, engine,
                                                              tmp_path):
    from test_markers import SLOW, SLOW_CALLS, SLOW_S, instantiate
    store = wasmtime.Store(engine)
    run = instantiate(store).exports(store)["run"]
    with sigprof.profile(store) as prof:
        run(store, SLOW_CALLS)
    path = tmp_path / "markers.json.gz"
    prof.save(path)
    found = firefox_profiler_cli.query(path, "thread", "markers")
    by_name = {group["markerName"]: group for group in found["byType"]}
    assert by_name[SLOW]["count"] == SLOW_CALLS and by_name[SLOW]["isInterval"]
    assert by_name[SLOW]["durationStats"]["min"] >= SLOW_S * 1e3
    assert by_name["run"]["count"] == 1
    categories = {c["categoryName"]: c["count"] for c in found["byCategory"]}
    assert categories["WebAssembly"] == 1 and categories["Python host"] >= SLOW_CALLS
