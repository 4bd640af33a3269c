"""``sigprof.instrument()``: make the engines an unmodified application creates
profileable, called once at start-up before it creates them (``sigprof run``
calls it for the program it runs).

From then on:

* every ``wasmtime.Engine`` gets epoch interruption (the application's other
  ``Config`` settings kept), and is known to the profiler as an epoch engine;
* every ``Store`` of an engine whose application did not ask for epochs gets a
  far deadline, so it runs as it would have (a profile takes the deadline over
  while it samples the store, and gives it back);
* modules the application compiles remember their wasm, so that ``serialize()``
  can hand the application the artifact it would have made unprofiled (compiled
  without epoch interruption on a twin engine with its settings), leaving its
  own cache usable by an unprofiled run, while sigprof's cache keeps the epoch
  build under the hash of that artifact;
* ``Module.deserialize`` / ``deserialize_file`` of such an artifact loads the
  epoch build from sigprof's cache (``$XDG_CACHE_HOME/sigprof/modules``);
* ``Module.from_file`` notes the file (``_module_files``): a store-less profile
  names a discovered module by it and reads its DWARF.

A serialized artifact holds compiled code and wasmtime's settings, not the wasm
it was compiled from, so an artifact sigprof has not seen compiled cannot be
recompiled: its ``deserialize`` fails as it would for any other setting
mismatch, and an application that then recompiles (and serializes) fills
sigprof's cache, so its next profiled run loads at full speed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import weakref
from typing import Any, Dict, List, Optional, Tuple, Union

import wasmtime

from . import _app_epochs, _module_files
from ._session import SESSION
from ._wasmtime import FAR_DEADLINE, module_image_range, set_store_deadline

CACHE_SUBDIR = os.path.join("sigprof", "modules")

_ORIGINAL: Dict[str, Any] = {}
# engine -> (the application asked for epoch interruption itself, its Config settings)
_ENGINES: "weakref.WeakKeyDictionary[wasmtime.Engine, Tuple[bool, List[Tuple[str, Any]]]]" = \
    weakref.WeakKeyDictionary()
# module the application compiled on an instrumented engine -> (engine, its wasm)
_COMPILED: "weakref.WeakKeyDictionary[wasmtime.Module, Tuple[wasmtime.Engine, bytes]]" = \
    weakref.WeakKeyDictionary()
_SETTINGS = "_sigprof_settings"


def cache_dir() -> str:
    """Where the epoch builds of the application's artifacts are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, CACHE_SUBDIR)


def _cached_path(artifact: Union[bytes, bytearray]) -> str:
    return os.path.join(cache_dir(), hashlib.sha256(artifact).hexdigest() + ".cwasm")


def instrumented() -> bool:
    return bool(_ORIGINAL)


def instrument() -> None:
    """Hook wasmtime-py's Config, Engine, Store and Module (once; idempotent)."""
    if _ORIGINAL:
        return
    _app_epochs.install()
    _ORIGINAL.update(config_setattr=wasmtime.Config.__setattr__,
                     engine_init=wasmtime.Engine.__init__, store_init=wasmtime.Store.__init__,
                     module_init=wasmtime.Module.__init__,
                     serialize=wasmtime.Module.serialize,
                     deserialize=wasmtime.Module.__dict__["deserialize"],
                     deserialize_file=wasmtime.Module.__dict__["deserialize_file"],
                     from_file=wasmtime.Module.__dict__["from_file"])
    wasmtime.Config.__setattr__ = _config_setattr  # type: ignore[method-assign,assignment]
    wasmtime.Engine.__init__ = _engine_init                # type: ignore[method-assign]
    wasmtime.Store.__init__ = _store_init                  # type: ignore[method-assign]
    wasmtime.Module.__init__ = _module_init                # type: ignore[method-assign]
    wasmtime.Module.serialize = _serialize                 # type: ignore[method-assign]
    wasmtime.Module.deserialize = classmethod(_deserialize)            # type: ignore
    wasmtime.Module.deserialize_file = classmethod(_deserialize_file)  # type: ignore
    wasmtime.Module.from_file = classmethod(_from_file)                # type: ignore


def _config_setattr(self: wasmtime.Config, name: str, value: Any) -> None:
    _ORIGINAL["config_setattr"](self, name, value)
    if not name.startswith("_"):        # a setting: kept to build the twin engine from
        self.__dict__.setdefault(_SETTINGS, []).append((name, value))


def _engine_init(self: wasmtime.Engine, config: Optional[wasmtime.Config] = None) -> None:
    if config is None:
        config = wasmtime.Config()
    settings = list(config.__dict__.get(_SETTINGS, []) if isinstance(config, wasmtime.Config)
                    else [])
    wanted_epochs = any(name == "epoch_interruption" and value for name, value in settings)
    if isinstance(config, wasmtime.Config):
        config.epoch_interruption = True
    _ORIGINAL["engine_init"](self, config)
    _ENGINES[self] = (wanted_epochs, [(n, v) for n, v in settings if n != "epoch_interruption"])
    SESSION.epoch_engines.add(self)


