"""A profile's options: one object, every field checked when it is made.

``sigprof.profile()``, ``continuous()``, ``serve()`` and the CLI all describe a
profile with a ``ProfileOptions``; it is made (and so checked) where the user
gave the options -- before anything is installed, and before a background
profile's thread starts -- so a refused option leaves the process as it was and
the error names the option.  What ``profile()`` documents, each field holds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ._ring import FULL_KEEP_NEWEST, FULL_STOP
from ._timer import CLOCKS, SOURCES, TickSource
from .defaults import DEFAULT_CAPACITY, DEFAULT_MAX_DEPTH

MIN_INTERVAL_S = 1e-6           # what perf events accept (and the CLI's --interval range)
MAX_INTERVAL_S = 60.0
FLAGS = ("host_details", "use_tick_pc", "python_frames")


def _refuse(option: str, value: object, why: str) -> ValueError:
    """The one shape of a refused option: ``interval=1e-07: why``."""
    return ValueError(f"{option}={value!r}: {why}")


@dataclass(frozen=True)
class ProfileOptions:
    """How a profile samples (``sigprof.profile()`` says what each means)."""

    interval: Optional[float] = None      # seconds; None: the clock's default
    clock: str = "cpu"
    capacity: int = DEFAULT_CAPACITY      # samples per store
    max_depth: int = DEFAULT_MAX_DEPTH    # guest frames per sample
    when_full: str = FULL_KEEP_NEWEST
    host_details: bool = False
    ticks: Optional[TickSource] = None    # a custom tick source (tests)
    name: Optional[str] = None
    use_tick_pc: bool = True
    python_frames: bool = True
    source: str = "auto"

    @classmethod
    def given(cls, options: Mapping[str, Any]) -> "ProfileOptions":
        """From keyword options as a user wrote them; an unknown one is refused by name."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown profile option {unknown[0]!r}; the options are "
                            f"{', '.join(sorted(known))}")
        return cls(**options)

    def __post_init__(self) -> None:
        ticks, clock, interval = self.ticks, self.clock, self.interval
        if ticks is not None and not isinstance(ticks, TickSource):
            raise TypeError(f"ticks must be a sigprof._timer.TickSource, not {type(ticks).__name__}")
        if ticks is None:
            if not isinstance(clock, str) or clock not in CLOCKS:
                raise _refuse("clock", clock, f"must be one of {', '.join(CLOCKS)}")
            if interval is not None:
                if (not isinstance(interval, (int, float)) or isinstance(interval, bool)
                        or not interval > 0 or interval == float("inf")):
                    raise _refuse("interval", interval, "must be a positive, finite number of "
                                                        "seconds")
                if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
                    raise _refuse("interval", interval, f"out of range ({MIN_INTERVAL_S:g} to "
                                                        f"{MAX_INTERVAL_S:g} seconds: 1 us to 60 s)")
        for label, value in (("capacity", self.capacity), ("max_depth", self.max_depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _refuse(label, value, "must be a positive integer")
        source = self.source
        if not isinstance(source, str) or source not in SOURCES:
            raise _refuse("source", source, f"must be one of {', '.join(SOURCES)}")
        if source == "perf" and ticks is None and clock not in ("cpu", "prof"):
            raise _refuse("source", source, "perf events sample CPU time: use them with "
                                            "clock='cpu' or 'prof'")
        if self.when_full not in (FULL_KEEP_NEWEST, FULL_STOP):
            raise _refuse("when_full", self.when_full,
                          f"must be {FULL_KEEP_NEWEST!r} or {FULL_STOP!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise _refuse("name", self.name, "must be a string")
        for flag in FLAGS:
            setting = getattr(self, flag)
            if not isinstance(setting, bool):
                raise _refuse(flag, setting, "must be True or False")
