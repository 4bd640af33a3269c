"""Output formats, chosen by name or by the output file's suffix.

Every format is one ``Exporter`` entry in ``EXPORTERS`` (name, suffixes, the
description the CLI prints, and a function rendering a recording to bytes);
adding a format is adding an entry.  ``write`` puts the bytes on disk
atomically (a temporary file in the same directory, renamed over the target
only when complete), so an interrupted save never leaves half a file.
Exporters import the recording only for type checking: the recording imports
this package, never the other way round.
"""

from __future__ import annotations

import errno
import os
import tempfile
from typing import TYPE_CHECKING, Optional

from . import collapsed, firefox, pprof, raw, svg, text
from .base import Exporter

if TYPE_CHECKING:
    from ..recording import Recording

EXPORTERS = (firefox.EXPORTER, raw.EXPORTER, collapsed.EXPORTER, text.EXPORTER, svg.EXPORTER,
             pprof.EXPORTER)
FORMATS = tuple(e.name for e in EXPORTERS)


class UnknownFormat(ValueError):
    pass


def exporter(name: str) -> Exporter:
    for e in EXPORTERS:
        if e.name == name:
            return e
    raise UnknownFormat(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}")


def exporter_for_path(path: str) -> Exporter:
    lower = path.lower()
    for e in sorted(EXPORTERS, key=lambda e: -max(len(s) for s in e.suffixes)):
        if any(lower.endswith(suffix) for suffix in e.suffixes):
            return e
    suffixes = [s for e in EXPORTERS for s in e.suffixes]
    raise UnknownFormat(
        f"cannot tell the output format from {os.path.basename(path)!r}: use a name ending in "
        f"{', '.join(suffixes[:-1])} or {suffixes[-1]}, or name the format (--format, or "
        f"format= in save())")


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
    if not os.path.isdir(directory):               # say so in the user's words, not mkstemp's
        raise FileNotFoundError(errno.ENOENT, f"directory {directory} does not exist", path)
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


def write(rec: "Recording", path: str, fmt: Optional[str] = None) -> str:
    """Render ``rec`` in format ``fmt`` (default: from the suffix) to ``path``; returns the format."""
    chosen = exporter(fmt) if fmt else exporter_for_path(path)
    atomic_write(path, chosen.render(rec, path))
    return chosen.name
