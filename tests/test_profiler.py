"""The core sampler on real guests: issue 2's statements, one test each."""

from __future__ import annotations

import json
import signal
import time

import pytest
import wasmtime

import sigprof
from sigprof import _native
from sigprof._timer import ITimerTicks, ManualTicks

from conftest import (EXAMPLES, effective_samples, link_host, run_python, share_tolerance,
                      stacks_by_name)


def test_deep_recursion_is_captured_whole_and_rooted_at_the_export(guest):
    g = guest("recursion")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("recursion", g.module)]) as prof:
        inst.exports(store)["rec"](store, 120, 250_000_000)
    assert prof.samples >= 10
    stacks = stacks_by_name(prof.recording)
    leaf_stacks = [names for names, _ in stacks if names[-1] == "leaf"]
    assert leaf_stacks, "no sample landed in the leaf loop"
    for names in leaf_stacks:
        assert names == ["rec"] * 121 + ["leaf"]      # rec(120) .. rec(0), then leaf
    assert prof.recording.truncated == 0


def test_stack_deeper_than_a_slot_is_marked_truncated(guest):
    g = guest("recursion")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("recursion", g.module)], max_depth=48) as prof:
        inst.exports(store)["rec"](store, 120, 150_000_000)
    rec = prof.recording
    assert rec.truncated > 0
    truncated = [names for names, _ in stacks_by_name(rec) if names[0] == "(truncated stack)"]
    assert truncated and all(n[-1] == "leaf" for n in truncated)
    names = json.dumps(prof.to_firefox()["shared"]["stringArray"])
    assert "(truncated stack)" in names


@pytest.mark.parametrize("explicit", [True, False], ids=["modules-given", "discovered"])
def test_two_modules_with_the_same_function_names_stay_apart(guest, engine, explicit):
    a, b = guest("twin_a"), guest("twin_b")
    store = wasmtime.Store(engine)
    _, ia = a.instance(store)
    _, ib = b.instance(store)
    modules = [("twin_a", a.module), ("twin_b", b.module)] if explicit else None
    with sigprof.profile(store, modules=modules) as prof:
        ia.exports(store)["run"](store, 80_000_000)
        ib.exports(store)["run"](store, 160_000_000)
    rec = prof.recording
    works = {(f.module, f.key) for funcs, _ in rec.iter_stacks() for f in funcs if f.name == "work"}
    assert {m for m, _ in works} == {"twin_a", "twin_b"}
    assert len({k for _, k in works}) == 2
    by_module = {}
    for funcs, w in rec.iter_stacks():
        if funcs and funcs[-1].name == "work":
            by_module[funcs[-1].module] = by_module.get(funcs[-1].module, 0) + w
    assert by_module["twin_b"] > by_module["twin_a"]      # b did twice the work
    profile = prof.to_firefox()
    shared = profile["shared"]
    strings = shared["stringArray"]
    work_funcs = [i for i in range(shared["funcTable"]["length"])
                  if strings[shared["funcTable"]["name"][i]] == "work"]
    assert len(work_funcs) == 2
    resources = {shared["funcTable"]["resource"][i] for i in work_funcs}
    assert len(resources) == 2
    assert {strings[shared["resourceTable"]["name"][r]] for r in resources} == {"twin_a", "twin_b"}
    assert sorted(lib["name"] for lib in profile["libs"]) == ["twin_a", "twin_b"]


def test_cpu_deltas_add_up_to_the_threads_cpu_time(guest):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("demo", g.module)]) as prof:
        before = time.thread_time_ns()
        inst.exports(store)["run"](store, 8)
        measured = time.thread_time_ns() - before
    meta = prof.meta
    sampled = sum(prof.recording.sample_table.cpu_ns)
    # As in test_accuracy's no-CPU-lost: samples + the profiler's own time + the tail
    # after the last tick are the thread's CPU time, up to the clock reads' slack.
    slack_ns = 50_000 * (prof.samples + 1)
    accounted = sampled + meta["overhead_cpu_ns"] + meta["unsampled_cpu_ns"]
    assert abs(accounted - meta["thread_cpu_ns"]) <= slack_ns
    assert sampled <= measured + slack_ns and sampled > measured / 2, (sampled, measured)
    # Each delta is measured, not assumed from the interval: they vary.
    deltas = list(prof.recording.sample_table.cpu_ns)
    assert len(set(deltas)) > 1
    profile = prof.to_firefox()
    assert profile["meta"]["sampleUnits"]["threadCPUDelta"] == "µs"
    cpu_us = sum(profile["threads"][0]["samples"]["threadCPUDelta"])
    assert abs(cpu_us * 1000 - sampled) <= 1000 * len(deltas)     # whole microseconds each


