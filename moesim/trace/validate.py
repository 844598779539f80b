"""Checks on trace arrays. Each raises :class:`TraceError` with one line naming where, column, row, fix.

``where`` prefixes every message: ``"trace"`` for in-memory data, ``"file 'x.parquet'"`` when reading.
Row numbers are the row indices the caller passed in (file order when reading).
"""

from __future__ import annotations

import numpy as np

from moesim.errors import TraceError
from moesim.trace.schema import PHASES

_INT16_MAX = np.iinfo(np.int16).max


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


def check_weights(where: str, weights: np.ndarray) -> None:
    if weights.size == 0:
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
