"""Source lines and inlined frames in a profile of a C guest built with DWARF, in every output.

The guest (tests/guests/lines, two files, ``-g -O2``) inlines ``mix`` into
``main`` and ``twist`` into ``step``.  ``sigprof record`` knows the module's
binary, so its DWARF resolves each sampled PC.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

import sigprof
from conftest import require, run_cli, run_process
from sigprof.frames import FRAME_GUEST

SOURCES = Path(__file__).parent / "guests" / "lines"
GOLDEN = Path(__file__).parent / "expected"
INLINED = {"mix", "twist"}
# The share of samples in inlined code, measured: 1-2% of ~250 samples per run at
# 1 ms (5 runs: 1-5 such samples each), so a run without one has probability
# <= e^-2.5 ~ 0.08; five runs all without one: <= 0.08^5 ~ 3e-6 (below
# conftest.FALSE_FAILURE_RATE).
ATTEMPTS = 5
PURE = os.environ.get("SIGPROF_PURE_PYTHON") == "1"


@pytest.fixture(scope="module")
def lines_wasm(tmp_path_factory):
    require(shutil.which("clang") is not None, "needs Debian clang (wasm32-wasi)")
    out = tmp_path_factory.mktemp("lines") / "lines.wasm"
    proc = subprocess.run(["clang", "--target=wasm32-wasi", "-g", "-O2", str(SOURCES / "hot.c"),
                           str(SOURCES / "step.c"), "-o", str(out)], capture_output=True, text=True)
    require(proc.returncode == 0, f"clang cannot build for wasm32-wasi: {proc.stderr[:200]}")
    return out


@pytest.fixture(scope="module")
def recorded(lines_wasm, tmp_path_factory):
    """A recording of the guest with an inlined frame sampled, in every format."""
    for attempt in range(ATTEMPTS):
        out = tmp_path_factory.mktemp(f"rec{attempt}")
        paths = {fmt: out / f"r.{fmt}" for fmt in ("sigprof", "json", "collapsed", "txt",
                                                    "pb.gz")}
        done = run_cli("record", "--interval", "0.001",
                       *[a for p in paths.values() for a in ("-o", str(p))], str(lines_wasm))
        assert done.returncode == 0, done.stderr
        rec = sigprof.load(str(paths["sigprof"]))
        if PURE or any(rec.function(i).name in INLINED for i in range(len(rec.frames))):
            return rec, paths
    pytest.fail(f"no inlined frame sampled in {ATTEMPTS} runs")


def needs_inlined() -> None:
    """The pure-Python capture samples where the guest checks its epoch (function
    entries, loop headers), never inside this guest's inlined code."""
    if PURE:
        pytest.skip("the pure-Python capture samples at epoch checks only: no inlined code")


def test_sampled_guest_frames_have_lines_and_inlined_frames(recorded):
    rec, _ = recorded
    with_lines = [i for i, f in enumerate(rec.frames) if rec.source_line(i) is not None]
    assert with_lines
    files = {rec.source_line(i).file for i in with_lines}
    assert {"hot.c", "step.c"} <= files          # base names: no host details asked
    for i, frame in enumerate(rec.frames):
        if frame.type != FRAME_GUEST or not frame.inline:
            continue
        # An inlined call shares its compiled function's address, one level deeper.
        outer = rec.frames.index(frame._replace(inline=frame.inline - 1))
        assert rec.frames[outer].offset == frame.offset
        assert rec.function(i).name in INLINED
        source = rec.source_line(i)
        assert source.line > 0 and source.file in ("hot.c", "step.c")
    # The inlined frame sits under its caller in the stacks (innermost last).
    for stack in set(rec.sample_table.stack):
        names = [rec.function(f).name for f in rec.stack_frames(stack)]
        if "mix" in names:
            assert names[names.index("mix") - 1] == "__original_main"
        if "twist" in names:
            assert names[names.index("twist") - 1] == "step"


def test_the_raw_file_keeps_lines_and_inlined_frames(recorded, tmp_path):
    rec, paths = recorded
    again = sigprof.load(str(paths["sigprof"]))
    assert again.frames == rec.frames
    assert [m.lines for m in again.modules] == [m.lines for m in rec.modules]
    # And through the Firefox profile, which carries the recording too.
    from_json = sigprof.load(str(paths["json"]))
    assert from_json.frames == rec.frames
    assert [m.lines for m in from_json.modules] == [m.lines for m in rec.modules]


