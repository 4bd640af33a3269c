"""Output formats, chosen by name or by the output file's suffix.

Every format is one ``Exporter`` entry in ``EXPORTERS`` (name, suffixes, the
description the CLI prints, and a function rendering a recording to bytes);
adding a format is adding an entry.  ``write_file`` is the one way sigprof
puts an output on disk (``Recording.save`` and every CLI output go through
``write``, which uses it).  Exporters import the recording only for type
checking: the recording imports this package, never the other way round.
"""

from __future__ import annotations

import errno
import os
import stat
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
    """The format ``path``'s suffix names.  The message of ``UnknownFormat`` ends
    "or name the format": the caller says how (an option, an argument)."""
    lower = path.lower()
    for e in sorted(EXPORTERS, key=lambda e: -max(len(s) for s in e.suffixes)):
        if any(lower.endswith(suffix) for suffix in e.suffixes):
            return e
    suffixes = [s for e in EXPORTERS for s in e.suffixes]
    raise UnknownFormat(
        f"cannot tell the output format from {path!r}: use a name ending in "
        f"{', '.join(suffixes[:-1])} or {suffixes[-1]}, or name the format")


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


_WHY = {errno.ENOSPC: "disk full (no space left on the device)",
        errno.EDQUOT: "disk quota exceeded"}


def _naming(path: str, exc: OSError) -> OSError:
    """``exc`` as the user should read it: about ``path`` (never a temporary file),
    a full disk in words."""
    code = exc.errno or errno.EIO
    return type(exc)(code, _WHY.get(code) or exc.strerror or str(exc), path)


def write_file(path: str, data: bytes) -> None:
    """Put ``data`` where ``path`` leads, as writing to it would, but never half a file.

    A symbolic link is followed: its target is written (and a dangling link's
    target created).  A character or block device or a FIFO (``/dev/null``, a
    pipe) is written through: no temporary file, nothing renamed over it.  A
    regular file, or a new one, is written atomically: a temporary file in the
    target's directory, renamed over the target only when complete, so a
    failure leaves any previous file untouched; a replaced file keeps its
    mode.  Every ``OSError`` raised names ``path``, as the caller gave it.
    """
    try:
        mode: Optional[int] = os.stat(path).st_mode        # of what a link leads to
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise _naming(path, exc) from None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)
    if mode is not None and not stat.S_ISREG(mode):
        _write_through(path, data)       # opened by its own name: /dev/stdout's link is magic
        return
    target = os.path.realpath(path)      # the file to replace is the link's target, not the link
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):               # say so in the user's words, not mkstemp's
        raise FileNotFoundError(errno.ENOENT, f"directory {directory} does not exist", path)
    keep_mode = stat.S_IMODE(mode) if mode is not None else 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as exc:
        raise _naming(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), keep_mode)           # mkstemp makes it 0600
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _naming(path, exc) from None
        raise


def _write_through(path: str, data: bytes) -> None:
    """Write to a device or FIFO in place (opening a FIFO waits for its reader)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as exc:
        raise _naming(path, exc) from None


def write(rec: "Recording", path: str, fmt: Optional[str] = None) -> str:
    """Render ``rec`` in format ``fmt`` (default: from the suffix) to ``path``; returns the format."""
    chosen = exporter(fmt) if fmt else exporter_for_path(path)
    write_file(path, chosen.render(rec, path))
    return chosen.name
