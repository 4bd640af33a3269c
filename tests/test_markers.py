"""Timeline markers: host calls and guest calls of at least ``MARKER_MIN_NS``
(``sigprof/_markers.py``), named by the import and the export, kept in every
recording format and read by the Firefox Profiler's loader as interval markers."""

from __future__ import annotations

import dataclasses
import threading
import time

import wasmtime

import sigprof
from sigprof import _markers, _wasmtime as wt, profiler
from sigprof.defaults import MARKER_MIN_NS

from conftest import GUESTS

SLOW_CALLS = 5
SLOW_S = 0.002          # each slow host call sleeps this long: 40 times the threshold
SLOW = "slow [env.slow]"


def slow():
    time.sleep(SLOW_S)


def fast():
    pass


def instantiate(store):
    """The markers guest in ``store``, with its host functions; its start function runs."""
    store.set_epoch_deadline(wt.FAR_DEADLINE)       # it may run outside a profile
    linker = wasmtime.Linker(store.engine)
    unit = wasmtime.FuncType([], [])
    linker.define_func("env", "slow", unit, slow)
    linker.define_func("env", "fast", unit, fast)
    module = wasmtime.Module.from_file(store.engine, str(GUESTS / "markers.wat"))
    return linker.instantiate(store, module)


def check_markers(rec, thread_name="MainThread"):
    """One `run` guest call holding the slow host calls, each at least SLOW_S long."""
    threads = [t["name"] for t in rec.meta["threads"]]
    slow = [m for m in rec.markers if m.name == SLOW]
    runs = [m for m in rec.markers if m.kind == "guest call" and m.name == "run"]
    assert len(slow) == SLOW_CALLS and len(runs) == 1, rec.markers
    run = runs[0]
    for marker in slow:
        assert marker.kind == "host call" and threads[marker.thread] == thread_name
        assert marker.end_ns - marker.start_ns >= SLOW_S * 1e9
        assert run.start_ns <= marker.start_ns <= marker.end_ns <= run.end_ns
    # fast calls take microseconds: a few may pass the threshold on a loaded machine
    assert all(m.end_ns - m.start_ns >= MARKER_MIN_NS for m in rec.markers)
    assert [m.start_ns for m in rec.markers] == sorted(m.start_ns for m in rec.markers)


def test_store_profile_marks_slow_host_calls_and_the_guest_call(engine):
    store = wasmtime.Store(engine)
    run = instantiate(store).exports(store)["run"]
    with sigprof.profile(store) as prof:
        run(store, SLOW_CALLS)
    check_markers(prof.recording)


def test_storeless_profile_names_exports_fetched_before_it_and_instantiation(engine):
    store = wasmtime.Store(engine)
    run = instantiate(store).exports(store)["run"]     # fetched before the profile
    with sigprof.profile() as prof:
        run(store, SLOW_CALLS)
        other = wasmtime.Store(engine)
        instantiate(other)                  # its start function spins ~1 ms
    rec = prof.recording
    check_markers(rec)
    assert any(m.kind == "guest call" and m.name == _markers.INSTANTIATION
               for m in rec.markers), rec.markers


def test_markers_are_kept_on_the_thread_that_made_the_call(engine):
    store = wasmtime.Store(engine)
    run = instantiate(store).exports(store)["run"]
    with sigprof.profile() as prof:
        worker = threading.Thread(target=run, args=(store, SLOW_CALLS), name="worker")
        worker.start()
        worker.join()
    check_markers(prof.recording, thread_name="worker")


def test_markers_past_the_cap_are_counted(engine, monkeypatch):
    monkeypatch.setattr(profiler, "MarkerLog", lambda: _markers.MarkerLog(min_ns=0, capacity=3))
    store = wasmtime.Store(engine)
    run = instantiate(store).exports(store)["run"]
    with sigprof.profile(store) as prof:
        run(store, SLOW_CALLS)
    rec = prof.recording
    # every call is a marker now: 1 guest call, SLOW_CALLS slow and fast host calls
    assert len(rec.markers) == 3
    assert rec.meta["markers_dropped"] == 1 + 2 * SLOW_CALLS - 3


def test_markers_survive_the_raw_file_and_the_firefox_profile(engine, tmp_path):
    store = wasmtime.Store(engine)
    run = instantiate(store).exports(store)["run"]
    with sigprof.profile(store) as prof:
        run(store, SLOW_CALLS)
    rec = prof.recording
    for name in ("p.sigprof", "p.json.gz"):
        rec.save(tmp_path / name)
        back = sigprof.load(tmp_path / name)
        assert back.markers == rec.markers, name
    profile = rec.to_firefox()
    thread = profile["threads"][0]
    assert thread["markers"]["length"] == len(rec.markers)
    assert {s["name"] for s in profile["meta"]["markerSchema"]} == {"HostCall", "GuestCall"}


def test_a_recording_without_markers_is_written_as_before(guest, tmp_path):
    store, instance = guest("demo").instance()
    with sigprof.profile(store) as prof:
        instance.exports(store)["run"](store, 10)
    rec = dataclasses.replace(prof.recording, markers=())
    rec.save(tmp_path / "p.sigprof")
    assert (tmp_path / "p.sigprof").read_bytes()[8:12] == b"\x01\x00\x02\x00"   # 1.2
    assert rec.to_firefox()["meta"]["markerSchema"] == []


def test_every_marker_kind_has_a_firefox_schema():
    from sigprof.export import firefox
    from sigprof.recording import MARKER_KINDS
    assert set(firefox.MARKER_SCHEMAS) == set(firefox.MARKER_CATEGORY) == set(MARKER_KINDS)
