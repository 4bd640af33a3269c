"""``sigprof view``: open a profile in the Firefox Profiler (or its flame graph) from here.

The Firefox Profiler loads a profile from a URL (its ``/from-url/<url>/``
page), as samply uses it: this serves the one file from 127.0.0.1 on a free
port, under a path with a random token, with the CORS header the profiler's
origin needs, and opens that page.  Nothing else is served: any other path is
a 404.  A ``.sigprof`` recording is converted to the profiler's format in
memory first.  With ``svg``, the flame graph (of a recording, or of a
Firefox profile sigprof wrote) is served instead and opened directly.  The
URL is printed for machines without a browser; Ctrl-C stops.

With ``source_dirs``, the same server answers the profiler's source requests
as samply's local symbol server does (``POST <server>/source/v1`` with
``{"file": ...}``, answered ``{"source": ...}``; the page is opened with
``?symbolServer=<server>``), so its source view shows each line's time.  A
file is served only if the profile names it as a source file and it lies,
symbolic links resolved, inside one of the directories given: a profile
cannot name its way to any other file on this machine.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import secrets
import threading
import webbrowser
from typing import Callable, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import quote

from . import export, rawfile

PROFILER_ORIGIN = "https://profiler.firefox.com"
SOURCE_API = "source/v1"            # samply's symbol-server path for source text
MAX_REQUEST_BYTES = 65536           # a source request is a few hundred bytes of JSON


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


class SourceFiles:
    """The source files ``view`` may serve: those ``named`` (by the profile) found
    inside one of ``directories``."""

    def __init__(self, named: Iterable[str], directories: Sequence[str]):
        self.named = frozenset(named)
        self.directories = [os.path.realpath(d) for d in directories]

    def read(self, file: str) -> Optional[str]:
        """The text of ``file`` as the profile names it, or None where not allowed."""
        if file not in self.named:
            return None
        for directory in self.directories:
            real = os.path.realpath(os.path.join(directory, file))   # absolute: itself
            if real.startswith(directory + os.sep) and os.path.isfile(real):
                with open(real, encoding="utf-8", errors="replace") as f:
                    return f.read()
        return None


def profile_sources(profile_json: bytes) -> List[str]:
    """The source files a Firefox profile names (``shared.sources``)."""
    data = gzip.decompress(profile_json) if profile_json[:2] == b"\x1f\x8b" else profile_json
    shared = json.loads(data).get("shared") or {}
    strings, sources = shared.get("stringArray") or [], shared.get("sources") or {}
    return [strings[i] for i in sources.get("filename") or []
            if isinstance(i, int) and 0 <= i < len(strings)]


def make_server(body: bytes, content_type: str, name: str, port: int = 0,
                sources: Optional[SourceFiles] = None
                ) -> Tuple[http.server.ThreadingHTTPServer, str]:
    """A server for one file on 127.0.0.1 (and, with ``sources``, the source API
    under the same token), and the file's URL."""
    token = f"/{secrets.token_urlsafe(12)}"
    route = f"{token}/{quote(name)}"

    class OneFile(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != route:
                self.send_error(404, "sigprof view serves one file only")
                return
            self._reply(200, content_type, body)

        def do_POST(self) -> None:
            if sources is None or self.path != f"{token}/{SOURCE_API}":
                self.send_error(404, "sigprof view serves one file only")
                return
            try:
                size = int(self.headers.get("Content-Length") or 0)
                asked = json.loads(self.rfile.read(min(size, MAX_REQUEST_BYTES)))
                file = asked.get("file") if isinstance(asked, dict) else None
                text = sources.read(file) if isinstance(file, str) else None
            except (ValueError, OSError):
                file, text = None, None
            answer = ({"symbolsLastModified": None, "sourceLastModified": None, "file": file,
                       "source": text} if text is not None else
                      {"error": f"sigprof view does not serve {file!r}: it serves the profile's "
                                f"source files found in --source-dir"})
            self._reply(200 if text is not None else 404, "application/json",
                        json.dumps(answer).encode())

        def _reply(self, status: int, kind: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Access-Control-Allow-Origin", PROFILER_ORIGIN)
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass                          # quiet: the URL is what the user needs

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), OneFile)
    server.daemon_threads = True
    return server, f"http://127.0.0.1:{server.server_address[1]}{route}"


def page_for(file_url: str, svg: bool, symbol_server: bool = False) -> str:
    """What to open: the flame graph itself, or the profiler's page that loads the file
    (told where the source API is, with ``symbol_server``)."""
    if svg:
        return file_url
    page = f"{PROFILER_ORIGIN}/from-url/{quote(file_url, safe='')}/"
    if symbol_server:
        page += f"?symbolServer={quote(file_url.rsplit('/', 1)[0], safe='')}"
    return page


def view(path: str, svg: bool = False, open_browser: bool = True,
         say: Callable[[str], None] = print, source_dirs: Sequence[str] = ()) -> None:
    """Serve ``path`` until Ctrl-C (KeyboardInterrupt), having opened or printed its page;
    with ``source_dirs``, the profile's source files found there too."""
    for directory in source_dirs:
        if not os.path.isdir(directory):
            raise ViewError(f"--source-dir {directory}: not a directory")
    if svg and source_dirs:
        raise ViewError("--source-dir is for the Firefox Profiler's source view, not --svg")
    body, content_type, name = content(path, svg)
    sources = SourceFiles(profile_sources(body), source_dirs) if source_dirs else None
    server, file_url = make_server(body, content_type, name, sources=sources)
    page = page_for(file_url, svg, symbol_server=sources is not None)
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
