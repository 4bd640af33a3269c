"""Continuous profiling to files: one profile per period, the oldest deleted.

    writer = sigprof.continuous("/var/lib/app/profiles", period_s=60, max_files=60)
    ...                                       # the application runs
    writer.close()                            # writes the period in progress

Each period is a store-less profile of the whole process (every thread, every
store of an engine with epoch interruption), written when the period ends as
``sigprof-<UTC start>-<pid>.<suffix>`` in the directory -- gzipped pprof by
default, the format continuous-profiling agents ingest; any format sigprof
writes can be chosen.  Decisions:

* The next period's profile starts before the last one is written, so the
  gap between periods is one stop (which resolves the samples to symbols)
  and one start, not the write.  It cannot start before the last one stops:
  one store-less profile covers the process at a time.
* Memory is bounded however long it runs: one period's recording at a time
  (the profile's ring has a fixed capacity), dropped once written.
* The cap counts files of this naming in the directory, whichever process
  wrote them, so restarts do not grow it; processes that must not share a
  cap get directories of their own.  A file that cannot be written is
  reported on stderr and the writer goes on with the next period.
* Like ``serve()``, it needs the native capture: profiles start on the
  writer's thread.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, List, Optional

from .defaults import CONTINUOUS_MAX_FILES, CONTINUOUS_PERIOD_S
from .export import exporter, write

FILE_PREFIX = "sigprof-"
MIN_PERIOD_S = 1.0                # shorter periods are mostly stop/start and write


class ContinuousProfiler:
    """The running writer; ``close()`` (or leaving a ``with`` block) stops it
    after writing the period in progress."""

    def __init__(self, directory: "str | os.PathLike[str]", *,
                 period_s: float = CONTINUOUS_PERIOD_S, max_files: int = CONTINUOUS_MAX_FILES,
                 format: str = "pprof", **profile_options: Any):
        from ._options import ProfileOptions
        self.options = ProfileOptions.given(profile_options)   # a bad one fails here
        if not period_s >= MIN_PERIOD_S:
            raise ValueError(f"period_s={period_s!r}: expected at least {MIN_PERIOD_S} s")
        if not (isinstance(max_files, int) and max_files >= 1):
            raise ValueError(f"max_files={max_files!r}: expected a positive whole number")
        self.suffix = exporter(format).suffixes[0]
        self.format = format
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)      # as a log directory would be
        from . import _native
        _native.require_for_background_profiles("sigprof.continuous")
        self.period_s = period_s
        self.max_files = max_files
        self.written: List[str] = []          # paths written, oldest first (also rotated ones)
        self._stop = threading.Event()
        self._started = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="sigprof-continuous", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:           # the first profile could not start: say so here
            self._thread.join()
            raise self._error

    def _run(self) -> None:
        from .profiler import Profiler
        try:
            current = Profiler(options=self.options).start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        while True:
            started_unix_s = time.time()
            self._stop.wait(self.period_s)
            finished = current
            finished.stop()
            if not self._stop.is_set():
                try:
                    current = Profiler(options=self.options).start()
                except Exception as exc:      # e.g. another store-less profile holds the process
                    print(f"sigprof: continuous profiling stops: {exc}", file=sys.stderr)
                    self._stop.set()
            self._write(finished.recording, started_unix_s)
            if self._stop.is_set():
                return

    def _write(self, recording: Any, started_unix_s: float) -> None:
        millis = int(started_unix_s * 1000) % 1000
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started_unix_s)) + f".{millis:03d}Z"
        path = os.path.join(self.directory, f"{FILE_PREFIX}{stamp}-{os.getpid()}{self.suffix}")
        try:
            write(recording, path, self.format)
        except OSError as exc:
            print(f"sigprof: could not write {path}: {exc.strerror or exc}", file=sys.stderr)
            return
        self.written.append(path)
        self._rotate()

    def _rotate(self) -> None:
        ours = sorted(name for name in os.listdir(self.directory)
                      if name.startswith(FILE_PREFIX) and name.endswith(self.suffix))
        for name in ours[:max(0, len(ours) - self.max_files)]:
            try:
                os.unlink(os.path.join(self.directory, name))
            except FileNotFoundError:
                pass                          # another process rotated it first

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "ContinuousProfiler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def continuous(directory: "str | os.PathLike[str]", *, period_s: float = CONTINUOUS_PERIOD_S,
               max_files: int = CONTINUOUS_MAX_FILES, format: str = "pprof",
               **profile_options: Any) -> ContinuousProfiler:
    """Write one profile every ``period_s`` seconds into ``directory``, keeping
    the newest ``max_files``; ``profile_options`` go to each ``sigprof.profile()``."""
    return ContinuousProfiler(directory, period_s=period_s, max_files=max_files, format=format,
                              **profile_options)
