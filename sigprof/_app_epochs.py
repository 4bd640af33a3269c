"""The application's own epochs, kept apart from sigprof's.

An application may time its guests out with epochs: ``store.set_epoch_deadline(n)``
and a ticker thread calling ``engine.increment_epoch()``.  A profile bumps the
same engine's epoch at every tick (from C, or ``_wasmtime.increment_epoch``: never
through the Python method) and its epoch callback keeps moving the deadline, so
on their own the application's deadlines would never fire.  Hence, once
``install()`` ran (``sigprof.instrument()``, or the first use of sigprof's capture
layer -- ``sigprof.profile``, ``sigprof.engine`` -- which imports ``profiler``):

* ``Engine.increment_epoch`` also counts the application's ticks per engine;
* ``Store.set_epoch_deadline`` also records the deadline as an absolute count of
  those ticks (stores that never set one cost nothing);
* while a capture samples a store with such a deadline, the application tick
  that reaches it sets the capture's ``app_expired`` -- on the ticker thread,
  before the epoch moves -- and the capture's epoch callback then returns
  wasmtime's interrupt trap, which the guest's caller gets as it would
  unprofiled (``wasmtime.Trap``, ``trap_code`` INTERRUPT);
* when the capture detaches, the store gets back the ticks the application had
  left (0 if it expired), on a callback that traps as wasmtime does; a capture
  abandoned on a store still running elsewhere stays its epoch callback, so its
  flag stays followed (through an object that does not hold the store).

wasmtime-py 38-50 offers only the trap as epoch-deadline behaviour (no
``epoch_deadline_trap``, ``epoch_deadline_callback`` or
``epoch_deadline_async_yield_and_update`` on ``Store``), so that is what is kept.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, Optional, Tuple

import wasmtime

from . import _wasmtime as wt

_ORIGINAL: Dict[str, Any] = {}
_lock = threading.Lock()
# engine -> the application's increment_epoch() calls so far
_app_ticks: "weakref.WeakKeyDictionary[wasmtime.Engine, int]" = weakref.WeakKeyDictionary()
# store -> its deadline, in its engine's application ticks (absolute)
_deadlines: "weakref.WeakKeyDictionary[wasmtime.Store, int]" = weakref.WeakKeyDictionary()
# id(engine) -> {id(store): (the store, weakly; what its epoch callback reads the
# ``app_expired`` flag from)}, for the stores whose epoch callback is a capture's
Watched = Tuple["weakref.ref[wasmtime.Store]", Any]
_watched: Dict[int, Dict[int, Watched]] = {}


def install() -> None:
    """Wrap the two methods (once; idempotent)."""
    with _lock:
        if _ORIGINAL:
            return
        _ORIGINAL.update(increment_epoch=wasmtime.Engine.increment_epoch,
                         set_epoch_deadline=wasmtime.Store.set_epoch_deadline)
        wasmtime.Engine.increment_epoch = _increment_epoch      # type: ignore[method-assign]
        wasmtime.Store.set_epoch_deadline = _set_epoch_deadline  # type: ignore[method-assign]


def _increment_epoch(self: wasmtime.Engine) -> None:
    ticks = _app_ticks.get(self, 0) + 1
    _app_ticks[self] = ticks
    watched = _watched.get(id(self))
    if watched:
        # Before the epoch moves: the guest's epoch check that this tick causes
        # must find the flag set, not wait for the next tick.
        for store_ref, flag in tuple(watched.values()):
            store = store_ref()
            deadline = _deadlines.get(store) if store is not None else None
            if deadline is not None and ticks >= deadline:
                flag.app_expired = True
    _ORIGINAL["increment_epoch"](self)


def _watched_flag(store: wasmtime.Store) -> Any:
    entry = _watched.get(id(store.engine), {}).get(id(store))
    return entry[1] if entry is not None and entry[0]() is store else None


def _set_epoch_deadline(self: wasmtime.Store, ticks_after_current: int) -> None:
    _deadlines[self] = _app_ticks.get(self.engine, 0) + ticks_after_current
    flag = _watched_flag(self)
    if flag is None:
        _ORIGINAL["set_epoch_deadline"](self, ticks_after_current)
        return
    # Under a capture's callback: the real deadline stays one tick ahead (it samples
    # at every tick) and the callback traps when the application's ticks reach its
    # deadline; one already passed traps at the next epoch check.
    flag.app_expired = ticks_after_current <= 0
    wt.set_store_deadline(self, 0 if flag.app_expired else 1)


def _ticks_left(store: wasmtime.Store) -> Optional[int]:
    deadline = _deadlines.get(store)
    if deadline is None:
        return None
    return max(0, deadline - _app_ticks.get(store.engine, 0))


def watch(store: wasmtime.Store, flag: Any) -> None:
    """A capture's epoch callback now runs ``store``: it traps once ``flag.app_expired``
    is set, which this module does when the application's deadline passes."""
    flag.app_expired = _ticks_left(store) == 0
    engine_id = id(store.engine)
    with _lock:
        watched = _watched.setdefault(engine_id, {})
        for key, (store_ref, _) in tuple(watched.items()):
            if store_ref() is None:         # gone: its id may be reused
                del watched[key]
        watched[id(store)] = (weakref.ref(store), flag)


def unwatch(store: wasmtime.Store) -> None:
    """The store's epoch callback was just replaced by the trapping one: give it the
    application ticks its deadline had left."""
    with _lock:
        watched = _watched.get(id(store.engine))
        entry = watched.get(id(store)) if watched is not None else None
        if watched is not None and entry is not None and entry[0]() is store:
            del watched[id(store)]
            if not watched:
                del _watched[id(store.engine)]
    left = _ticks_left(store)
    if left is not None:
        wt.set_store_deadline(store, left)
