"""The optional ``capture`` extra: torch and transformers, imported only when capture runs."""

from __future__ import annotations

import importlib
from types import ModuleType

from moesim.errors import MissingExtraError

PURPOSE = "trace capture from Hugging Face models"


def require() -> tuple[ModuleType, ModuleType]:
    """Import and return ``(torch, transformers)``; :class:`MissingExtraError` if either is missing."""
    modules = []
    for package in ("torch", "transformers"):
        try:
            modules.append(importlib.import_module(package))
        except ImportError:
            raise MissingExtraError("capture", package, PURPOSE) from None
    return modules[0], modules[1]
