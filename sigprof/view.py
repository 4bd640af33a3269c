"""``sigprof view``: open a profile in the Firefox Profiler (or its flame graph) from here.

The Firefox Profiler loads a profile from a URL (its ``/from-url/<url>/``
page), as samply uses it: this serves the one file from 127.0.0.1 on a free
port, under a path with a random token, with the CORS header the profiler's
origin needs, and opens that page.  Nothing else is served: any other path is
a 404.  A ``.sigprof`` recording is converted to the profiler's format in
memory first.  With ``svg``, the flame graph (of a recording, or of a
Firefox profile sigprof wrote) is served instead and opened directly.  The
URL is printed for machines without a browser; Ctrl-C stops.
"""

from __future__ import annotations

import gzip
import http.server
import os
import secrets
import threading
import webbrowser
from typing import Callable, Optional, Tuple
from urllib.parse import quote

from . import export, rawfile

PROFILER_ORIGIN = "https://profiler.firefox.com"


class ViewError(ValueError):
    """The file cannot be viewed (the message says why)."""


def content(path: str, svg: bool) -> Tuple[bytes, str, str]:
    """(body, content type, served file name) for ``path``."""
    base = os.path.basename(path)
    with open(path, "rb") as f:
        data = f.read()
    is_raw = data[:len(export.raw.MAGIC)] == export.raw.MAGIC
    if svg:                       # from a recording, or a Firefox profile sigprof wrote
        rec = rawfile.recording_from_bytes(data, source=path)
        return export.svg.render(rec, ""), "image/svg+xml", base + ".svg"
    if is_raw:
        rec = rawfile.loads(data, source=path)
        return export.firefox.render(rec, ""), "application/json", base + ".json"
    raw_json = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    if not raw_json.lstrip().startswith(b"{"):
        raise ViewError(f"{path}: neither a sigprof recording nor a JSON profile")
    return data, "application/gzip" if data[:2] == b"\x1f\x8b" else "application/json", base


def make_server(body: bytes, content_type: str, name: str,
                port: int = 0) -> Tuple[http.server.ThreadingHTTPServer, str]:
    """A server for one file on 127.0.0.1, and the file's URL."""
    route = f"/{secrets.token_urlsafe(12)}/{quote(name)}"

    class OneFile(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != route:
                self.send_error(404, "sigprof view serves one file only")
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Access-Control-Allow-Origin", PROFILER_ORIGIN)
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass                          # quiet: the URL is what the user needs

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), OneFile)
    server.daemon_threads = True
    return server, f"http://127.0.0.1:{server.server_address[1]}{route}"


def page_for(file_url: str, svg: bool) -> str:
    """What to open: the flame graph itself, or the profiler's page that loads the file."""
    return file_url if svg else f"{PROFILER_ORIGIN}/from-url/{quote(file_url, safe='')}/"


def view(path: str, svg: bool = False, open_browser: bool = True,
         say: Callable[[str], None] = print) -> None:
    """Serve ``path`` until Ctrl-C (KeyboardInterrupt), having opened or printed its page."""
    body, content_type, name = content(path, svg)
    server, file_url = make_server(body, content_type, name)
    page = page_for(file_url, svg)
    thread = threading.Thread(target=server.serve_forever, name="sigprof-view", daemon=True)
    thread.start()
    try:
        say(f"sigprof: serving {path} at {file_url}")
        say(f"sigprof: open {page}")
        if open_browser and not _open(page):
            say("sigprof: no browser could be started here; open the address above")
        say("sigprof: press Ctrl-C to stop")
        threading.Event().wait()
    finally:
        server.shutdown()
        server.server_close()


def _open(page: str) -> Optional[bool]:
    try:
        return webbrowser.open(page)
    except webbrowser.Error:
        return False
