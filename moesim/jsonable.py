"""Strict JSON for results: numpy values become Python ones, NaN and infinities become null."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """``value`` with arrays as lists, numpy scalars as Python ones, paths as strings, dataclasses
    as dicts and non-finite floats as None, recursively."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, os.PathLike):
        return os.fspath(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(item) for item in value]
    return value


def dumps(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """``value`` as strict JSON text (no NaN), via :func:`to_jsonable`."""
    return json.dumps(to_jsonable(value), indent=indent, sort_keys=sort_keys, allow_nan=False)
