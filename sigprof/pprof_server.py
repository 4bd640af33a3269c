"""A live pprof endpoint in a running application, the way a Go program serves one.

    server = sigprof.serve()                  # http://127.0.0.1:6060/debug/pprof/
    ...                                       # the application runs its guests
    server.close()

Go's ``net/http/pprof`` convention, which Grafana Alloy, Parca and Pyroscope
scrape: ``GET /debug/pprof/profile?seconds=N`` profiles the next N seconds of
the whole process -- a store-less profile, every thread, every store of an
engine with epoch interruption -- and answers with the gzipped pprof;
``/debug/pprof/`` lists what is served; every other path is 404.

Rules, each a decision a scraper can rely on:

* Loopback only, unless an address is given *and* ``allow_remote=True``: a
  profile names the code, files and threads of the process.
* The native capture is required: each profile starts on a server thread,
  and without the C extension Python lets only the main thread install the
  signal handler a profile needs; ``serve()`` says so at once rather than
  failing every scrape.
* One profile at a time: a request while one runs gets 409 Conflict at once
  (Go's handler waits instead; a scraper retrying on its next period is
  better served by an immediate answer than by a request that takes twice N).
* ``seconds`` from 1 to ``MAX_SECONDS``; 30 when not given, as in Go.
* A client that disconnects stops its profile (checked every
  ``DISCONNECT_POLL_S``), so an abandoned scrape does not hold the profiler.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

DEFAULT_ADDRESS = "127.0.0.1:6060"
DEFAULT_SECONDS = 30          # Go's default for /debug/pprof/profile
MAX_SECONDS = 300             # a scrape longer than five minutes is a mistake, not a profile
DISCONNECT_POLL_S = 0.1

_INDEX = b"""<html><head><title>/debug/pprof/</title></head><body>
<p>sigprof: profiles of this process's WebAssembly guests and the Python around them</p>
<table><tr><td><a href="profile">profile</a></td>
<td>CPU profile of the next N seconds (?seconds=N, 1 to %d, default %d), gzipped pprof:
<code>go tool pprof http://HOST:PORT/debug/pprof/profile?seconds=30</code></td></tr></table>
</body></html>
""" % (MAX_SECONDS, DEFAULT_SECONDS)


def _parse_address(address: str) -> Tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r}: expected HOST:PORT, like {DEFAULT_ADDRESS}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PprofServer:
    """The running endpoint; ``close()`` (or leaving a ``with`` block) stops it."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, allow_remote: bool = False,
                 **profile_options: Any):
        host, port = _parse_address(address)
        if not _is_loopback(host) and not allow_remote:
            raise ValueError(f"address {address!r} is not loopback: a profile shows this "
                             f"process's code, files and threads to whoever asks; pass "
                             f"allow_remote=True to serve it there")
        from . import _native
        from ._options import ProfileOptions
        self.options = ProfileOptions.given(profile_options)   # a bad one fails here
        _native.require_for_background_profiles("sigprof.serve")
        self.busy = threading.Lock()          # held while a profile runs
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       name="sigprof-pprof-server", daemon=True)
        self.thread.start()

    @property
    def address(self) -> Tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/debug/pprof/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def __enter__(self) -> "PprofServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(address: str = DEFAULT_ADDRESS, *, allow_remote: bool = False,
          **profile_options: Any) -> PprofServer:
    """Start the endpoint in a background thread and return it.  ``address``:
    ``HOST:PORT`` (port 0 picks a free one); ``profile_options`` go to each
    request's ``sigprof.profile()`` (``interval``, ``clock``, ``capacity``...)."""
    return PprofServer(address, allow_remote=allow_remote, **profile_options)


def _client_gone(sock: socket.socket, wait_s: float) -> bool:
    """Wait up to ``wait_s`` for the peer to close its side; True if it has."""
    readable, _, _ = select.select([sock], [], [], wait_s)
    if not readable:
        return False
    try:
        gone = sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
    if not gone:
        time.sleep(wait_s)                    # bytes after the request: not a close
    return gone


def _handler_for(server: PprofServer) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass                              # the application's stderr is not ours

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path in ("/debug/pprof", "/debug/pprof/"):
                self._answer(200, _INDEX, "text/html; charset=utf-8")
            elif url.path == "/debug/pprof/profile":
                self._profile(parse_qs(url.query))
            else:
                self._answer(404, b"404 page not found\n")

        def _profile(self, query: "dict[str, list[str]]") -> None:
            text = (query.get("seconds") or [str(DEFAULT_SECONDS)])[0]
            try:
                seconds = float(text)
            except ValueError:
                seconds = float("nan")
            if not 1 <= seconds <= MAX_SECONDS:
                self._answer(400, f"seconds={text}: expected a number from 1 to "
                                  f"{MAX_SECONDS}\n".encode())
                return
            if not server.busy.acquire(blocking=False):
                self._answer(409, b"a profile is already running: try again when it ends\n")
                return
            try:
                body = self._record(seconds)
            except RuntimeError as exc:       # another store-less profile covers the process
                self._answer(409, f"{exc}\n".encode())
                return
            finally:
                server.busy.release()
            if body is not None:
                self._answer(200, body, "application/octet-stream",
                             {"Content-Disposition": 'attachment; filename="profile.pb.gz"'})

        def _record(self, seconds: float) -> Optional[bytes]:
            from .export import pprof
            from .profiler import Profiler
            deadline = time.monotonic() + seconds
            with Profiler(options=server.options) as prof:
                while (left := deadline - time.monotonic()) > 0:
                    if _client_gone(self.connection, min(DISCONNECT_POLL_S, left)):
                        return None           # the profile ends with the block, unread
            assert prof.recording is not None         # the block's end made it
            return pprof.render(prof.recording, "")

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                    headers: Optional["dict[str, str]"] = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass                          # the scraper left: nothing to tell it

    return Handler
