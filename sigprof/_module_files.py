"""The wasm files modules were compiled from, where sigprof saw them read.

Under ``instrument()`` (and so ``sigprof run``) ``Module.from_file`` notes the file
of each module it compiles, by the module's image range.  A store-less profile
finds the modules it samples from their code alone; the file a discovered image
was compiled from gives it a name (the file's) and, where the file has DWARF,
source lines and names for the functions its name section leaves unnamed.

Kept by image range, the newest ``MODULE_FILES`` of them, not by module object: a
store keeps the modules it instantiated alive after the application has let go of
its ``Module``, and the profile reads them at its end.  A range a later module
reuses still names the earlier one's file; the resolver checks the file's code
against the image (``_resolve.code_mismatch``) before it uses any of it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional, Tuple

MODULE_FILES = 256

_files: "OrderedDict[Tuple[int, int], str]" = OrderedDict()
_lock = threading.Lock()          # modules compile on any thread


def remember(image_range: Tuple[int, int], path: str) -> None:
    with _lock:
        _files[image_range] = path
        _files.move_to_end(image_range)
        while len(_files) > MODULE_FILES:
            _files.popitem(last=False)


def file_of(image_range: Tuple[int, int]) -> Optional[str]:
    with _lock:
        return _files.get(image_range)
