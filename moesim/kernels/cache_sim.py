"""Single-size cache simulation: hit flags of every request, and FIFO curves size by size.

One cache of a given capacity is run over the stream with the shared mechanism (hit -> touch;
miss -> evict while full -> insert) and the policies of :mod:`moesim.kernels.cache_common`. LRU
uses the request stream itself as its recency queue and FIFO a ring buffer (O(1) per request);
LFU, Belady and SCH keep a min segment tree over keys (O(log K)). Under pinned accounting the
current group's keys are "pinned": LRU/FIFO step over them when looking for a victim, the tree
holds +inf for them.

FIFO is not a stack algorithm (Belady's anomaly), so :func:`fifo_hit_counts` simulates every size;
sizes at or above a sequence's number of distinct keys never evict and are filled in directly.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from moesim.kernels.cache_common import (
    BELADY,
    FIFO,
    LRU,
    NOT_APPLICABLE,
    PINNED,
    REFERENCE,
    REQUEST,
    SCH,
    TIME_SHIFT,
    extend_window,
    fill_next_use,
    max_group_size,
    max_sequence_requests,
    priority,
)

_INF = np.int64(0x7FFFFFFFFFFFFFFF)
_WINDOW_STEP = np.int64(1) << TIME_SHIFT


@njit(cache=True, nogil=True)
def _tree_set(tree, leaves, key, value):
    i = leaves + key
    tree[i] = value
    i >>= 1
    while i >= 1:
        left = tree[2 * i]
        right = tree[2 * i + 1]
        tree[i] = left if left < right else right
        i >>= 1


@njit(cache=True, nogil=True)
def _tree_argmin(tree, leaves):
    i = 1
    while i < leaves:
        i = 2 * i if tree[2 * i] == tree[i] else 2 * i + 1
    return i - leaves


@njit(cache=True, nogil=True)
def _work(keys, group_offsets, seq_group_offsets, num_keys, policy, accounting):
    """Scratch arrays of :func:`_simulate_sequence`, allocated once per call."""
    leaves = 1
    while leaves < max(num_keys, 1):
        leaves *= 2
    longest = max_sequence_requests(group_offsets, seq_group_offsets)
    return (
        np.zeros(num_keys, dtype=np.bool_),  # 0 resident
        np.zeros(num_keys, dtype=np.bool_),  # 1 seen
        np.zeros(num_keys, dtype=np.bool_),  # 2 pinned
        np.full(num_keys, -1, dtype=np.int64),  # 3 FIFO ring / LRU last request
        np.full(2 * leaves, _INF, dtype=np.int64),  # 4 min tree over keys
        np.zeros(num_keys, dtype=np.int64),  # 5 count
        np.zeros(num_keys, dtype=np.int64),  # 6 window
        np.zeros(num_keys, dtype=np.int64),  # 7 priority
        np.empty(num_keys, dtype=np.int64),  # 8 scratch (Belady next use, LRU touched keys)
        np.empty(longest if policy == BELADY or policy == FIFO else 0, dtype=np.int64),  # 9 next use / ranks
        np.zeros(max_group_size(group_offsets, 0, len(group_offsets) - 1) if accounting == REFERENCE else 0,
                 dtype=np.bool_),  # 10 resident at the start of the group
    )


@njit(cache=True, nogil=True)
def _first_ranks(keys, start, end, seen, out):
    """``out[i]`` = number of distinct keys before request ``start + i`` if it is the first request
    of its key in ``start:end``, else -1. Returns the number of distinct keys."""
    for r in range(start, end):
        seen[keys[r]] = False
    distinct = 0
    for r in range(start, end):
        if seen[keys[r]]:
            out[r - start] = -1
        else:
            seen[keys[r]] = True
            out[r - start] = distinct
            distinct += 1
    return distinct


@njit(cache=True, nogil=True)
def _fifo_sequence(keys, group_offsets, g0, g1, capacity, accounting, cold_free, work, first_rank, ring, flags):
    """FIFO on one sequence: residents in a ring buffer, oldest at ``head`` (O(1) per request).

    Under pinned accounting a victim may sit behind pinned residents at the old end; those are
    shifted up by one slot, keeping their order, so the ring stays in insertion order.
    ``first_rank`` comes from :func:`_first_ranks`; flags are written only if ``flags`` is not
    empty."""
    resident, pinned, was_in = work[0], work[2], work[10]
    write_flags = len(flags) > 0
    a = group_offsets[g0]
    size = 0
    head = 0
    hits = 0
    for g in range(g0, g1):
        ga = group_offsets[g]
        gb = group_offsets[g + 1]
        if accounting == REFERENCE:
            for r in range(ga, gb):
                was_in[r - ga] = resident[keys[r]]
        elif accounting == PINNED:
            for r in range(ga, gb):
                pinned[keys[r]] = True
        for r in range(ga, gb):
            x = keys[r]
            rank = first_rank[r - a]
            if rank >= 0:
                hit = cold_free and rank < capacity
            elif accounting == REFERENCE:
                hit = was_in[r - ga]
            else:
                hit = resident[x]
            if write_flags:
                flags[r] = 1 if hit else 0
            hits += 1 if hit else 0
            if resident[x]:
                continue
            resident[x] = True
            if size < capacity:
                ring[size] = x
                size += 1
                continue
            j = head
            while pinned[ring[j]]:
                j = j + 1 if j + 1 < capacity else 0
            resident[ring[j]] = False
            while j != head:
                i = j - 1 if j > 0 else capacity - 1
                ring[j] = ring[i]
                j = i
            ring[head] = x
            head = head + 1 if head + 1 < capacity else 0
        if accounting == PINNED:
            for r in range(ga, gb):
                pinned[keys[r]] = False
    for i in range(size):  # leave the cache empty for the next run
        resident[ring[i]] = False
    return hits


@njit(cache=True, nogil=True)
def _lru_sequence(keys, group_offsets, g0, g1, capacity, accounting, cold_free, work, last, flags):
    """LRU on one sequence with the request stream itself as the recency queue (O(1) amortised).

    ``last[x]`` is the index of x's latest request (-1 never requested, -2 evicted); an index i
    is live iff ``last[keys[i]] == i``, so the least recent resident is the first live index from
    ``head`` on, which only moves forward. Under pinned accounting live pinned indices are stepped
    over (at most the group)."""
    pinned, touched, was_in = work[2], work[8], work[10]
    write_flags = len(flags) > 0
    a = group_offsets[g0]
    b = group_offsets[g1]
    size = 0
    head = a
    hits = 0
    distinct = 0
    # Per-request accounting needs no group structure: one flat pass (fastest path).
    num_groups = g1 - g0 if accounting != REQUEST else 1
    for g in range(g0, g0 + num_groups):
        ga = group_offsets[g] if accounting != REQUEST else a
        gb = group_offsets[g + 1] if accounting != REQUEST else b
        if accounting == REFERENCE:
            for r in range(ga, gb):
                was_in[r - ga] = last[keys[r]] >= 0
        elif accounting == PINNED:
            for r in range(ga, gb):
                pinned[keys[r]] = True
        for r in range(ga, gb):
            x = keys[r]
            previous = last[x]
            if previous == -1:
                hit = cold_free and distinct < capacity
                touched[distinct] = x
                distinct += 1
            elif accounting == REFERENCE:
                hit = was_in[r - ga]
            else:
                hit = previous >= 0
            if write_flags:
                flags[r] = 1 if hit else 0
            hits += 1 if hit else 0
            if previous < 0:
                if size < capacity:
                    size += 1
                else:
                    while last[keys[head]] != head:
                        head += 1
                    i = head
                    while last[keys[i]] != i or pinned[keys[i]]:
                        i += 1
                    last[keys[i]] = -2
                    if i == head:
                        head += 1
            last[x] = r
        if accounting == PINNED:
            for r in range(ga, gb):
                pinned[keys[r]] = False
    for i in range(distinct):  # leave the cache empty (all keys never requested) for the next run
        last[touched[i]] = -1
    return hits


@njit(cache=True, nogil=True)
def _simulate_sequence(
    keys, group_offsets, group_token, g0, g1, capacity, policy, accounting, cold_free, segment, work, flags
):
    """Run one sequence through a cache of ``capacity``; write 1/0 flags; return the hit count."""
    if policy == LRU:
        return _lru_sequence(keys, group_offsets, g0, g1, capacity, accounting, cold_free, work, work[3], flags)
    if policy == FIFO:
        first_rank = work[9]
        _first_ranks(keys, group_offsets[g0], group_offsets[g1], work[1], first_rank)
        return _fifo_sequence(
            keys, group_offsets, g0, g1, capacity, accounting, cold_free, work, first_rank, work[3], flags
        )
    resident, seen, pinned, _, tree, count, window, pri, scratch, next_use, was_in = work
    leaves = len(tree) // 2
    a = group_offsets[g0]
    b = group_offsets[g1]
    for r in range(a, b):
        x = keys[r]
        seen[x] = False
        count[x] = 0
        window[x] = 0
    if policy == BELADY:
        fill_next_use(keys, a, b, scratch, next_use)
    size = 0
    distinct = 0
    hits = 0
    window_end = g0
    for g in range(g0, g1):
        ga = group_offsets[g]
        gb = group_offsets[g + 1]
        if policy == SCH:
            counted = window_end
            limit = group_token[g] + segment
            window_end = extend_window(keys, group_offsets, group_token, counted, g1, limit, window)
            for r in range(group_offsets[counted], group_offsets[window_end]):
                y = keys[r]
                pri[y] += _WINDOW_STEP
                if resident[y] and not pinned[y]:
                    _tree_set(tree, leaves, y, pri[y])
        if accounting == REFERENCE:
            for r in range(ga, gb):
                was_in[r - ga] = resident[keys[r]]
        elif accounting == PINNED:
            for r in range(ga, gb):
                y = keys[r]
                pinned[y] = True
                if resident[y]:
                    _tree_set(tree, leaves, y, _INF)

        for r in range(ga, gb):
            x = keys[r]
            if not seen[x]:
                seen[x] = True
                hit = cold_free and distinct < capacity
                distinct += 1
            elif accounting == REFERENCE:
                hit = was_in[r - ga]
            else:
                hit = resident[x]
            flags[r] = 1 if hit else 0
            hits += 1 if hit else 0

            if not resident[x]:
                if size == capacity:
                    victim = _tree_argmin(tree, leaves)
                    _tree_set(tree, leaves, victim, _INF)
                    resident[victim] = False
                    size -= 1
                resident[x] = True
                size += 1
            count[x] += 1
            if policy == SCH:
                window[x] -= 1
            nu = next_use[r - a] if policy == BELADY else 0
            pri[x] = priority(policy, r - a + 1, count[x], window[x], nu, 0)
            if not pinned[x]:
                _tree_set(tree, leaves, x, pri[x])

        if accounting == PINNED:
            for r in range(ga, gb):
                y = keys[r]
                pinned[y] = False
                _tree_set(tree, leaves, y, pri[y])

    for r in range(a, b):  # leave the cache empty for the next run
        x = keys[r]
        if resident[x]:
            resident[x] = False
            _tree_set(tree, leaves, x, _INF)
        pri[x] = 0
    return hits


@njit(cache=True, nogil=True)
def cache_hit_flags(
    keys,
    group_offsets,
    group_token,
    seq_group_offsets,
    num_keys,
    capacity,
    policy,
    accounting,
    cold_free,
    segment,
):
    """int8[N]: 1 if the request is a hit in a cache of ``capacity``, else 0; -1 for every request
    of a sequence where pinned accounting does not apply (a group larger than the capacity)."""
    flags = np.zeros(len(keys), dtype=np.int8)
    work = _work(keys, group_offsets, seq_group_offsets, num_keys, policy, accounting)
    for s in range(len(seq_group_offsets) - 1):
        g0 = seq_group_offsets[s]
        g1 = seq_group_offsets[s + 1]
        if accounting == PINNED and max_group_size(group_offsets, g0, g1) > capacity:
            flags[group_offsets[g0] : group_offsets[g1]] = NOT_APPLICABLE
            continue
        _simulate_sequence(
            keys, group_offsets, group_token, g0, g1, capacity, policy, accounting, cold_free, segment, work, flags
        )
    return flags


@njit(cache=True, nogil=True)
def fifo_hit_counts(keys, group_offsets, seq_group_offsets, num_keys, max_capacity, accounting, cold_free):
    """int64[S, C]: FIFO hits per sequence for every cache size 1..C, one simulation per size.

    Cost O(N * min(C, distinct keys per sequence)); -1 where pinned accounting does not apply.
    """
    num_seqs = len(seq_group_offsets) - 1
    out = np.zeros((num_seqs, max_capacity), dtype=np.int64)
    no_flags = np.zeros(0, dtype=np.int8)
    work = _work(keys, group_offsets, seq_group_offsets, num_keys, FIFO, accounting)
    first_rank = work[9]
    for s in range(num_seqs):
        g0 = seq_group_offsets[s]
        g1 = seq_group_offsets[s + 1]
        distinct = _first_ranks(keys, group_offsets[g0], group_offsets[g1], work[1], first_rank)
        smallest = max_group_size(group_offsets, g0, g1) if accounting == PINNED else 1
        evicting = max(distinct, smallest, 1)  # larger caches never evict
        for c in range(1, max_capacity + 1):
            if c < smallest:
                out[s, c - 1] = NOT_APPLICABLE
            elif c <= evicting:
                out[s, c - 1] = _fifo_sequence(
                    keys, group_offsets, g0, g1, c, accounting, cold_free, work, first_rank, work[3], no_flags
                )
            else:  # nothing is ever evicted: the same hits as the last simulated size
                out[s, c - 1] = out[s, c - 2]
    return out
