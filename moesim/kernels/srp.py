"""Window-count histograms for segment routing best performance (SRP).

For every stride-1 window of ``segment`` tokens inside one sequence and every cache key
(``layer * num_experts + expert``) the window count ``f`` is the number of tokens of the window
that activate the key. The kernel histograms ``f = 0..segment`` into caller-chosen cells, so
one kernel serves per-sequence layer histograms (for the bootstrap), per-expert histograms and
anything in between.

Instead of evaluating every (window, key) pair, each key carries its current count and the window
index at which that count started; a count only changes when a token enters or leaves the window,
so the work is O(tokens * layers * k + sequences * layers * experts) for any segment length.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def window_count_histograms(
    experts, seq_offsets, num_experts, segment, row_of_seq, col_of_key, num_rows, num_cols
):
    """int64 ``[num_rows, num_cols, segment + 1]`` window-count histograms.

    ``experts`` int16 ``[T, L, k]`` (-1 = empty slot; a repeated id within one token's list counts
    once), ``seq_offsets`` int64 ``[S + 1]``, ``row_of_seq`` int64 ``[S]`` (row of each sequence),
    ``col_of_key`` int64 ``[L * num_experts]`` (column of each key). Sequences shorter than
    ``segment`` have no windows.
    """
    num_layers = experts.shape[1]
    top_k = experts.shape[2]
    num_keys = num_layers * num_experts
    hist = np.zeros((num_rows, num_cols, segment + 1), dtype=np.int64)
    count = np.zeros(num_keys, dtype=np.int64)
    since = np.zeros(num_keys, dtype=np.int64)
    for s in range(seq_offsets.shape[0] - 1):
        start = seq_offsets[s]
        num_tokens = seq_offsets[s + 1] - start
        if num_tokens < segment:
            continue
        num_windows = num_tokens - segment + 1
        row = row_of_seq[s]
        count[:] = 0
        since[:] = 0
        for t in range(start, start + segment):
            for layer in range(num_layers):
                for j in range(top_k):
                    expert = experts[t, layer, j]
                    if expert < 0 or _seen_before(experts, t, layer, j):
                        continue
                    count[layer * num_experts + expert] += 1
        # Window p covers tokens p .. p+segment-1: token p-1 leaves, token p+segment-1 enters.
        for p in range(1, num_windows):
            for step in range(2):
                t = start + p - 1 if step == 0 else start + p + segment - 1
                delta = -1 if step == 0 else 1
                for layer in range(num_layers):
                    for j in range(top_k):
                        expert = experts[t, layer, j]
                        if expert < 0 or _seen_before(experts, t, layer, j):
                            continue
                        key = layer * num_experts + expert
                        hist[row, col_of_key[key], count[key]] += p - since[key]
                        since[key] = p
                        count[key] += delta
        for key in range(num_keys):
            hist[row, col_of_key[key], count[key]] += num_windows - since[key]
    return hist


@njit(cache=True, nogil=True)
def _seen_before(experts, t, layer, j):
    """True if slot j repeats an id listed earlier in the same token's list."""
    expert = experts[t, layer, j]
    for i in range(j):
        if experts[t, layer, i] == expert:
            return True
    return False
