"""Batch schedule and per-step demand sets for the simulator (see moesim/sim/plan.py)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def schedule_steps(seq_offsets, phases, batch_size, include_prefill, chunk_tokens):
    """Continuous batching in lockstep, prefill first.

    Returns ``(step_offsets int64[S+1], step_rows int64[R], step_phase int8[S])``: the trace rows each
    step processes, in slot order. A step is either one prefill chunk of one sequence (up to
    ``chunk_tokens`` consecutive prefill rows) or one decode token of every active sequence.
    Sequences enter free slots in trace order at step boundaries; prefill rows are skipped when
    ``include_prefill`` is false (and sequences left with no rows are skipped).
    """
    num_seqs = len(seq_offsets) - 1
    num_rows = seq_offsets[num_seqs]
    step_rows = np.empty(num_rows, dtype=np.int64)
    step_offsets = np.empty(num_rows + 1, dtype=np.int64)
    step_phase = np.empty(num_rows, dtype=np.int8)
    slot_cursor = np.full(batch_size, -1, dtype=np.int64)
    slot_end = np.zeros(batch_size, dtype=np.int64)
    next_seq = 0
    num_steps = 0
    num_out = 0
    step_offsets[0] = 0
    while True:
        # admit sequences into free slots, skipping rows this run does not simulate
        for slot in range(batch_size):
            while slot_cursor[slot] < 0 and next_seq < num_seqs:
                start = seq_offsets[next_seq]
                end = seq_offsets[next_seq + 1]
                next_seq += 1
                if not include_prefill:
                    while start < end and phases[start] == 0:
                        start += 1
                if start < end:
                    slot_cursor[slot] = start
                    slot_end[slot] = end
        active = 0
        for slot in range(batch_size):
            if slot_cursor[slot] >= 0:
                active += 1
        if active == 0:
            break
        prefill_slot = -1
        if include_prefill:
            for slot in range(batch_size):
                if slot_cursor[slot] >= 0 and phases[slot_cursor[slot]] == 0:
                    prefill_slot = slot
                    break
        if prefill_slot >= 0:
            row = slot_cursor[prefill_slot]
            taken = 0
            while row < slot_end[prefill_slot] and phases[row] == 0 and taken < chunk_tokens:
                step_rows[num_out] = row
                num_out += 1
                row += 1
                taken += 1
            step_phase[num_steps] = 0
            slot_cursor[prefill_slot] = row
        else:
            for slot in range(batch_size):
                row = slot_cursor[slot]
                if row >= 0:
                    step_rows[num_out] = row
                    num_out += 1
                    slot_cursor[slot] = row + 1
            step_phase[num_steps] = 1
        num_steps += 1
        step_offsets[num_steps] = num_out
        # free finished slots; skip prefill rows that are not simulated
        for slot in range(batch_size):
            row = slot_cursor[slot]
            if row >= 0:
                if not include_prefill:
                    while row < slot_end[slot] and phases[row] == 0:
                        row += 1
                if row >= slot_end[slot]:
                    row = -1
                slot_cursor[slot] = row
    return step_offsets[: num_steps + 1].copy(), step_rows[:num_out].copy(), step_phase[:num_steps].copy()


@njit(cache=True, nogil=True)
def demand_sets(experts, step_offsets, step_rows, num_experts):
    """Per (step, layer): the union of the step's experts in first-appearance order, with counts.

    Returns ``(offsets int64[S*L+1], ids int16[D], tokens int32[D])``; group ``s*L + l`` is
    ``ids[offsets[g]:offsets[g+1]]``, the experts of layer ``l`` in step ``s`` ordered by first
    appearance (rows in step order, each row's experts in top-k order), and ``tokens`` how many of
    the step's tokens chose each. Negative ids (empty slots) are skipped.
    """
    num_steps = len(step_offsets) - 1
    num_layers = experts.shape[1]
    top_k = experts.shape[2]
    capacity = len(step_rows) * num_layers * top_k
    ids = np.empty(capacity, dtype=np.int16)
    tokens = np.empty(capacity, dtype=np.int32)
    offsets = np.empty(num_steps * num_layers + 1, dtype=np.int64)
    slot_of = np.full(num_experts, -1, dtype=np.int64)
    count = 0
    offsets[0] = 0
    for step in range(num_steps):
        for layer in range(num_layers):
            start = count
            for i in range(step_offsets[step], step_offsets[step + 1]):
                row = step_rows[i]
                for j in range(top_k):
                    e = experts[row, layer, j]
                    if e < 0:
                        continue
                    where = slot_of[e]
                    if where < 0:
                        slot_of[e] = count
                        ids[count] = e
                        tokens[count] = 1
                        count += 1
                    else:
                        tokens[where] += 1
            for d in range(start, count):
                slot_of[ids[d]] = -1
            offsets[step * num_layers + layer + 1] = count
    return offsets, ids[:count].copy(), tokens[:count].copy()