def test_firefox_has_lines_inline_depths_and_source_files(recorded, firefox_profiler_cli):
    needs_inlined()
    rec, paths = recorded
    profile = json.loads(paths["json"].read_text())
    shared = profile["shared"]
    strings = shared["stringArray"]
    thread = profile["threads"][0]
    frames, funcs = thread.get("frameTable") or shared["frameTable"], \
        thread.get("funcTable") or shared["funcTable"]
    names = [strings[n] for n in funcs["name"]]
    inlined = [i for i, depth in enumerate(frames["inlineDepth"]) if depth > 0]
    assert inlined and all(names[frames["func"][i]] in INLINED for i in inlined)
    assert any(line for line in frames["line"])
    files = {strings[shared["sources"]["filename"][s]] for s in funcs["source"] if s is not None}
    assert {"hot.c", "step.c"} <= files
    step = names.index("step")
    assert funcs["lineNumber"][step] == 4
    data = firefox_profiler_cli.query(paths["json"], "thread", "functions", "--limit", "0")
    loaded = {f["nameWithLibrary"] for f in data["functions"]}
    assert any(name.startswith(("mix", "twist")) or "!mix" in name or "!twist" in name
               for name in loaded), loaded


def test_collapsed_and_text_show_file_and_line(recorded):
    _, paths = recorded
    collapsed = paths["collapsed"].read_text()
    assert "lines.wasm!step (step.c:4)" in collapsed
    assert "lines.wasm!__original_main (hot.c:5)" in collapsed
    assert PURE or any(f"!{name} (" in collapsed for name in INLINED)
    assert "step (step.c:4)  [lines.wasm]" in paths["txt"].read_text()


def test_pprof_locations_hold_the_inlined_lines_innermost_first(recorded):
    needs_inlined()
    go = shutil.which("go")
    require(go is not None, "go is not installed (Debian golang-go)")
    _, paths = recorded
    done = run_process([go, "tool", "pprof", "-raw", str(paths["pb.gz"])])
    assert done.returncode == 0, done.stderr
    locations = done.stdout.split("Locations\n", 1)[1].split("Mappings\n", 1)[0]
    # "N: 0xADDR M=1 mix [lines.wasm] hot.c:2 s=1", then its caller's line, indented.
    blocks: list = []
    for line in locations.splitlines():
        if re.match(r"\s*\d+: 0x", line):
            blocks.append([line.split(None, 3)[3]])
        elif line.strip():
            blocks[-1].append(line.strip())
    inlined = [b for b in blocks if b[0].split()[0] in INLINED]
    assert inlined, locations
    for first, caller, *_ in inlined:
        where = first.split()[2]
        assert where.split(":")[0] in ("hot.c", "step.c") and int(where.split(":")[1]) > 0
        assert caller.split()[0] in ("__original_main", "step")


def test_pprof_list_shows_a_function_s_source_with_its_time_per_line(recorded):
    go = shutil.which("go")
    require(go is not None, "go is not installed (Debian golang-go)")
    _, paths = recorded
    done = run_process([go, "tool", "pprof", "-list", "^step ", "-source_path", str(SOURCES),
                        str(paths["pb.gz"])])
    assert done.returncode == 0, done.stderr
    assert "ROUTINE ======================== step [lines.wasm] in step.c" in done.stdout
    # "  130.07ms   130.07ms      4:int step(int x) {": flat and cum time on a source line
    timed = re.findall(r"^\s*([\d.]+)(?:m|u|n)?s\s+[\d.]+(?:m|u|n)?s\s+(\d+):", done.stdout,
                       re.M)
    assert timed and all(4 <= int(line) <= 6 for _, line in timed), done.stdout


def test_a_guest_without_dwarf_profiles_as_before():
    """The golden recording (no DWARF) writes the very same bytes and labels."""
    rec = sigprof.load(str(GOLDEN / "golden.sigprof"))
    assert all(not m.lines for m in rec.modules)
    from sigprof.export import raw
    assert raw.dumps(rec) == (GOLDEN / "golden.sigprof").read_bytes()
    assert rec.to_collapsed() == (GOLDEN / "golden.collapsed").read_text()


def test_a_module_run_without_its_binary_has_no_lines(guest):
    g = guest("demo")
    store, inst = g.instance()
    with sigprof.profile(store, modules=[("demo.wasm", g.module)]) as prof:
        inst.exports(store)["run"](store, 2)
    rec = prof.recording
    assert all(not m.lines for m in rec.modules)
    assert not any(f.inline for f in rec.frames)