def test_reference_demo_has_the_reference_shape(guest):
    """Same guest as ../shared/reference: run -> hot_loop ~77%, cold_loop ~19%, fib ~4%."""
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("demo.wasm", g.module)]) as prof:
        inst.exports(store)["run"](store, 24)
    total = {}
    for funcs, w in prof.recording.iter_stacks():
        for f in {f.name for f in funcs}:
            total[f] = total.get(f, 0) + w
    whole = total["run"]
    n = effective_samples(prof.recording.sample_table.cpu_ns)
    # Three claims at 1/3000 each: cold_loop 19% (two-sided, z = 3.59), fib <= 10% and
    # hot_loop >= 90% (one-sided, z = 3.43).  At ~160 effective samples: 19% +- 11.4
    # points (3.59 * sqrt(.19 * .81 / 160) + 1/320), fib < 18.4%, hot_loop > 81.6%.
    assert abs(total["cold_loop"] / whole - 0.19) < share_tolerance(n, 0.19, comparisons=3), n
    assert total.get("fib", 0) / whole < 0.1 + share_tolerance(n, 0.1, sides=1, comparisons=3)
    # hot_loop is reached directly and via cold_loop
    assert total["hot_loop"] / whole > 0.9 - share_tolerance(n, 0.9, sides=1, comparisons=3)


def test_signal_timer_and_callback_restored_after_normal_exit(guest):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store) as prof:
        inst.exports(store)["fib"](store, 25)
    # The store is usable afterwards, unprofiled, and ticks are gone: epoch bumps
    # (another profile's, say) neither trap it nor reach a callback of ours.
    for _ in range(5):
        store.engine.increment_epoch()
    assert inst.exports(store)["fib"](store, 20) == 6765
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
    assert prof.recording is not None and prof.meta["ticks"] >= prof.samples


def test_restored_after_an_exception_in_the_block(guest):
    g = guest("demo")
    store, inst = g.instance()

    class Boom(Exception):
        pass
    prof = sigprof.profile(store)
    with pytest.raises(Boom):
        with prof:
            inst.exports(store)["run"](store, 1)
            raise Boom()
    assert prof.samples > 0
    prof.to_firefox()


def test_restored_after_keyboard_interrupt_in_the_block(guest):
    g = guest("demo")
    store, inst = g.instance()
    prof = sigprof.profile(store)
    with pytest.raises(KeyboardInterrupt):
        with prof:
            inst.exports(store)["fib"](store, 24)
            raise KeyboardInterrupt
    assert prof.recording is not None


def test_engine_without_epoch_interruption_gets_a_clear_value_error(guest):
    plain = wasmtime.Engine()
    store = wasmtime.Store(plain)
    with pytest.raises(ValueError, match="epoch interruption.*sigprof.engine"):
        sigprof.profile(store).start()


def test_second_profile_on_the_same_store_raises_runtime_error(guest):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store):
        with pytest.raises(RuntimeError, match="already being profiled"):
            sigprof.profile(store).start()
        inst.exports(store)["fib"](store, 15)


def test_bad_arguments_are_refused_up_front(guest, engine):
    store = wasmtime.Store(engine)
    with pytest.raises(ValueError, match="clock"):
        sigprof.profile(store, clock="gpu")
    with pytest.raises(ValueError, match="interval"):
        sigprof.profile(store, interval=0)
    with pytest.raises(ValueError, match="capacity"):
        sigprof.profile(store, capacity=0)
    with pytest.raises(ValueError, match="when_full"):
        sigprof.profile(store, when_full="oldest")
    with pytest.raises(TypeError, match="modules"):
        sigprof.profile(store, modules=["not a module"])
    with pytest.raises(TypeError, match="Store"):
        sigprof.profile("store")


def test_result_before_the_end_is_a_clear_error(guest):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store) as prof:
        with pytest.raises(RuntimeError, match="still running"):
            prof.to_firefox()
        inst.exports(store)["fib"](store, 10)


@pytest.mark.parametrize("relay", ["native", "wakeup"])
def test_both_relays_drive_samples_from_signals(guest, relay):
    if relay == "native" and not _native.available():
        pytest.skip("no native relay on this machine")
    g = guest("demo")
    store, inst = g.instance()
    ticks = ITimerTicks("cpu", 0.001, relay=relay)
    with sigprof.profile(store, modules=[("demo", g.module)], ticks=ticks) as prof:
        inst.exports(store)["run"](store, 8)          # ~230 ms of CPU: ~57 ticks
    assert prof.meta["relay"] == relay
    assert prof.samples >= 20
    assert prof.meta["ticks"] >= prof.samples


