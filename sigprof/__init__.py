"""sigprof: a CPU-time sampling profiler for WebAssembly guests run by wasmtime-py.

    import sigprof
    engine = sigprof.engine()
    ...
    with sigprof.profile(store, modules=[("app", module)]) as prof:
        instance.exports(store)["run"](store, 10)
    prof.save("run.json")          # Firefox Profiler
    prof.save("run.sigprof")       # raw recording: sigprof.load() it anywhere
"""

__version__ = "0.1.0"

import os  # noqa: E402

from .profiler import FAR_DEADLINE, Profiler, engine, profile
from .rawfile import RecordingFormatError
from .recording import Recording


def load(path: "str | os.PathLike[str]") -> Recording:
    """Read a raw ``.sigprof`` recording (no wasm module needed)."""
    from . import rawfile
    return rawfile.load(os.fspath(path))


__all__ = ["FAR_DEADLINE", "Profiler", "Recording", "RecordingFormatError", "engine", "load",
           "profile", "__version__"]
