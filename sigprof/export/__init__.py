"""Output formats, chosen by name or by the output file's suffix.

Every writer turns a ``Recording`` into bytes; ``write`` puts them on disk
atomically (a temporary file in the same directory, renamed over the target
only when complete), so an interrupted save never leaves half a file.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from typing import Optional

from ..recording import Recording

FORMATS = ("firefox", "raw", "collapsed", "text")

_SUFFIXES = (
    (".json.gz", "firefox"),
    (".json", "firefox"),
    (".sigprof", "raw"),
    (".collapsed", "collapsed"),
    (".folded", "collapsed"),
    (".txt", "text"),
)


class UnknownFormat(ValueError):
    pass


def format_for_path(path: str) -> str:
    lower = path.lower()
    for suffix, fmt in _SUFFIXES:
        if lower.endswith(suffix):
            return fmt
    raise UnknownFormat(
        f"cannot tell the output format from {os.path.basename(path)!r}: use a name ending in "
        ".json, .json.gz, .sigprof, .collapsed or .txt, or give the format explicitly")


def render(rec: Recording, fmt: str, path: str = "") -> bytes:
    if fmt == "firefox":
        data = json.dumps(rec.to_firefox(), ensure_ascii=False, separators=(",", ":")).encode()
        if path.lower().endswith(".gz"):
            data = gzip.compress(data, mtime=0)
        return data
    if fmt == "raw":
        from .. import rawfile
        return rawfile.dumps(rec)
    if fmt == "collapsed":
        return rec.to_collapsed().encode()
    if fmt == "text":
        return rec.report().encode()
    raise UnknownFormat(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, racily)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777          # replacing a file: keep its mode
    except OSError:
        mode = 0o666 & ~_umask()                       # a new file: what open() would give
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)                # mkstemp makes it 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write(rec: Recording, path: str, fmt: Optional[str] = None) -> str:
    fmt = fmt or format_for_path(path)
    if fmt not in FORMATS:
        raise UnknownFormat(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    atomic_write(path, render(rec, fmt, path))
    return fmt
