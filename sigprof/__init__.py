"""sigprof: a CPU-time sampling profiler for WebAssembly guests run by wasmtime-py.

    import sigprof
    engine = sigprof.engine()
    ...
    with sigprof.profile(store, modules=[("app", module)]) as prof:
        instance.exports(store)["run"](store, 10)
    prof.save("run.json")          # Firefox Profiler
    prof.save("run.sigprof")       # raw recording: sigprof.load() it anywhere

Reading and converting recordings (``load``, ``Recording``) needs no wasmtime;
the capture layer (``profile``, ``engine``, ``serve``, ``continuous`` ...) is imported on first
use (PEP 562), so ``import sigprof`` works with any wasmtime-py installed, or
none, and a wasmtime-py the capture cannot use is reported when a profile
starts.
"""

__version__ = "0.1.0"

import os
from typing import TYPE_CHECKING, Any, List

if TYPE_CHECKING:
    from .rawfile import RecordingFormatError
    from .recording import Recording

# The package's names and the module each lives in, imported at first use: the
# capture layer's so that reading recordings needs no wasmtime, and all of them
# so that `python -m sigprof` starts quickly (a Ctrl-C in its first moments then
# lands in code that turns it into one line).
_LAZY = {"Recording": "recording", "RecordingFormatError": "rawfile",
         "FAR_DEADLINE": "profiler", "Profiler": "profiler", "engine": "profiler",
         "profile": "profiler", "serve": "pprof_server", "PprofServer": "pprof_server",
         "continuous": "continuous_files", "ContinuousProfiler": "continuous_files",
         "instrument": "instrumentation"}


def load(path: "str | os.PathLike[str]") -> "Recording":
    """Read a recording: a raw ``.sigprof`` file, or a Firefox profile (``.json``,
    ``.json.gz``) that sigprof wrote (no wasm module needed)."""
    from . import rawfile
    return rawfile.load(os.fspath(path))


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext sigprof``: the ``%sigprof`` / ``%%sigprof`` magics (``sigprof.notebook``)."""
    from .notebook import load_ipython_extension as load_magics
    load_magics(shell)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sigprof' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["ContinuousProfiler", "FAR_DEADLINE", "PprofServer", "Profiler", "Recording",
           "RecordingFormatError", "continuous", "engine", "instrument", "load", "profile", "serve", "__version__"]
