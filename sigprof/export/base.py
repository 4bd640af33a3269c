"""The one shape every output format has (see ``sigprof.export`` for the registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple, Tuple

if TYPE_CHECKING:
    from ..recording import Recording


class Exporter(NamedTuple):
    name: str                                     # as given to --format / save(format=)
    suffixes: Tuple[str, ...]                     # output names ending so pick this format
    description: str                              # what the CLI says it wrote
    render: Callable[["Recording", str], bytes]   # (recording, output path) -> the file's bytes