# --- the ring: fixed capacity, chosen behaviour when full --------------------------

def _run_manual(guest, ticks_to_send, **kwargs):
    """Profile with a manual tick source: a host function ticks between wasm work."""
    g = guest("host")
    store = wasmtime.Store(g.engine)
    ticks = ManualTicks()
    sent = [0]

    def burn(n):
        if sent[0] < ticks_to_send:
            ticks.tick()
            sent[0] += 1

    inst = link_host(store, g.module, burn=burn)
    with sigprof.profile(store, modules=[("host", g.module)], ticks=ticks, **kwargs) as prof:
        inst.exports(store)["run"](store, ticks_to_send + 5, 1000, 1, 0)
    return prof


def test_ring_keeps_the_newest_samples_and_counts_the_dropped(guest):
    prof = _run_manual(guest, 50, capacity=16)
    assert prof.samples == 16
    assert prof.dropped == 34
    times = list(prof.recording.sample_table.time_ns)
    assert times == sorted(times)


def test_ring_can_stop_when_full(guest):
    prof = _run_manual(guest, 50, capacity=16, when_full="stop")
    assert prof.samples == 16
    assert prof.dropped == 34


def test_every_tick_is_one_sample_with_a_manual_source(guest):
    prof = _run_manual(guest, 30)
    assert prof.samples == 30 and prof.dropped == 0
    # The tick arrived inside the host function: each sample is charged to it.
    for names, _ in stacks_by_name(prof.recording):
        assert names[-1] == "burn [env.burn]"


def test_a_profile_with_zero_samples_is_still_valid(guest, tmp_path):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, ticks=ManualTicks()) as prof:
        inst.exports(store)["fib"](store, 5)
    assert prof.samples == 0
    profile = prof.to_firefox()
    assert profile["threads"][0]["samples"]["length"] == 0
    prof.save(tmp_path / "empty.json")
    prof.save(tmp_path / "empty.sigprof")
    assert sigprof.load(tmp_path / "empty.sigprof").samples == 0


# --- outputs --------------------------------------------------------------------

def test_firefox_frames_show_function_and_module(guest):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("demo.wasm", g.module)]) as prof:
        inst.exports(store)["run"](store, 3)
    profile = prof.to_firefox()
    shared = profile["shared"]
    strings = shared["stringArray"]
    names = {strings[n] for n in shared["funcTable"]["name"]}
    assert {"run", "hot_loop", "cold_loop"} <= names
    assert [lib["name"] for lib in profile["libs"]] == ["demo.wasm"]
    assert profile["meta"]["preprocessedProfileVersion"] == 70
    # Addresses are module-relative (small), never host addresses.
    addresses = [a for a in shared["frameTable"]["address"] if a >= 0]
    assert addresses and max(addresses) < 1 << 20
    sample_weights = profile["threads"][0]["samples"]["weight"]
    assert profile["threads"][0]["samples"]["weightType"] == "tracing-ms"
    assert abs(sum(sample_weights) - sum(prof.recording.sample_table.cpu_ns) / 1e6) < 0.01


def test_raw_recording_converts_the_same_in_a_fresh_process(guest, tmp_path):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("demo", g.module)]) as prof:
        inst.exports(store)["run"](store, 2)
    raw = tmp_path / "run.sigprof"
    prof.save(raw)
    code = ("import json, sys, sigprof; r = sigprof.load(sys.argv[1]); "
            "print(json.dumps({'ff': r.to_firefox(), 'samples': r.samples, 'dropped': r.dropped}))")
    out = run_python(code, str(raw))
    assert out.returncode == 0, out.stderr
    other = json.loads(out.stdout)
    assert other["samples"] == prof.samples and other["dropped"] == prof.dropped
    assert other["ff"] == json.loads(json.dumps(prof.to_firefox()))


@pytest.mark.parametrize("suffix", [".json", ".json.gz", ".sigprof", ".collapsed", ".txt"])
def test_save_picks_the_format_from_the_suffix(guest, tmp_path, suffix):
    import gzip
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("demo", g.module)]) as prof:
        inst.exports(store)["run"](store, 1)
    path = tmp_path / f"out{suffix}"
    prof.save(path)
    data = path.read_bytes()
    if suffix == ".json":
        assert json.loads(data)["meta"]["preprocessedProfileVersion"] == 70
    elif suffix == ".json.gz":
        assert json.loads(gzip.decompress(data))["meta"]["importedFrom"] == "sigprof"
    elif suffix == ".sigprof":
        assert data.startswith(b"SIGPROF\x1a")
    elif suffix == ".collapsed":
        lines = data.decode().splitlines()
        assert all(int(line.rsplit(" ", 1)[1]) > 0 for line in lines)
        assert any("demo!run;demo!" in line for line in lines)
    else:
        assert "Top 10 functions by self CPU time" in data.decode()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]   # no temporary left behind


