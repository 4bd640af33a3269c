"""Memory tracks: the process's resident set and the guest's linear memory at each sample,
as counters the Firefox Profiler draws (issue 13.3)."""

from __future__ import annotations

import json

import pytest
import wasmtime

import sigprof

from conftest import cli_env, run_cli

PAGE = 65536
GROW_WAT = """
(module $grower
  (memory (export "memory") 1)
  ;; Spin, growing the memory by a page every `every` iterations, `pages` times.
  (func $grow_while_spinning (export "run") (param $pages i32) (param $every i32)
    (local $i i32)
    (loop $outer
      (local.set $i (i32.const 0))
      (loop $inner
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $inner (i32.lt_u (local.get $i) (local.get $every))))
      (drop (memory.grow (i32.const 1)))
      (local.set $pages (i32.sub (local.get $pages) (i32.const 1)))
      (br_if $outer (local.get $pages)))))
"""


def _profile_growth(path: str, monkeypatch):
    if path == "native" and not sigprof._native.available():
        pytest.skip("the native capture is not in use here")
    if path == "python":
        monkeypatch.setenv("SIGPROF_PURE_PYTHON", "1")
    engine = sigprof.engine()
    module = wasmtime.Module(engine, GROW_WAT)
    store = wasmtime.Store(engine)
    exports = wasmtime.Instance(store, module, []).exports(store)
    memory = exports["memory"]
    with sigprof.profile(store, modules=[("grower", module)], clock="wall", interval=0.0005,
                         memories=[memory]) as prof:
        exports["run"](store, 40, 2_000_000)        # 40 pages over ~0.1-0.2 s
    assert prof.meta["capture"] == path
    return prof.recording


@pytest.mark.parametrize("path", ["native", "python"])
def test_each_sample_records_resident_and_guest_memory(path, monkeypatch):
    rec = _profile_growth(path, monkeypatch)
    st = rec.sample_table
    assert rec.samples > 20 and len(st.rss_bytes) == len(st.memory_bytes) == rec.samples
    assert all(v > 10 * 2**20 for v in st.rss_bytes)             # a Python process: > 10 MB
    memory = list(st.memory_bytes)
    assert memory == sorted(memory)                                # it only grows
    assert PAGE <= memory[0] and memory[-1] <= 41 * PAGE and memory[-1] - memory[0] >= 20 * PAGE


def test_the_firefox_profile_carries_both_as_memory_counters(monkeypatch, tmp_path,
                                                             firefox_profiler_cli):
    rec = _profile_growth("native" if sigprof._native.available() else "python", monkeypatch)
    counters = {c["name"]: c for c in rec.to_firefox()["counters"]}
    assert set(counters) == {"Resident memory", "Guest linear memory"}
    guest = counters["Guest linear memory"]
    assert guest["category"] == "Memory" and guest["display"]["graphType"] == "line-accumulated"
    running, accumulated = 0, []
    for delta in guest["samples"]["count"]:                        # changes since the last
        running += delta
        accumulated.append(running)
    assert accumulated == list(rec.sample_table.memory_bytes)
    # And the Firefox Profiler's own loader reads them as its memory tracks.
    rec.save(tmp_path / "m.json")
    listed = firefox_profiler_cli.query(tmp_path / "m.json", "counter", "list")["counters"]
    by_name = {c["name"]: c for c in listed}
    assert set(by_name) == {"Resident memory", "Guest linear memory"}
    graph = by_name["Guest linear memory"]["graph"]
    assert by_name["Guest linear memory"]["graphType"] == "line-accumulated"
    assert graph == sorted(graph) and graph[-1] > graph[0]         # drawn rising


def test_record_measures_the_modules_exported_memory(tmp_path):
    (tmp_path / "grow.wat").write_text(GROW_WAT)
    out = run_cli("record", "-o", "g.json", "--clock", "wall", "--interval", "0.5ms", "--invoke",
                  "run", "--arg", "30", "--arg", "2000000", "grow.wat", cwd=tmp_path,
                  env=cli_env(XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert out.returncode == 0, out.stderr
    names = [c["name"] for c in json.loads((tmp_path / "g.json").read_text())["counters"]]
    assert names == ["Resident memory", "Guest linear memory"]
