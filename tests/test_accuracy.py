"""CPU-time accuracy: host calls, clocks, no lost time, the leaf bias (issue 4)."""

from __future__ import annotations

import os
import random
import time

import pytest
import wasmtime

import sigprof
from sigprof._resolve import OPAQUE, GuestFrame, _Resolver, tick_attribution, tick_function
from sigprof.frames import Function, ModuleSymbols
from sigprof._wasmtime.image import LiveImage

from conftest import (ROOT, effective_samples, link_host, needs_tick_record, share_tolerance,
                      stacks_by_name)

I32 = wasmtime.ValType.i32()


_jitter = random.Random(11)


def burn(n):
    # Each call does between n and 1.5 n steps: a workload whose cycle is a whole
    # number of kernel ticks locks every sample to the same phase of it (aliasing),
    # and one run then sees burn at 50% where the truth is ~75%.
    x = 0
    for i in range(n + _jitter.randrange(n // 2 + 1)):
        x += i * i


def nap(ms):
    time.sleep(ms / 1000)


def burn_unlinked(n):
    """The same work as burn, as a callable never given to Linker.define_func."""
    burn(n)


def _host_run(guest, clock="cpu", define="linker", rounds=12, spin=2_000_000, burn_n=150_000,
              nap_ms=0, **kwargs):
    """Run host.wat with burn/nap imports defined the way ``define`` says."""
    g = guest("host")
    store = wasmtime.Store(g.engine)
    linker = wasmtime.Linker(g.engine)
    ty = wasmtime.FuncType([I32], [])
    prof = sigprof.profile(store, modules=[("host", g.module)], clock=clock, **kwargs)
    if define == "linker":                          # before the profile starts
        linker.define_func("env", "burn", ty, burn)
        linker.define_func("env", "nap", ty, nap)
        inst = linker.instantiate(store, g.module)
        prof.start()
    else:                                           # Func objects made after it starts
        prof.start()
        inst = wasmtime.Instance(store, g.module, [wasmtime.Func(store, ty, burn_unlinked),
                                                   wasmtime.Func(store, ty, nap)])
    try:
        cpu0 = time.thread_time_ns()
        inst.exports(store)["run"](store, rounds, spin, burn_n, nap_ms)
        cpu = time.thread_time_ns() - cpu0
    finally:
        prof.stop()
    return prof, cpu


def _self_share(rec, predicate):
    total = part = 0
    for funcs, w in rec.iter_stacks():
        total += w
        if funcs and predicate(funcs):
            part += w
    return part / total if total else 0.0


@needs_tick_record
@pytest.mark.parametrize("define", ["linker", "func-after-start"])
def test_host_function_time_is_charged_to_the_host_under_its_caller(guest, define):
    prof, _ = _host_run(guest, define=define, rounds=40)     # ~300 ms of CPU: ~75 samples
    rec = prof.recording

    def burn_at(funcs):              # where burn is: the leaf, or above what it called
        return next((i for i, f in enumerate(funcs)
                     if f.kind == "host" and f.name.startswith("burn")), None)
    burn_stacks = [[f.name for f in funcs] for funcs, _ in rec.iter_stacks()
                   if burn_at(funcs) is not None]
    assert burn_stacks, "no sample landed in the host function"
    for names in burn_stacks:
        host = next(i for i, n in enumerate(names) if n.startswith("burn"))
        assert names[host - 1] == "caller"           # the wasm function that made the call
    share = _self_share(rec, lambda f: burn_at(f) is not None)
    # burn does most of the CPU work: >= 80% (0.87-0.96 measured, loaded machine).  One-
    # sided (share_tolerance): with ~80 effective samples 0.8 - (4.26 * sqrt(.8 * .2 / 80)
    # + 1/160) = 0.8 - 0.197 = 0.603; the bound is worked out from this run's own count.
    n = effective_samples(rec.sample_table.cpu_ns)
    assert share > 0.8 - share_tolerance(n, 0.8, sides=1), (share, n)
    labels = {f.name for funcs, _ in rec.iter_stacks() for f in funcs if f.kind == "host"}
    if define == "linker":                           # import names known from define_func
        assert "burn [env.burn]" in labels and labels <= {"burn [env.burn]", "nap [env.nap]"}
    else:
        # (nap may carry its import name: the same callable is linked by name elsewhere)
        assert "burn_unlinked" in labels and labels <= {"burn_unlinked", "nap", "nap [env.nap]"}


def test_no_cpu_time_is_lost_or_invented(guest):
    # Every nanosecond of the thread's CPU time while profiled is in exactly one place:
    # a sample, the profiler's own time, or the tail after the last tick.  How big the
    # last two are is a measured figure (benchmarks/accuracy.py, NOTES.md), not a test:
    # on a loaded machine the pure path's relay thread can be a few ticks late (a 9 ms
    # tail, 2.9% of this run, was seen), so a percentage bound fails for no fault.
    prof, cpu = _host_run(guest, rounds=50)
    meta = prof.meta
    sampled = sum(prof.recording.sample_table.cpu_ns)
    # The parts come from thread-CPU clock reads a few instructions apart around each
    # sample (~1 us in all seen), so the sum may miss or double a little per sample;
    # thread CPU time does not advance while the thread waits, so load cannot widen that.
    slack_ns = 50_000 * (prof.samples + 1)
    assert min(sampled, meta["overhead_cpu_ns"], meta["unsampled_cpu_ns"]) >= 0
    accounted = sampled + meta["overhead_cpu_ns"] + meta["unsampled_cpu_ns"]
    assert abs(accounted - meta["thread_cpu_ns"]) <= slack_ns, (accounted, meta["thread_cpu_ns"])
    assert cpu <= meta["thread_cpu_ns"] + slack_ns   # the profile covers the whole run
    assert sampled > cpu / 2, (sampled, cpu)         # and its samples most of it


def test_several_ticks_in_one_host_call_are_one_sample_carrying_their_weight(guest):
    from sigprof._timer import ManualTicks
    g = guest("host")
    store = wasmtime.Store(g.engine)
    ticks = ManualTicks()

    def busy(n):
        t0 = time.thread_time_ns()
        for _ in range(5):
            ticks.tick()                              # five ticks land in this one call
        while time.thread_time_ns() - t0 < 20_000_000:
            pass
    inst = link_host(store, g.module, burn=busy)
    with sigprof.profile(store, modules=[("host", g.module)], ticks=ticks) as prof:
        inst.exports(store)["run"](store, 1, 1000, 0, 0)
    rec = prof.recording
    assert rec.samples == 1
    assert rec.sample_table.ticks[0] == 5
    assert rec.sample_table.cpu_ns[0] >= 20_000_000     # the weight is the measured CPU


@needs_tick_record
def test_blocked_host_time_is_absent_in_cpu_mode_and_present_in_wall_mode(guest):
    def nap_weight_ns(rec):
        return sum(w for funcs, w in rec.iter_stacks()
                   if funcs and funcs[-1].kind == "host" and funcs[-1].name.startswith("nap"))
    # 10 rounds, each ~20 ms of CPU work and a 20 ms sleep: 200 ms blocked in all.
    prof, _ = _host_run(guest, clock="cpu", rounds=10, spin=6_000_000, burn_n=200_000, nap_ms=20)
    assert nap_weight_ns(prof.recording) < 15_000_000       # at most a stray tick, not 200 ms
    prof, _ = _host_run(guest, clock="wall", rounds=10, spin=6_000_000, burn_n=200_000, nap_ms=20)
    rec = prof.recording
    # Each 20 ms nap is charged to nap but for at most one 4 ms interval at its end
    # (the part after its last tick goes to the next sample): >= 10 * 16 ms.
    assert nap_weight_ns(rec) >= 160_000_000
    nap_stacks = [names for names, _ in stacks_by_name(rec) if names[-1].startswith("nap")]
    assert nap_stacks and all(names[-2] == "run" for names in nap_stacks)
    assert sum(w for _, w in rec.iter_stacks()) == sum(rec.sample_table.wall_ns)


def test_prof_mode_counts_system_time(guest, tmp_path):
    """A host function that spends its time in the kernel: only ITIMER_PROF ticks in it."""
    big = tmp_path / "zeros"
    big.write_bytes(bytes(1 << 20))

    def syscalls(n):
        fd = os.open(big, os.O_RDONLY)
        try:
            for _ in range(n):
                os.pread(fd, 1 << 20, 0)             # copies in the kernel: system time
        finally:
            os.close(fd)

    def share(clock):
        g = guest("host")
        store = wasmtime.Store(g.engine)
        inst = link_host(store, g.module, burn=syscalls)
        with sigprof.profile(store, modules=[("host", g.module)], clock=clock) as prof:
            inst.exports(store)["run"](store, 30, 3_000_000, 300, 0)
        rec = prof.recording
        return (_self_share(rec, lambda f: f[-1].kind == "host"),
                effective_samples(rec.sample_table.cpu_ns))
    (cpu_share, cpu_n), (prof_share, prof_n) = share("cpu"), share("prof")
    # Measured (loaded machine): the host's share 0.69-0.90 with the prof clock, 0-0.32
    # with the cpu clock (which sees only the user-mode part).  Claims: >= 0.6 and <= 0.35,
    # each one-sided at half the suite's rate (z = 4.42).  With ~36 effective samples (the
    # pure path's count): 0.6 - (4.42 * sqrt(.6 * .4 / 36) + 1/72) = 0.23; cpu: 0.35 +
    # 0.45 at ~24.
    assert prof_share > 0.6 - share_tolerance(prof_n, 0.6, sides=1, comparisons=2), (
        prof_share, prof_n)
    assert cpu_share < 0.35 + share_tolerance(cpu_n, 0.35, sides=1, comparisons=2), (
        cpu_share, cpu_n)


# --- the loop-free leaf ---------------------------------------------------------------

@pytest.fixture(scope="module")
def bias_module(engine):
    return wasmtime.Module.from_file(engine, str(ROOT / "benchmarks" / "bias.wat"))


def _leaf_share(engine, module, case, leaf, use_tick_pc):
    store = wasmtime.Store(engine)
    ex = wasmtime.Instance(store, module, []).exports(store)
    with sigprof.profile(store, modules=[("bias", module)], use_tick_pc=use_tick_pc) as prof:
        ex[case](store, 30_000_000)
    assert prof.samples >= 10
    return (_self_share(prof.recording, lambda f: f[-1].name == leaf),
            effective_samples(prof.recording.sample_table.cpu_ns))


@needs_tick_record
def test_tick_pc_removes_the_loop_free_leaf_bias(engine, bias_module):
    # Four one-sided claims, each at a quarter of the suite's rate (z = 4.57).  With ~90
    # effective samples a claim of 0.85 becomes > 0.85 - (4.57 * sqrt(.85 * .15 / 90)
    # + 1/180) = 0.67, one of 0.15 becomes < 0.33; each bound uses its run's own count.
    def below(case, leaf, tick_pc, claim):
        share, n = _leaf_share(engine, bias_module, case, leaf, tick_pc)
        assert share < claim + share_tolerance(n, claim, sides=1, comparisons=4), (share, n)

    def above(case, leaf, tick_pc, claim):
        share, n = _leaf_share(engine, bias_module, case, leaf, tick_pc)
        assert share > claim - share_tolerance(n, claim, sides=1, comparisons=4), (share, n)
    # hot: the leaf is ~90% of the loop's time (benchmarks/leaf_bias.py measures it);
    # without the tick PC it shows 0-10%, with it 0.91-1.0 (loaded machine).
    below("hot", "leaf_hot", False, 0.15)
    above("hot", "leaf_hot", True, 0.85)
    # cold: the leaf is ~10%; without the tick PC it shows 0.84-0.96, with it 0.09-0.23.
    above("cold", "leaf_light", False, 0.8)
    below("cold", "leaf_light", True, 0.25)


def at_tick(stack, resolver, tick_pc):
    """The stack at the tick: the tick frame on the outermost frames it keeps."""
    tick_frame = tick_function(resolver, tick_pc)
    kept = tick_attribution(stack, tick_frame) if tick_frame is not None else None
    if kept is None:
        return None
    return [tick_frame] + stack[len(stack) - kept:]


# at_tick, case by case, on a synthetic module: f(0..) with known checks.
FUNCS = (Function(0, 100, "a", 0, "wasm", (90,)),           # loop-free: one check (entry)
         Function(100, 100, "b", 1, "wasm", (80, 95)),      # one loop: entry, loop header
         Function(200, 100, "c", 2, "wasm", (70, 90)))
IMG = LiveImage(0x1000, 0x1000 + 300, ModuleSymbols("m", "0" * 64, 300, FUNCS), True)
RESOLVER = _Resolver([IMG])


def _frame(name, ret):
    f = next(f for f in FUNCS if f.name == name)
    return GuestFrame(IMG, f.start + ret, f)


def _names(stack):
    return [(e.function.name, e.offset - e.function.start) for e in stack]


def test_at_tick_leaf_at_a_loop_header_keeps_its_stack_with_the_exact_pc():
    stack = [_frame("b", 95), _frame("c", 10)]                       # leaf b, loop header
    out = at_tick(stack, RESOLVER, 0x1000 + 130)                      # tick in b
    assert _names(out) == [("b", 31), ("c", 10)]


def test_at_tick_callee_entered_after_the_tick_is_cut_back_to_the_caller():
    stack = [_frame("a", 90), _frame("b", 40), _frame("c", 10)]       # a at its entry check
    out = at_tick(stack, RESOLVER, 0x1000 + 150)                      # tick in b
    assert _names(out) == [("b", 51), ("c", 10)]


def test_at_tick_returned_callee_goes_under_a_loop_header_leaf():
    stack = [_frame("b", 95), _frame("c", 10)]                       # b at its loop header
    out = at_tick(stack, RESOLVER, 0x1000 + 20)                       # tick in a (returned)
    assert _names(out) == [("a", 21), ("b", 95), ("c", 10)]


def test_at_tick_returned_sibling_replaces_a_leaf_at_its_entry():
    stack = [_frame("b", 80), _frame("c", 10)]                       # b at its entry check
    out = at_tick(stack, RESOLVER, 0x1000 + 20)                       # tick in a
    assert _names(out) == [("a", 21), ("c", 10)]


def test_at_tick_leaves_stacks_alone_when_it_cannot_know():
    stack = [_frame("b", 95), _frame("c", 10)]
    assert at_tick(stack, RESOLVER, 0x9999) is None                   # tick outside the guest
    assert at_tick([OPAQUE] + stack, RESOLVER, 0x1000 + 20) is None  # leaf not allowed
    stale = [_frame("b", 95), _frame("c", 10)]                        # loop header, ancestor c
    assert at_tick(stale, RESOLVER, 0x1000 + 250) is None
    unknown = Function(0, 100, "a", 0, "wasm", ())
    img = LiveImage(0x1000, 0x1064, ModuleSymbols("m", "0" * 64, 100, (unknown,)), True)
    assert at_tick([GuestFrame(img, 50, unknown)], _Resolver([img]), 0x1000 + 20) is None