def _store_init(self: wasmtime.Store, engine: Optional[wasmtime.Engine] = None,
                *args: Any, **kwargs: Any) -> None:
    if engine is None:
        engine = wasmtime.Engine()
    _ORIGINAL["store_init"](self, engine, *args, **kwargs)
    if _needs_epoch_build(engine):
        set_store_deadline(self, FAR_DEADLINE)      # sigprof's, not the application's


def _module_init(self: wasmtime.Module, engine: wasmtime.Engine,
                 wasm: Union[str, bytes]) -> None:
    _ORIGINAL["module_init"](self, engine, wasm)
    if _needs_epoch_build(engine):
        _COMPILED[self] = (engine, wasm.encode() if isinstance(wasm, str) else bytes(wasm))


def _from_file(cls: Any, engine: wasmtime.Engine,
               path: "Union[str, bytes, os.PathLike[str]]") -> wasmtime.Module:
    module: wasmtime.Module = _ORIGINAL["from_file"].__func__(cls, engine, path)
    try:                                 # the file a discovered image's DWARF is read from
        _module_files.remember(module_image_range(module), os.path.abspath(os.fsdecode(path)))
    except Exception:                    # (sigprof's bookkeeping must not fail the application)
        pass
    return module


def _twin_engine(settings: List[Tuple[str, Any]]) -> wasmtime.Engine:
    """An engine as the application configured it, without sigprof's epochs."""
    config = wasmtime.Config()
    for name, value in settings:
        _ORIGINAL["config_setattr"](config, name, value)
    engine = wasmtime.Engine.__new__(wasmtime.Engine)
    _ORIGINAL["engine_init"](engine, config)
    return engine


def _serialize(self: wasmtime.Module) -> bytearray:
    epoch_build: bytearray = _ORIGINAL["serialize"](self)
    compiled = _COMPILED.get(self)
    if compiled is None:
        return epoch_build
    engine, wasm = compiled
    twin = _twin_engine(_ENGINES[engine][1])
    plain = wasmtime.Module.__new__(wasmtime.Module)
    _ORIGINAL["module_init"](plain, twin, wasm)
    artifact: bytearray = _ORIGINAL["serialize"](plain)
    _store_cached(artifact, epoch_build)
    return artifact


def _store_cached(artifact: Union[bytes, bytearray], epoch_build: bytearray) -> None:
    """Keep ``epoch_build`` under ``artifact``'s hash."""
    _write_cache_file(_cached_path(artifact), epoch_build)


def _write_cache_file(path: str, data: Union[bytes, bytearray]) -> None:
    """``path`` written whole, or not at all.  A cache: a write that fails only costs
    the next profiled run the work again (a recompile, or hashing an artifact)."""
    temporary = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except OSError:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)


def _needs_epoch_build(engine: wasmtime.Engine) -> bool:
    """``engine`` is one instrument() gave epochs the application did not ask for."""
    made = _ENGINES.get(engine)
    return made is not None and not made[0]


def _load_epoch_build(cls: Any, engine: wasmtime.Engine, path: str) -> Optional[wasmtime.Module]:
    """The cached epoch build at ``path`` (mapped by wasmtime, as the application's own
    ``deserialize_file`` maps its artifact), or None if there is none."""
    if not os.path.isfile(path):
        return None
    module: wasmtime.Module = _ORIGINAL["deserialize_file"].__func__(cls, engine, path)
    return module


def _file_key_path(path: str) -> Optional[str]:
    """Where the hash of the artifact file at ``path`` is remembered, keyed by the file's
    identity (path, inode, size, modification time): a warm start then reads and hashes
    nothing (a Yosys artifact is 220 MB: ~0.5 s of hashing)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    identity = f"{os.path.realpath(path)}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"
    return os.path.join(cache_dir(), "by-file", hashlib.sha256(identity.encode()).hexdigest())


def _epoch_build_for_file(cls: Any, engine: wasmtime.Engine,
                          path: str) -> Optional[wasmtime.Module]:
    key_path = _file_key_path(path)
    if key_path is None:
        return None
    try:
        with open(key_path) as f:
            remembered = os.path.join(cache_dir(), os.path.basename(f.read().strip()))
        return _load_epoch_build(cls, engine, remembered)
    except OSError:
        pass
    try:
        with open(path, "rb") as f:
            cached = _cached_path(f.read())
    except OSError:
        return None
    found = _load_epoch_build(cls, engine, cached)
    if found is not None:
        _write_cache_file(key_path, os.path.basename(cached).encode())
    return found


def _deserialize(cls: Any, engine: wasmtime.Engine,
                 encoded: Union[bytes, bytearray]) -> wasmtime.Module:
    if isinstance(encoded, (bytes, bytearray)) and _needs_epoch_build(engine):
        found = _load_epoch_build(cls, engine, _cached_path(encoded))
        if found is not None:
            return found
    module: wasmtime.Module = _ORIGINAL["deserialize"].__func__(cls, engine, encoded)
    return module


def _deserialize_file(cls: Any, engine: wasmtime.Engine, path: str) -> wasmtime.Module:
    if _needs_epoch_build(engine):
        found = _epoch_build_for_file(cls, engine, path)
        if found is not None:
            return found
    module: wasmtime.Module = _ORIGINAL["deserialize_file"].__func__(cls, engine, path)
    return module
