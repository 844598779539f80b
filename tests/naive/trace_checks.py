"""Plain-Python twin of moesim/kernels/trace_checks.py."""

from __future__ import annotations

import numpy as np

__all__ = ["rows_repeat_an_id"]


def rows_repeat_an_id(words, top_k, row_masks):
    """Whether some row of ``top_k`` int16 ids (stored in ``words``) holds one id >= 0 twice.

    ``row_masks`` is the kernel's precomputed table; the twin does not need it.
    """
    ids = np.asarray(words, dtype=np.uint64).astype("<u8").view("<i2").tolist()
    for start in range(0, len(ids), top_k):
        row = [x for x in ids[start : start + top_k] if x >= 0]
        if len(set(row)) != len(row):
            return True
    return False
