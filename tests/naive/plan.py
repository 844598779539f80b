"""Plain-Python twins of moesim/kernels/plan.py."""

from __future__ import annotations

import numpy as np

__all__ = ["schedule_steps", "demand_sets"]


def schedule_steps(seq_offsets, phases, batch_size, include_prefill, chunk_tokens):
    queue = []
    for s in range(len(seq_offsets) - 1):
        rows = [r for r in range(seq_offsets[s], seq_offsets[s + 1]) if include_prefill or phases[r] != 0]
        if rows:
            queue.append(rows)
    slots = [None] * batch_size  # each: list of remaining rows
    steps, kinds = [], []
    while True:
        for i in range(batch_size):
            if slots[i] is None and queue:
                slots[i] = queue.pop(0)
        if all(s is None for s in slots):
            break
        prefill = next((i for i, s in enumerate(slots) if include_prefill and s and phases[s[0]] == 0), None)
        if prefill is not None:
            rows = []
            while slots[prefill] and phases[slots[prefill][0]] == 0 and len(rows) < chunk_tokens:
                rows.append(slots[prefill].pop(0))
            steps.append(rows)
            kinds.append(0)
        else:
            rows = [s.pop(0) for s in slots if s]
            steps.append(rows)
            kinds.append(1)
        slots = [s if s else None for s in slots]
    offsets = np.cumsum([0] + [len(r) for r in steps]).astype(np.int64)
    flat = np.array([r for rows in steps for r in rows], dtype=np.int64)
    return offsets, flat, np.array(kinds, dtype=np.int8)


def demand_sets(experts, step_offsets, step_rows, num_experts):
    ids, tokens, offsets = [], [], [0]
    for s in range(len(step_offsets) - 1):
        rows = step_rows[step_offsets[s]:step_offsets[s + 1]]
        for layer in range(experts.shape[1]):
            counts = {}
            for row in rows:
                for e in experts[row, layer]:
                    if e >= 0:
                        counts[int(e)] = counts.get(int(e), 0) + 1  # dicts keep first-insertion order
            ids.extend(counts)
            tokens.extend(counts.values())
            offsets.append(len(ids))
    return np.array(offsets, dtype=np.int64), np.array(ids, dtype=np.int16), np.array(tokens, dtype=np.int32)