def test_report_lines_ranks_source_lines_by_self_share(recorded):
    rec, paths = recorded
    done = run_cli("report", "--lines", "--top", "50", str(paths["sigprof"]))
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert rows, done.stdout
    # self ms, %, total ms, %, FILE:LINE, function
    where = [row[6] for row in rows]
    assert any(w.startswith("step.c:") for w in where)
    assert all(not w.endswith(":0") for w in where)          # line 0 is no line
    shares = [float(row[2].rstrip("%")) for row in rows]
    assert shares == sorted(shares, reverse=True)
    from sigprof.lines import line_times
    times = line_times(rec)
    assert sum(times.self_ns.values()) <= times.weight_ns


def test_report_lines_of_a_recording_without_lines_says_why():
    done = run_cli("report", "--lines", str(GOLDEN / "golden.sigprof"))
    assert done.returncode == 0, done.stderr
    assert "no source lines" in done.stdout


def test_annotate_prints_each_line_with_its_shares(recorded):
    _, paths = recorded
    done = run_cli("annotate", str(paths["sigprof"]), "hot.c", "--source-dir", str(SOURCES))
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    source = (SOURCES / "hot.c").read_text().splitlines()
    body = out[2:]
    assert len(body) == len(source)
    for n, (row, text) in enumerate(zip(body, source), 1):
        assert row.endswith(f"{n:5d}  {text}")
    # The loop's call line carries main's callees: a total share, on hot.c:8.
    assert body[7].split()[1].endswith("%"), body[7]


def test_annotate_fails_in_one_line_without_the_file(recorded, tmp_path):
    _, paths = recorded
    for args in (["hot.c", "--source-dir", str(tmp_path)], ["nowhere.c"]):
        done = run_cli("annotate", str(paths["sigprof"]), *args, cwd=tmp_path)
        assert done.returncode != 0
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("sigprof: error: ")


