"""The live pprof endpoint: fetched by ``go tool pprof`` while the process runs guests."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from contextlib import contextmanager

import pytest
import wasmtime

import sigprof
from conftest import EXAMPLES
from test_pprof import go, pprof_tool  # noqa: F401  (the go fixture)

LIVENESS_LIMIT_S = 60      # how long a state change may take on a loaded machine; not a speed


@contextmanager
def guests_running():
    """A thread running the demo guest on its own store until the block ends."""
    engine = sigprof.engine()
    module = wasmtime.Module.from_file(engine, str(EXAMPLES / "demo.wat"))
    stop = threading.Event()

    def work() -> None:
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(sigprof.FAR_DEADLINE)
        run = wasmtime.Linker(engine).instantiate(store, module).exports(store)["run"]
        while not stop.is_set():
            run(store, 3)
    thread = threading.Thread(target=work, name="guest-runner")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@pytest.fixture
def server():
    if not sigprof._native.available():
        pytest.skip("serve() needs the native capture")
    srv = sigprof.serve("127.0.0.1:0")
    try:
        yield srv
    finally:
        srv.close()


def get(srv, path: str):
    conn = http.client.HTTPConnection(*srv.address, timeout=LIVENESS_LIMIT_S + 300)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + LIVENESS_LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {LIVENESS_LIMIT_S} s"
        time.sleep(0.02)


def test_go_pprof_fetches_a_profile_of_the_running_guests(go, server, tmp_path, monkeypatch):
    monkeypatch.setenv("PPROF_TMPDIR", str(tmp_path))
    with guests_running():
        top = pprof_tool(go, "-top", server.url + "profile?seconds=2")
    assert "hot_loop [" in top
    assert "Thread.run [threading.py]" in top      # the Python around the guest, too


def test_index_lists_the_profile_and_everything_else_is_404(server):
    status, body = get(server, "/debug/pprof/")
    assert status == 200 and b'href="profile"' in body
    for path in ("/", "/debug/pprof/heap", "/debug/pprof/profile/x", "/favicon.ico"):
        assert get(server, path)[0] == 404, path


@pytest.mark.parametrize("seconds", ["0", "301", "abc", "nan", "-5"])
def test_seconds_out_of_bounds_is_a_400(server, seconds):
    status, body = get(server, f"/debug/pprof/profile?seconds={seconds}")
    assert status == 400 and b"1 to 300" in body


def test_a_second_request_while_one_runs_gets_409(server):
    first = {}
    thread = threading.Thread(target=lambda: first.update(
        result=get(server, "/debug/pprof/profile?seconds=2")))
    thread.start()
    try:
        wait_until(server.busy.locked, "profiling")
        status, body = get(server, "/debug/pprof/profile?seconds=1")
        assert status == 409 and b"already running" in body
    finally:
        thread.join()
    status, body = first["result"]
    assert status == 200 and body[:2] == b"\x1f\x8b"      # gzipped pprof


def test_a_client_that_disconnects_stops_its_profile(server):
    sock = socket.create_connection(server.address)
    sock.sendall(b"GET /debug/pprof/profile?seconds=300 HTTP/1.0\r\n\r\n")
    wait_until(server.busy.locked, "profiling")
    sock.close()
    # A 300 s profile that kept running would hold the server far past the limit.
    wait_until(lambda: not server.busy.locked(), "released after the client left")
    assert get(server, "/debug/pprof/profile?seconds=1")[0] == 200


@pytest.mark.parametrize("address", ["0.0.0.0:0", "192.0.2.1:6060", "[::]:0"])
def test_a_non_loopback_address_needs_allow_remote(address):
    with pytest.raises(ValueError, match="allow_remote=True"):
        sigprof.serve(address)


def test_a_malformed_address_is_one_clear_error():
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        sigprof.serve("localhost")


def test_without_the_native_capture_serve_says_why_at_once(monkeypatch):
    monkeypatch.setenv("SIGPROF_PURE_PYTHON", "1")
    with pytest.raises(RuntimeError, match="needs the native capture.*SIGPROF_PURE_PYTHON"):
        sigprof.serve("127.0.0.1:0")


def test_a_scrape_while_another_whole_process_profile_runs_gets_409(server):
    with sigprof.profile():
        status, body = get(server, "/debug/pprof/profile?seconds=1")
    assert status == 409 and b"store-less" in body
