"""Single-size cache simulation: hit flags of every request, and FIFO curves size by size.

One cache of a given capacity is run over the stream with the shared mechanism (hit -> touch;
miss -> evict while full -> insert) and the policies of :mod:`moesim.kernels.cache_common`. LRU
keeps its residents in a doubly linked list and FIFO in a ring buffer (O(1) per request); LFU,
Belady and SCH keep a min segment tree over keys (O(log K)). Under pinned accounting the current
group's keys are "pinned": LRU/FIFO skip them when looking for a victim, the tree holds +inf.

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
def _unlink(prev, nxt, ends, x):
    """Remove x from the list; ``ends`` = [head (newest), tail (oldest)]."""
    p = prev[x]
    n = nxt[x]
    if p >= 0:
        nxt[p] = n
    else:
        ends[0] = n
    if n >= 0:
        prev[n] = p
    else:
        ends[1] = p


@njit(cache=True, nogil=True)
def _push_head(prev, nxt, ends, x):
    prev[x] = -1
    nxt[x] = ends[0]
    if ends[0] >= 0:
        prev[ends[0]] = x
    else:
        ends[1] = x
    ends[0] = x


@njit(cache=True, nogil=True)
def _work(keys, group_offsets, seq_group_offsets, num_keys, policy):
    """Scratch arrays of :func:`_simulate_sequence`, allocated once per call."""
    leaves = 1
    while leaves < max(num_keys, 1):
        leaves *= 2
    longest = max_sequence_requests(group_offsets, seq_group_offsets)
    return (
        np.zeros(num_keys, dtype=np.bool_),  # resident
        np.zeros(num_keys, dtype=np.bool_),  # seen
        np.zeros(num_keys, dtype=np.bool_),  # pinned
        np.full(num_keys, -1, dtype=np.int64),  # prev
        np.full(num_keys, -1, dtype=np.int64),  # next
        np.full(2 * leaves, _INF, dtype=np.int64),  # min tree over keys
        np.zeros(num_keys, dtype=np.int64),  # count
        np.zeros(num_keys, dtype=np.int64),  # window
        np.zeros(num_keys, dtype=np.int64),  # priority
        np.empty(num_keys, dtype=np.int64),  # scratch
        np.empty(longest if policy == BELADY or policy == FIFO else 0, dtype=np.int64),  # next use / first ranks
        np.zeros(max(max_group_size(group_offsets, 0, len(group_offsets) - 1), 1), dtype=np.bool_),
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
    resident, pinned, was_in = work[0], work[2], work[11]
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
def _simulate_sequence(
    keys, group_offsets, group_token, g0, g1, capacity, policy, accounting, cold_free, segment, work, flags
):
    """Run one sequence through a cache of ``capacity``; write 1/0 flags; return the hit count."""
    if policy == FIFO:
        first_rank = work[10]
        _first_ranks(keys, group_offsets[g0], group_offsets[g1], work[1], first_rank)
        return _fifo_sequence(
            keys, group_offsets, g0, g1, capacity, accounting, cold_free, work, first_rank, work[3], flags
        )
    resident, seen, pinned, prev, nxt, tree, count, window, pri, scratch, next_use, was_in = work
    leaves = len(tree) // 2
    listed = policy == LRU
    a = group_offsets[g0]
    b = group_offsets[g1]
    for r in range(a, b):
        x = keys[r]
        seen[x] = False
        count[x] = 0
        window[x] = 0
    if policy == BELADY:
        fill_next_use(keys, a, b, scratch, next_use)
    ends = np.full(2, -1, dtype=np.int64)
    size = 0
    distinct = 0
    hits = 0
    window_end = g0
    for g in range(g0, g1):
        ga = group_offsets[g]
        gb = group_offsets[g + 1]
        if policy == SCH:
            counted = window_end
            window_end = extend_window(keys, group_offsets, group_token, counted, g1, group_token[g] + segment, window)
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
                if resident[y] and not listed:
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

            tau = r - a + 1
            if not resident[x]:
                if size == capacity:
                    if listed:
                        victim = ends[1]
                        while pinned[victim]:
                            victim = prev[victim]
                        _unlink(prev, nxt, ends, victim)
                    else:
                        victim = _tree_argmin(tree, leaves)
                        _tree_set(tree, leaves, victim, _INF)
                    resident[victim] = False
                    size -= 1
                resident[x] = True
                size += 1
                if listed:
                    _push_head(prev, nxt, ends, x)
            elif listed:
                _unlink(prev, nxt, ends, x)
                _push_head(prev, nxt, ends, x)
            count[x] += 1
            if policy == SCH:
                window[x] -= 1
            if not listed:
                nu = next_use[r - a] if policy == BELADY else 0
                pri[x] = priority(policy, tau, count[x], window[x], nu, 0)
                if not pinned[x]:
                    _tree_set(tree, leaves, x, pri[x])

        if accounting == PINNED:
            for r in range(ga, gb):
                y = keys[r]
                pinned[y] = False
                if not listed:
                    _tree_set(tree, leaves, y, pri[y])

    for r in range(a, b):  # leave the cache empty for the next run
        x = keys[r]
        if resident[x]:
            resident[x] = False
            if not listed:
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
    work = _work(keys, group_offsets, seq_group_offsets, num_keys, policy)
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
    work = _work(keys, group_offsets, seq_group_offsets, num_keys, FIFO)
    first_rank = work[10]
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