def test_a_debug_twin_gives_a_stripped_build_its_lines(lines_wasm, tmp_path):
    """--names with the -g build: the build without DWARF gets its lines (and keeps
    none without it); --host-details keeps the absolute source paths."""
    stripped = tmp_path / "stripped.wasm"
    proc = subprocess.run(["clang", "--target=wasm32-wasi", "-O2", str(SOURCES / "hot.c"),
                           str(SOURCES / "step.c"), "-o", str(stripped)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    plain, twin, private = (tmp_path / f"{n}.collapsed" for n in ("plain", "twin", "private"))
    for out, extra in ((plain, []), (twin, ["--names", str(lines_wasm)]),
                       (private, ["--names", str(lines_wasm), "--host-details"])):
        done = run_cli("record", "-o", str(out), *extra, str(stripped))
        assert done.returncode == 0, done.stderr
    # (Debian's wasi-libc keeps DWARF for its crt1.c: only the program's own is missing.)
    assert "(hot.c:" not in plain.read_text() and "(step.c:" not in plain.read_text()
    assert "stripped.wasm!step (step.c:4)" in twin.read_text()
    assert f"stripped.wasm!step ({SOURCES.resolve() / 'step.c'}:4)" in private.read_text()


def test_a_twin_built_at_another_optimisation_level_gives_names_not_lines(tmp_path):
    """-Oz and -O2 builds of the guest have the same functions, imports and exports
    but other code: the -Oz build's DWARF would give the -O2 build wrong lines, so
    the profile keeps its names only and says why."""
    builds = {}
    for level in ("-O2", "-Oz"):
        builds[level] = tmp_path / f"build{level}.wasm"
        debug = ["-g"] if level == "-Oz" else []
        proc = subprocess.run(["clang", "--target=wasm32-wasi", *debug, level,
                               str(SOURCES / "hot.c"), str(SOURCES / "step.c"), "-o",
                               str(builds[level])], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    out = tmp_path / "r.collapsed"
    done = run_cli("record", "-o", str(out), "--names", str(builds["-Oz"]), str(builds["-O2"]))
    assert done.returncode == 0, done.stderr
    assert "the binary given for its names is not the build it was compiled from" in done.stderr
    assert "its names were used, its source lines were not" in done.stderr
    assert "build-O2.wasm!step" in out.read_text()
    assert "(step.c:" not in out.read_text() and "(hot.c:" not in out.read_text()


def test_sigprof_run_names_a_module_by_its_file_and_reads_its_lines(lines_wasm, tmp_path):
    """An application that compiles its module with Module.from_file on an engine of
    its own: under `sigprof run` the store-less profile finds the module from its
    code, names it by the file it was compiled from and reads that file's DWARF."""
    app = tmp_path / "app.py"
    app.write_text(f"""import wasmtime
engine = wasmtime.Engine(wasmtime.Config())
module = wasmtime.Module.from_file(engine, {str(lines_wasm)!r})
linker = wasmtime.Linker(engine)
linker.define_wasi()
store = wasmtime.Store(engine)
store.set_wasi(wasmtime.WasiConfig())
try:
    linker.instantiate(store, module).exports(store)["_start"](store)
except wasmtime.ExitTrap:
    pass
""")
    out = tmp_path / "r.collapsed"
    done = run_cli("run", "--interval", "0.001", "-o", str(out), str(app), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "lines.wasm!step (step.c:4)" in out.read_text(), out.read_text()[:2000]


def test_the_raw_file_says_1_3_only_with_lines_and_refuses_a_damaged_inline_table(recorded):
    import struct
    from sigprof import rawfile
    from sigprof.export import raw
    rec, paths = recorded
    data = paths["sigprof"].read_bytes()
    # 1.4 where the recording also holds markers (its guest call took milliseconds)
    assert struct.unpack_from("<HH", data, 8) == ((1, 4) if rec.markers else (1, 3))
    assert struct.unpack_from("<HH", raw.dumps(dataclasses.replace(rec, markers=())),
                              8) == (1, 3)
    golden = (GOLDEN / "golden.sigprof").read_bytes()
    assert struct.unpack_from("<HH", golden, 8) == (1, 2)
    # An INLN section of the wrong length: one line, not a traceback.
    at = data.index(b"INLN")
    damaged = bytearray(data)
    count, = struct.unpack_from("<I", data, at + 12)
    struct.pack_into("<I", damaged, at + 12, count + 1)
    length, = struct.unpack_from("<Q", data, at + 4)
    struct.pack_into("<I", damaged, at + 12 + length,
                     zlib.crc32(bytes(damaged[at + 12:at + 12 + length])))
    with pytest.raises(rawfile.RecordingFormatError, match="INLN"):
        rawfile.loads(bytes(damaged))
    assert raw.dumps(rawfile.loads(data)) == data


def test_damaged_dwarf_loses_the_lines_not_the_samples(lines_wasm, tmp_path):
    data = bytearray(lines_wasm.read_bytes())
    at = data.index(b".debug_line") + len(b".debug_line")
    data[at + 4:at + 60] = b"\xff" * 56           # the line program's header
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(bytes(data))
    out = tmp_path / "bad.sigprof"
    done = run_cli("record", "-o", str(out), str(bad))
    assert done.returncode == 0, done.stderr
    rec = sigprof.load(str(out))
    assert rec.samples > 0 and all(not m.lines for m in rec.modules)
    assert any("DWARF could not be read" in w for w in rec.meta["warnings"])


def test_the_flame_graph_hover_shows_file_and_line(recorded, tmp_path):
    _, paths = recorded
    out = tmp_path / "r.svg"
    done = run_cli("convert", str(paths["sigprof"]), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "step (step.c:4) [lines.wasm] -- " in out.read_text()


@contextlib.contextmanager
def source_server(profile: Path, *directories: Path):
    """``sigprof view``'s server for ``profile`` with its source API; yields its base URL."""
    from sigprof import view
    body = profile.read_bytes()
    sources = view.SourceFiles(view.profile_sources(body), [str(d) for d in directories])
    server, file_url = view.make_server(body, "application/json", profile.name, sources=sources)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield file_url.rsplit("/", 1)[0]
    finally:
        server.shutdown()
        server.server_close()


def ask_source(base: str, file: str):
    """What the source API answers for ``file``, as the Firefox Profiler asks it."""
    request = urllib.request.Request(f"{base}/source/v1", method="POST", data=json.dumps(
        {"debugName": "lines.wasm", "debugId": "0" * 33, "moduleOffset": "0x10",
         "file": file}).encode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_view_serves_the_profile_s_sources_from_the_directories_given_only(recorded, tmp_path):
    _, paths = recorded
    with source_server(paths["json"], SOURCES) as base:
        status, answer = ask_source(base, "hot.c")
        assert status == 200 and answer["source"] == (SOURCES / "hot.c").read_text()
        for file in ("/etc/passwd", "../lines/hot.c", "lines.wasm", str(SOURCES / "hot.c")):
            status, answer = ask_source(base, file)      # not named, or not inside
            assert status == 404 and "error" in answer, file
    # A file the profile names, linked to one outside the directory: not served.
    linked = tmp_path / "src"
    linked.mkdir()
    (linked / "hot.c").symlink_to("/etc/hostname")
    (linked / "step.c").write_text("int step(int x);\n")
    with source_server(paths["json"], linked) as base:
        assert ask_source(base, "hot.c")[0] == 404
        assert ask_source(base, "step.c") == (200, {"symbolsLastModified": None,
                                                    "sourceLastModified": None,
                                                    "file": "step.c",
                                                    "source": "int step(int x);\n"})


def test_the_firefox_profiler_s_source_view_reads_lines_through_view(recorded,
                                                                      firefox_profiler_cli):
    _, paths = recorded
    profile = json.loads(paths["json"].read_text())
    strings = profile["shared"]["stringArray"]
    step = [i for i, name in enumerate(profile["shared"]["funcTable"]["name"])
            if strings[name] == "step"]
    assert step
    with source_server(paths["json"], SOURCES) as base:
        shown = firefox_profiler_cli.query(paths["json"], "function", "annotate", f"f-{step[0]}",
                                           "--symbol-server", base, "--context", "file")
    lines = {line["lineNumber"]: line for line in shown["srcAnnotation"]["lines"]}
    assert shown["srcAnnotation"]["filename"] == "step.c" and not shown["warnings"]
    # step.c's text, which only the server gave it, with the time of each line
    assert lines[5]["sourceText"] == "    return twist(x) + 7;"
    assert lines[4]["selfSamples"] + lines[5]["selfSamples"] > 0


def _leb(data: bytes, at: int):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _without_name_section(wasm: bytes) -> bytes:
    """The module with its "name" custom section dropped (DWARF kept)."""
    out, at = bytearray(wasm[:8]), 8
    while at < len(wasm):
        size, body = _leb(wasm, at + 1)
        length, name_at = _leb(wasm, body)
        if not (wasm[at] == 0 and wasm[name_at:name_at + length] == b"name"):
            out += wasm[at:body + size]
        at = body + size
    return bytes(out)


def test_a_module_with_dwarf_and_no_name_section_is_named_by_its_dwarf(lines_wasm, tmp_path):
    from sigprof.wasmfile import read_names
    unnamed = tmp_path / "unnamed.wasm"
    unnamed.write_bytes(_without_name_section(lines_wasm.read_bytes()))
    assert not read_names(unnamed.read_bytes()).function_names        # nothing named
    out = tmp_path / "unnamed.collapsed"
    done = run_cli("record", "-o", str(out), str(unnamed))
    assert done.returncode == 0, done.stderr
    collapsed = out.read_text()
    assert "unnamed.wasm!step (step.c:" in collapsed
    assert not re.search(r"wasm-function\[\d+\] \((hot|step)\.c:", collapsed)


def _split(wasm: bytes, pointer: str) -> bytes:
    """The module with its DWARF moved out: its .debug_* sections dropped and an
    external_debug_info section naming ``pointer`` (emscripten -gseparate-dwarf's)."""
    from sigprof import dwarf
    kept = bytearray(wasm[:8])
    at = 8
    while at < len(wasm):
        size, body = _leb(wasm, at + 1)
        length, name_at = _leb(wasm, body)
        if not (wasm[at] == 0 and wasm[name_at:name_at + length].startswith(b".debug_")):
            kept += wasm[at:body + size]
        at = body + size
    url = pointer.encode()
    return bytes(kept) + dwarf._custom_section(dwarf.EXTERNAL_DEBUG_INFO,
                                               bytes([len(url)]) + url)


def test_a_split_debug_file_the_module_names_gives_its_lines(lines_wasm, tmp_path):
    (tmp_path / "debug").mkdir()
    shutil.copy(lines_wasm, tmp_path / "debug" / "lines.debug.wasm")
    main = tmp_path / "main.wasm"
    main.write_bytes(_split(lines_wasm.read_bytes(), "debug/lines.debug.wasm"))
    out = tmp_path / "main.collapsed"
    done = run_cli("record", "-o", str(out), str(main))
    assert done.returncode == 0, done.stderr
    assert "main.wasm!step (step.c:4)" in out.read_text()
    # named but missing: the profile, a warning, no lines
    (tmp_path / "debug" / "lines.debug.wasm").unlink()
    done = run_cli("record", "-o", str(out), str(main))
    assert done.returncode == 0, done.stderr
    assert "its DWARF file debug/lines.debug.wasm could not be read" in done.stderr
    assert "main.wasm!step " in out.read_text() and "(step.c:" not in out.read_text()
