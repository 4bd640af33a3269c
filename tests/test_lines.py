"""Source lines and inlined frames from a wasm module's DWARF, checked against llvm-symbolizer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sigprof.dwarf import ModuleDwarf

SOURCES = Path(__file__).parent / "guests" / "lines"
SYMBOLIZER = "llvm-symbolizer-14"


def _build(tmp_path: Path, opt: str) -> Path:
    if shutil.which("clang") is None or shutil.which(SYMBOLIZER) is None:
        pytest.skip("needs Debian clang (wasm32-wasi) and llvm-symbolizer-14")
    out = tmp_path / f"lines{opt}.wasm"
    proc = subprocess.run(["clang", "--target=wasm32-wasi", "-g", opt, str(SOURCES / "hot.c"),
                           str(SOURCES / "step.c"), "-o", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"clang cannot build for wasm32-wasi here: {proc.stderr.strip()[:200]}")
    return out


def _symbolizer(wasm: Path, addresses: list[int]) -> list[list[tuple[str, str]]]:
    """llvm-symbolizer's frames (innermost first) per address, as (function, file:line:column)."""
    proc = subprocess.run([SYMBOLIZER, "--inlines", f"--obj={wasm}"],
                          input="".join(f"{a:#x}\n" for a in addresses),
                          capture_output=True, text=True, timeout=120)
    answers = []
    for block in proc.stdout.strip("\n").split("\n\n"):
        lines = block.split("\n")
        answers.append([(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)])
    return answers


@pytest.mark.parametrize("opt", ["-O2", "-O0"])
def test_every_code_address_matches_llvm_symbolizer(tmp_path, opt):
    wasm = _build(tmp_path, opt)
    dwarf = ModuleDwarf(wasm.read_bytes())
    assert dwarf.has_dwarf
    addresses = list(range(0, 0x400))
    expected = _symbolizer(wasm, addresses)
    assert len(expected) == len(addresses)
    for address, want in zip(addresses, expected):
        got = [(f.function, f"{f.file}:{f.line}:{f.column}") for f in reversed(dwarf.frames_at(address))]
        assert (got or [("??", "??:0:0")]) == want, hex(address)


def test_the_inlined_helper_is_its_own_frame(tmp_path):
    wasm = _build(tmp_path, "-O2")
    dwarf = ModuleDwarf(wasm.read_bytes())
    chains = {tuple(f.function for f in dwarf.frames_at(a)) for a in range(0x400)}
    assert ("step", "twist") in chains          # twist() inlined into step(), innermost last
    assert ("main", "mix") in chains


def test_a_module_without_dwarf_has_no_lines():
    wasm = (Path(__file__).parent / "guests" / "addrmap.wasm").read_bytes()
    dwarf = ModuleDwarf(wasm)
    assert not dwarf.has_dwarf and dwarf.frames_at(0x10) == []


def test_native_text_offsets_resolve_through_the_address_map(tmp_path):
    """PC in wasmtime's image -> .wasmtime.addrmap -> DWARF address -> frames, as llvm-symbolizer."""
    wasmtime = pytest.importorskip("wasmtime")
    from sigprof import frames
    from sigprof._wasmtime import addrmap, image as symbols
    from sigprof.dwarf import ImageLines

    wasm = _build(tmp_path, "-O2")
    data = wasm.read_bytes()
    image = wasmtime.Module(wasmtime.Engine(), data).serialize()
    read = lambda a, n: image[a:a + n]  # noqa: E731
    amap = addrmap.read_address_map(read, 0, len(image))
    dwarf = ModuleDwarf(data)
    lines = ImageLines(amap, dwarf)
    table = symbols.read_image(read, 0, len(image)).symbols
    offsets = [pc for i in range(len(table)) if (f := table.function_at(i)).role == frames.ROLE_WASM
               for pc in range(f.start, f.start + f.size)]
    mapped = [(pc, amap.file_position(pc)) for pc in offsets]
    mapped = [(pc, dwarf.code_address(pos)) for pc, pos in mapped if pos is not None]
    assert mapped
    expected = _symbolizer(wasm, [address for _, address in mapped])
    functions = set()
    for (pc, _), want in zip(mapped, expected):
        got = [(f.function, f"{f.file}:{f.line}:{f.column}") for f in reversed(lines.frames_at(pc))]
        assert (got or [("??", "??:0:0")]) == want, hex(pc)
        functions.update(f.function for f in lines.frames_at(pc))
    assert {"main", "mix", "step", "twist"} <= functions


def test_a_binary_s_dwarf_is_read_once_for_the_profiles_that_follow(tmp_path):
    from sigprof import _resolve
    wasm = _build(tmp_path, "-O2").read_bytes()
    _resolve._dwarf_cache.clear()
    first = _resolve.module_dwarf(wasm)
    assert _resolve.module_dwarf(bytes(wasm)) is first          # by content, not identity
    # by the DWARF alone: another custom section changes nothing that is read
    assert _resolve.module_dwarf(wasm + bytes([0, 3, 1, ord("x"), 0])) is first
    others = [wasm + bytes([0, 10, 8]) + b".debug_x" + bytes([i])
              for i in range(_resolve.DWARF_CACHE_MODULES)]
    for other in others:                      # as many other binaries as the cache holds
        _resolve.module_dwarf(other)
    assert _resolve.module_dwarf(wasm) is not first              # the oldest was let go
    assert len(_resolve._dwarf_cache) == _resolve.DWARF_CACHE_MODULES


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_the_line_state_machine_reads_the_rows_pyelftools_reads(tmp_path, opt):
    from sigprof.dwarf import _line_program_rows
    dwarf = ModuleDwarf(_build(tmp_path, opt).read_bytes())
    for cu in dwarf._info.iter_CUs():
        program = dwarf._info.line_program_for_CU(cu)
        theirs = [(e.state.address, e.state.file, e.state.line, e.state.column,
                   e.state.end_sequence) for e in program.get_entries() if e.state is not None]
        assert theirs and list(_line_program_rows(
            dwarf._debug_line, program.program_start_offset, program.program_end_offset,
            program.header)) == theirs
