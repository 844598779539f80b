"""Routing traces: the in-memory model, the on-disk format, importers and generators."""

from moesim.trace.io import TraceWriter, read_trace, write_trace
from moesim.trace.schema import FORMAT_VERSION, PHASES
from moesim.trace.trace import Trace

__all__ = ["FORMAT_VERSION", "PHASES", "Trace", "TraceWriter", "read_trace", "write_trace"]
