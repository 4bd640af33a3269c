"""The resolver's phases, each on synthetic samples and a synthetic module image:
no store, no ring, no wasmtime call (issue 19, item 1: resolve in phases)."""

from __future__ import annotations

from array import array

from sigprof import _resolve
from sigprof._markers import GUEST_CALL, HOST_CALL
from sigprof._ring import MARK_ENTRY, MARK_HOST, ORIGIN_GUEST, ORIGIN_OUTSIDE, RawSample
from sigprof.frames import (FRAME_GUEST, FRAME_HOST, FRAME_OPAQUE, FRAME_PYTHON, FRAME_TRUNCATED,
                            ROLE_ENTRY, ROLE_WASM, Function, ModuleSymbols)
from sigprof._wasmtime.image import LiveImage

TEXT = 0x10000                      # where the synthetic images' code sits
OTHER = 0x40000
# Offsets in .text: an entry trampoline, then guest functions "outer" and "leaf".
FUNCTIONS = (Function(0x000, 0x40, "trampoline", -1, ROLE_ENTRY),
             Function(0x100, 0x80, "outer", 0, ROLE_WASM),
             Function(0x200, 0x80, "leaf", 1, ROLE_WASM))
APP = LiveImage(TEXT, TEXT + 0x1000, ModuleSymbols("app", "d", 0x1000, FUNCTIONS), True)
HIDDEN = LiveImage(OTHER, OTHER + 0x1000, ModuleSymbols("hidden", "e", 0x1000, FUNCTIONS), False)
IN_LEAF, IN_OUTER, IN_TRAMPOLINE = TEXT + 0x210, TEXT + 0x110, TEXT + 0x010


def sample(pcs, *, origin=ORIGIN_GUEST, limited=False, tid=7, entry=0, stack_hash=None):
    words = array("Q", pcs)
    return RawSample(time_ns=0, cpu_ns=1000, wall_ns=1000, origin=origin, ticks=1,
                     pcs=memoryview(words), depth_limited=limited, tid=tid, entry=entry,
                     stack_hash=hash(tuple(pcs)) if stack_hash is None else stack_hash)


def test_equal_stacks_are_one_distinct_stack():
    one, other = [IN_LEAF, IN_OUTER], [IN_OUTER]
    stacks = _resolve.distinct_stacks([sample(one), sample(other), sample(one)])
    assert list(stacks.of_sample) == [0, 1, 0]
    assert [list(p) for p in stacks.pcs] == [one, other]


def test_split_stacks_keeps_guest_frames_folds_hidden_modules_and_proves_the_root():
    stacks = _resolve.distinct_stacks([
        sample([IN_LEAF, IN_OUTER, IN_TRAMPOLINE]),               # rooted at its trampoline
        sample([IN_LEAF, OTHER + 0x210, OTHER + 0x110, IN_OUTER], limited=True),
        sample([IN_LEAF, MARK_ENTRY, MARK_HOST | 3, IN_OUTER]),   # an outer activation
    ])
    rooted, cut, nested = _resolve.split_stacks(stacks, _resolve._Resolver([APP, HIDDEN]))
    assert [f.function.name for f in rooted.guest] == ["leaf", "outer"] and not rooted.truncated
    assert [f.offset for f in rooted.guest] == [0x210, 0x110]  # return addresses, .text-relative
    assert [None if f is None else f.function.name for f in cut.guest] == ["leaf", None, "outer"]
    assert cut.truncated                                     # stopped at max_depth, no trampoline
    assert [f.function.name for f in nested.guest] == ["leaf"]
    assert nested.outer[:2] == [MARK_ENTRY, MARK_HOST | 3]


def test_equal_python_chains_are_one_chain():
    def code():
        pass
    frames = (code.__code__, 4)
    segments = {5: (0, (frames, True)), 6: (0, (frames, True)), 9: (5, (frames, True))}
    chains = _resolve.PythonChains(segments)
    assert chains.of(0) == 0 and chains.chains[0] == ()
    assert chains.of(5) == chains.of(6) != chains.of(9)       # 9 was made from 5: two links
    assert len(chains.chains[chains.of(9)]) == 2


def test_samples_are_placed_under_their_host_function_or_python():
    samples = [sample([IN_LEAF, IN_OUTER, IN_TRAMPOLINE]),
               sample([IN_OUTER, IN_TRAMPOLINE], origin=1),           # in host function 0
               sample([], origin=ORIGIN_OUTSIDE, tid=8),
               sample([IN_LEAF], limited=True)]
    stacks = _resolve.distinct_stacks(samples)
    resolver = _resolve._Resolver([APP])
    builder = _resolve.StackBuilder([APP], {}, [print], False, [])
    threads = _resolve.Threads({8: "worker"}, False)
    table = _resolve.sample_table(samples, stacks, _resolve.split_stacks(stacks, resolver),
                                  _resolve.PythonChains({}), builder, resolver, threads,
                                  use_tick_pc=True)

    def path(node):
        out = []
        while node >= 0:
            frame = builder.tree.frames[builder.tree.frame[node]]
            out.append((frame.type, frame.offset) if frame.type == FRAME_GUEST else frame.type)
            node = builder.tree.parent[node]
        return out[::-1]
    assert [path(n) for n in table.stack] == [
        [(FRAME_GUEST, 0x110), (FRAME_GUEST, 0x210)],
        [(FRAME_GUEST, 0x110), FRAME_HOST],
        [FRAME_PYTHON],
        [FRAME_TRUNCATED, (FRAME_GUEST, 0x210)]]
    assert [h.name for h in builder.hosts] == ["print"]
    assert list(table.thread) == [0, 0, 1, 0] and threads.rows[1]["name"] == "worker"
    assert [m.name for m in builder.recorded_modules()] == ["app"]
    assert FRAME_OPAQUE not in {f.type for f in builder.tree.frames}


def test_markers_are_in_start_order_on_the_profiles_clock():
    threads = _resolve.Threads({}, False)
    timed = _resolve.timed_markers(
        [(HOST_CALL, 0, 7, 1_500, 2_000), (GUEST_CALL, "run", 7, 900, 3_000)], threads,
        lambda host: f"host{host}", t0_ns=1_000)
    assert [(m.kind, m.name, m.start_ns, m.end_ns) for m in timed] == [
        (GUEST_CALL, "run", 0, 2_000), (HOST_CALL, "host0", 500, 1_000)]
