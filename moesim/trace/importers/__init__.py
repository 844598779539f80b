"""Importers: foreign routing-trace formats -> :class:`~moesim.trace.Trace`.

>>> from moesim.trace.importers import import_trace, importer_names
>>> importer_names()
['gptoss-json', 'jsonl', 'moesim', 'npy', 'npz']
>>> trace = import_trace("routing.jsonl", "jsonl", num_experts=64)   # doctest: +SKIP

Each format is one module that registers a function with ``@register_importer("name")``;
:func:`import_trace` checks the options against the function's keyword-only parameters, so an
unknown format or option is a :class:`~moesim.errors.ConfigError` listing the valid ones.
Importers return validated traces whose metadata records ``source`` (format and file) and, where
the format knows it, ``license``.
"""

from moesim.trace.importers.registry import (
    Importer,
    get_importer,
    import_trace,
    importer_names,
    infer_format,
    register_importer,
    source_metadata,
)

# Built-in formats register themselves on import.
from moesim.trace.importers import arrays, gptoss, jsonl, native  # noqa: E402,F401  isort: skip

__all__ = [
    "Importer",
    "get_importer",
    "import_trace",
    "importer_names",
    "infer_format",
    "register_importer",
    "source_metadata",
]