def test_saved_files_get_the_usual_permissions(guest, tmp_path):
    import os
    import stat
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, ticks=ManualTicks()) as prof:
        inst.exports(store)["fib"](store, 5)
    old = os.umask(0o022)
    try:
        prof.save(tmp_path / "new.json")
        assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644
        (tmp_path / "kept.txt").write_text("x")
        os.chmod(tmp_path / "kept.txt", 0o640)
        prof.save(tmp_path / "kept.txt")
        assert stat.S_IMODE((tmp_path / "kept.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_unknown_suffix_is_refused_and_writes_nothing(guest, tmp_path):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, ticks=ManualTicks()) as prof:
        inst.exports(store)["fib"](store, 5)
    with pytest.raises(ValueError, match="cannot tell the output format"):
        prof.save(tmp_path / "out.pdf")
    assert list(tmp_path.iterdir()) == []


def test_ticks_landing_in_another_busy_thread_do_not_hurt(guest):
    """ITIMER_VIRTUAL is process-wide: a busy Python thread takes ticks too."""
    g = guest("demo")
    store, inst = g.instance()
    stop = []

    def busy():
        x = 0
        while not stop:
            x += 1
    other = __import__("threading").Thread(target=busy)
    other.start()
    try:
        with sigprof.profile(store, modules=[("demo", g.module)]) as prof:
            inst.exports(store)["run"](store, 4)
    finally:
        stop.append(True)
        other.join()
    assert prof.samples > 0
    # The busy thread's CPU is not the profiled thread's: weights stay the guest's.
    assert sum(prof.recording.sample_table.cpu_ns) <= prof.meta["thread_cpu_ns"]


def test_sampling_allocates_nothing_that_grows_with_the_sample_count(guest):
    """The hot path writes integers into preallocated arrays; memory stays put."""
    import tracemalloc
    g = guest("host")
    store = wasmtime.Store(g.engine)
    ticks = ManualTicks()
    inst = link_host(store, g.module, burn=lambda n: ticks.tick())
    run = inst.exports(store)["run"]
    with sigprof.profile(store, modules=[("host", g.module)], ticks=ticks, capacity=5000) as prof:
        run(store, 50, 1000, 1, 0)                       # warm up every path
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        run(store, 2000, 1000, 1, 0)                     # 2000 more samples
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
    assert prof.samples == 2050
    grown = sum(s.size_diff for s in after.compare_to(before, "filename")
                if "sigprof" in s.traceback[0].filename)
    assert grown < 4096, grown                            # not ~bytes per sample


def test_a_failed_save_leaves_the_previous_file_whole(guest, tmp_path, monkeypatch):
    from sigprof import export
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store) as prof:
        inst.exports(store)["run"](store, 1)
    path = tmp_path / "run.json"
    prof.save(path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")                        # the rename never happens
    monkeypatch.setattr(export.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        prof.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_wasmtimes_own_guestprofiler_runs_as_the_benchmarks_reference(guest):
    from guestprofiler import NativeGuestProfiler
    g = guest("demo")
    store = wasmtime.Store(g.engine)
    run = wasmtime.Instance(store, g.module, []).exports(store)["run"]
    gp = NativeGuestProfiler(g.engine, "demo", [("demo.wasm", g.module)])
    gp.run(store, lambda: run(store, 2))
    profile = json.loads(gp.finish())
    assert profile["meta"]["preprocessedProfileVersion"] == 55
    thread = profile["threads"][0]
    assert thread["samples"]["length"] > 10
    assert "hot_loop" in thread["stringArray"]
    assert run(store, 1) != 0            # the store is usable afterwards


def test_modules_may_be_bare_module_objects_named_by_their_name_section(guest):
    g = guest("recursion")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[g.module]) as prof:
        inst.exports(store)["rec"](store, 5, 60_000_000)
    assert [m.name for m in prof.recording.modules] == ["recursion"]


def test_engine_accepts_a_config_and_turns_epoch_interruption_on():
    config = wasmtime.Config()
    config.cranelift_opt_level = "speed"
    engine = sigprof.engine(config)
    module = wasmtime.Module.from_file(engine, str(EXAMPLES / "demo.wat"))
    store = wasmtime.Store(engine)
    run = wasmtime.Instance(store, module, []).exports(store)["run"]
    with sigprof.profile(store) as prof:
        run(store, 2)
    assert prof.samples > 0
    with pytest.raises(TypeError, match="Config"):
        sigprof.engine("fast")
