"""moesim's own trace files (Parquet / Arrow IPC), so every command can take any input format."""

from __future__ import annotations

from pathlib import Path

from moesim.trace.importers.registry import register_importer
from moesim.trace.io import IPC_SUFFIXES, PARQUET_SUFFIXES, read_trace
from moesim.trace.trace import Trace


@register_importer("moesim", suffixes=PARQUET_SUFFIXES + IPC_SUFFIXES)
def import_moesim(path: Path) -> Trace:
    """A moesim trace (.parquet or .arrow), read and validated as is; its metadata is kept unchanged."""
    return read_trace(path)
