"""Checks on trace arrays. Each raises :class:`TraceError` with one line naming where, column, row, fix.

``where`` prefixes every message: ``"trace"`` for in-memory data, ``"file 'x.parquet'"`` when reading.
Row numbers are the row indices the caller passed in (file order when reading).
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np

from moesim.errors import TraceError
from moesim.trace.schema import PHASES

_INT16_MAX = np.iinfo(np.int16).max
# Below this many ids the exact numpy search is quick, and numba is not worth loading.
SCREEN_MIN_ENTRIES = 1 << 20


def fail(where: str, message: str) -> None:
    raise TraceError(f"{where}: {message}")


def check_num_experts(where: str, num_experts: object) -> int:
    if isinstance(num_experts, bool) or not isinstance(num_experts, (int, np.integer)):
        fail(where, f"num_experts must be an integer, got {num_experts!r}")
    value = int(num_experts)  # type: ignore[arg-type]
    if not 1 <= value <= _INT16_MAX:
        fail(where, f"num_experts must be in 1..{_INT16_MAX}, got {value}")
    return value


def check_expert_ids(where: str, column: str, experts: np.ndarray, num_experts: int) -> None:
    """Ids in -1..E-1 and no id twice within one token's list at one layer."""
    if experts.size == 0:
        return
    low, high = int(experts.min()), int(experts.max())
    if high >= num_experts:
        token, layer, _ = np.argwhere(experts >= num_experts)[0]
        value = int(experts[token, layer].max())
        fail(
            where,
            f"column '{column}': value {value} at token {token} layer {layer} >= num_experts "
            f"({num_experts}); set num_experts to the model's experts per layer or fix the ids",
        )
    if low < -1:
        token, layer, _ = np.argwhere(experts < -1)[0]
        value = int(experts[token, layer].min())
        fail(
            where,
            f"column '{column}': value {value} at token {token} layer {layer} is negative; "
            f"expert ids are 0..{num_experts - 1}, and -1 marks an empty slot",
        )
    width = experts.shape[2]
    if width < 2 or not _may_repeat(experts):
        return
    for i in range(width):
        a = experts[:, :, i]
        for j in range(i + 1, width):
            dup = (a == experts[:, :, j]) & (a >= 0)
            if dup.any():
                token, layer = np.argwhere(dup)[0]
                fail(
                    where,
                    f"column '{column}': expert {int(a[token, layer])} appears twice at token "
                    f"{token} layer {layer}; a token's top-k experts must be distinct",
                )


def _may_repeat(experts: np.ndarray) -> bool:
    """False when the screening kernel proves that no token repeats an expert at any layer.

    True (for small or unusual arrays, or when the kernel finds a repeat) sends the caller to the
    exact search, which locates the first repeat for the message.
    """
    if (
        experts.size < SCREEN_MIN_ENTRIES
        or experts.dtype != np.int16
        or not experts.flags.c_contiguous
        or sys.byteorder != "little"
    ):
        return True
    from moesim.kernels.trace_checks import rows_repeat_an_id

    width = experts.shape[2]
    flat = experts.reshape(-1)
    # The kernel reads whole rows as 64-bit words: a multiple of 4 / gcd(k, 4) rows.
    rows = len(flat) // width
    head_rows = rows - rows % (4 // math.gcd(width, 4))
    head = flat[: head_rows * width]
    if head.ctypes.data % 8:
        head = head.copy()
    if rows_repeat_an_id(head.view(np.uint64), width, row_masks(width)):
        return True
    for row in flat[head_rows * width :].reshape(-1, width).tolist():
        ids = [x for x in row if x >= 0]
        if len(set(ids)) != len(ids):
            return True
    return False


@functools.cache
def row_masks(top_k: int) -> np.ndarray:
    """uint64 ``[top_k - 1, period]``: which lanes of a word pair with the lane ``d`` further on in one row.

    Bit 15 of lane j of ``row_masks(k)[d - 1, p]`` is set iff id ``4p + j`` and id ``4p + j + d``
    belong to the same row of k ids; the pattern repeats every ``period = k / gcd(k, 4)`` words.
    """
    period = top_k // math.gcd(top_k, 4)
    masks = np.zeros((max(top_k - 1, 0), period), dtype=np.uint64)
    for distance in range(1, top_k):
        for phase in range(period):
            lanes = [j for j in range(4) if (4 * phase + j) % top_k + distance < top_k]
            masks[distance - 1, phase] = sum(0x8000 << (16 * j) for j in lanes)
    masks.flags.writeable = False
    return masks


def check_weights(where: str, weights: np.ndarray) -> None:
    if weights.size == 0:
        return
    low, high = weights.min(), weights.max()
    if low >= 0 and high < np.inf:  # NaN fails both comparisons
        return
    bad = ~np.isfinite(weights)
    if bad.any():
        token, layer, slot = np.argwhere(bad)[0]
        fail(
            where,
            f"column 'weights': value {weights[token, layer, slot]} at token {token} layer {layer} "
            f"slot {slot} is not finite; gate weights must be finite and >= 0",
        )
    if (weights < 0).any():
        token, layer, slot = np.argwhere(weights < 0)[0]
        fail(
            where,
            f"column 'weights': value {weights[token, layer, slot]} at token {token} layer {layer} "
            f"slot {slot} is negative; store the router's (softmax) gate weights, not raw logits",
        )


def check_phases(where: str, phases: np.ndarray) -> None:
    bad = (phases < 0) | (phases >= len(PHASES))
    if bad.any():
        row = int(np.argmax(bad))
        fail(
            where,
            f"column 'phase': value {int(phases[row])} at token {row} is not a phase code; "
            f"use 0 (prefill) or 1 (decode)",
        )


def check_positions(
    where: str, seq_ids: np.ndarray, positions: np.ndarray, rows: np.ndarray | None = None
) -> None:
    """Positions strictly increase within each (contiguous) sequence.

    ``rows`` maps the given order back to the caller's row numbers for the message.
    """
    if (positions < 0).any():
        row = int(np.argmax(positions < 0))
        row = int(rows[row]) if rows is not None else row
        fail(where, f"column 'position': value {int(positions.min())} at token {row} is negative")
    if len(positions) < 2:
        return
    same = seq_ids[1:] == seq_ids[:-1]
    bad = same & (positions[1:] <= positions[:-1])
    if bad.any():
        i = int(np.argmax(bad)) + 1
        row = int(rows[i]) if rows is not None else i
        fail(
            where,
            f"column 'position': position {int(positions[i])} at token {row} does not increase "
            f"(previous token of sequence {int(seq_ids[i])} is at {int(positions[i - 1])}); "
            f"rows of a sequence must be in execution order",
        )
