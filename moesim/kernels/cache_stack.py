"""One-pass hit counts for every cache size: priority stacks (Mattson et al. 1970).

A policy that evicts the resident of smallest priority, with priorities that do not depend on the
cache size, has the inclusion property: the cache of size c is the top c entries of one stack.
After a request for x found at depth d (or not at all), x goes on top and the entries above d are
pushed down by "carrying" the running minimum: position i keeps the larger of the carried entry and
its own, the smaller is carried on, and the last carry lands where x was (or below the stack). A
request at depth d is a hit in every cache of size >= d, so one histogram of depths per sequence
gives all sizes at once. The stack is cut at ``max_capacity``: an entry pushed below it is in no
cache of interest.

Semantics of policies, accounting and cold fill: :mod:`moesim.kernels.cache_common`. LRU has a
faster path here, :func:`lru_hit_counts` (stack distances counted on a bitset over time, which
is the same stack without moving it).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from moesim.kernels.cache_common import (
    BELADY,
    FIFO,
    NOT_APPLICABLE,
    PINNED,
    PROTECT,
    REFERENCE,
    REQUEST,
    SCH,
    TIME_SHIFT,
    extend_window,
    fill_next_use,
    max_group_size,
    max_sequence_requests,
    popcount64,
    priority,
)

_WINDOW_STEP = np.int64(1) << TIME_SHIFT


@njit(cache=True, nogil=True)
def _store_counts(hist, out, s, max_capacity, largest_group, accounting):
    """Cumulate depth histogram ``hist`` into ``out[s]``; pinned sizes below a group are marked."""
    total = 0
    for c in range(max_capacity):
        total += hist[c]
        out[s, c] = total
    if accounting == PINNED:
        for c in range(min(largest_group - 1, max_capacity)):
            out[s, c] = NOT_APPLICABLE


@njit(cache=True, nogil=True)
def stack_hit_counts(
    keys,
    group_offsets,
    group_token,
    seq_group_offsets,
    num_keys,
    max_capacity,
    policy,
    accounting,
    cold_free,
    segment,
):
    """int64[S, C]: hits per sequence for every cache size 1..C, one pass (LRU, LFU, Belady, SCH).

    -1 marks sizes where pinned accounting does not apply (smaller than a group of the sequence).
    Cost: O(N * mean depth) with the stack cut at C.
    """
    if policy == FIFO:
        raise ValueError("FIFO is not a stack algorithm: use fifo_hit_counts")
    num_seqs = len(seq_group_offsets) - 1
    capacity = max_capacity
    out = np.zeros((num_seqs, capacity), dtype=np.int64)
    stack = np.empty(capacity, dtype=np.int32)
    stack_pri = np.empty(capacity, dtype=np.int64)
    where = np.full(num_keys, -1, dtype=np.int64)  # stack position, -1 = below the cut / never seen
    seen = np.zeros(num_keys, dtype=np.bool_)
    count = np.zeros(num_keys, dtype=np.int64)
    window = np.zeros(num_keys, dtype=np.int64)
    scratch = np.empty(num_keys, dtype=np.int64)
    hist = np.zeros(capacity, dtype=np.int64)
    longest = max_sequence_requests(group_offsets, seq_group_offsets)
    next_use = np.empty(longest if policy == BELADY else 0, dtype=np.int64)
    start_depth = np.empty(max_group_size(group_offsets, 0, len(group_offsets) - 1), dtype=np.int64)
    protect = PROTECT if accounting == PINNED else np.int64(0)
    grouped = accounting != REQUEST or policy == SCH

    for s in range(num_seqs):
        g0 = seq_group_offsets[s]
        g1 = seq_group_offsets[s + 1]
        a = group_offsets[g0]
        b = group_offsets[g1]
        for r in range(a, b):
            x = keys[r]
            where[x] = -1
            seen[x] = False
            count[x] = 0
            window[x] = 0
        hist[:] = 0
        depth_size = 0  # entries in the stack
        distinct = 0
        if policy == BELADY:
            fill_next_use(keys, a, b, scratch, next_use)
        window_end = g0  # first group not yet counted in SCH's window

        # Without SCH's window, per-request accounting needs no group structure: one flat pass.
        for g in range(g0, g1 if grouped else g0 + 1):
            ga = group_offsets[g] if grouped else a
            gb = group_offsets[g + 1] if grouped else b
            if policy == SCH:
                counted = window_end
                limit = group_token[g] + segment
                window_end = extend_window(keys, group_offsets, group_token, counted, g1, limit, window)
                for r in range(group_offsets[counted], group_offsets[window_end]):
                    if where[keys[r]] >= 0:
                        stack_pri[where[keys[r]]] += _WINDOW_STEP
            if accounting == PINNED:
                for r in range(ga, gb):
                    if where[keys[r]] >= 0:
                        stack_pri[where[keys[r]]] += PROTECT
            elif accounting == REFERENCE:
                for r in range(ga, gb):
                    start_depth[r - ga] = where[keys[r]]

            for r in range(ga, gb):
                x = keys[r]
                p = where[x]
                if not seen[x]:
                    seen[x] = True
                    if cold_free and distinct < capacity:
                        hist[distinct] += 1
                    distinct += 1
                else:
                    depth = start_depth[r - ga] if accounting == REFERENCE else p
                    if depth >= 0:
                        hist[depth] += 1

                tau = r - a + 1
                count[x] += 1
                if policy == SCH:
                    window[x] -= 1
                nu = next_use[r - a] if policy == BELADY else 0
                new_pri = priority(policy, tau, count[x], window[x], nu, 0) + protect

                if p == 0:
                    stack_pri[0] = new_pri
                    continue
                if depth_size == 0:
                    stack[0] = x
                    stack_pri[0] = new_pri
                    where[x] = 0
                    depth_size = 1
                    continue
                carry = stack[0]
                carry_pri = stack_pri[0]
                stack[0] = x
                stack_pri[0] = new_pri
                where[x] = 0
                stop = p if p > 0 else depth_size
                for i in range(1, stop):
                    if stack_pri[i] < carry_pri:
                        y = stack[i]
                        y_pri = stack_pri[i]
                        stack[i] = carry
                        stack_pri[i] = carry_pri
                        where[carry] = i
                        carry = y
                        carry_pri = y_pri
                if p > 0:
                    stack[p] = carry
                    stack_pri[p] = carry_pri
                    where[carry] = p
                elif depth_size < capacity:
                    stack[depth_size] = carry
                    stack_pri[depth_size] = carry_pri
                    where[carry] = depth_size
                    depth_size += 1
                else:
                    where[carry] = -1

            if accounting == PINNED:
                for r in range(ga, gb):
                    if where[keys[r]] >= 0:
                        stack_pri[where[keys[r]]] -= PROTECT

        _store_counts(hist, out, s, capacity, max_group_size(group_offsets, g0, g1), accounting)
    return out


_ONE = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


# The LRU time axis: a bitset ``words`` with a mark at the slot of each key's last request, and
# ``before[v]`` = marks in words < v, kept valid for v <= now >> 6. A request appends its mark at
# ``now`` (O(1)); clearing a key's old mark decrements ``before`` after its word (one vectorised
# pass over at most K/32 words); a depth is one lookup and one popcount.


@njit(cache=True, nogil=True)
def _clear_mark(words, before, slot, now):
    w = slot >> 6
    words[w] &= ~(_ONE << np.uint64(slot & 63))
    for v in range(w + 1, (now >> 6) + 1):
        before[v] -= 1


@njit(cache=True, nogil=True)
def _marks_after(words, before, slot, num_marks):
    """Marks at slots after ``slot`` (``num_marks`` in all)."""
    w = slot >> 6
    bit = np.uint64(slot & 63)
    return num_marks - before[w] - popcount64(words[w] & ((_ONE << bit) | ((_ONE << bit) - _ONE)))


@njit(cache=True, nogil=True)
def _renumber(words, before, slot_key, slot_of, num_marks):
    """Move the marks, in order, to slots 0..num_marks-1 (keys follow); O(axis / 64 + marks)."""
    live = 0
    for w in range(len(words)):
        word = words[w]
        while word:
            low = word & (~word + _ONE)
            old = 64 * w + popcount64(low - _ONE)
            key = slot_key[old]
            slot_key[old] = -1
            slot_key[live] = key
            slot_of[key] = live
            live += 1
            word ^= low
    words[:] = 0
    full = num_marks >> 6
    words[:full] = _ALL
    if num_marks & 63:
        words[full] = (_ONE << np.uint64(num_marks & 63)) - _ONE
    for v in range(full + 1):
        before[v] = 64 * v


@njit(cache=True, nogil=True)
def lru_hit_counts(keys, group_offsets, seq_group_offsets, num_keys, max_capacity, accounting, cold_free):
    """int64[S, C]: LRU hits per sequence for every cache size, by stack distance.

    The LRU depth of x is one plus the number of keys whose last request is later than x's
    (Bennett & Kruskal 1975), counted on a time axis of slots (see ``_marks_after``): a lookup and
    a popcount per request, plus a masked pass over K/32 counters to clear the old mark. Slots are
    renumbered when the axis (>= 2 slots per key) fills. Reference and pinned accounting read
    depths at the start of each group and then move the group's keys to the top in list order (the
    last listed is the most recent); pinned equals reference here, except that sizes below a group
    are marked -1.
    """
    num_seqs = len(seq_group_offsets) - 1
    capacity = max_capacity
    out = np.zeros((num_seqs, capacity), dtype=np.int64)
    # An axis of >= 2 slots per key: renumbering (O(axis / 64 + keys)) every >= K requests.
    num_words = max((2 * num_keys + 63) // 64, 2)
    num_slots = 64 * num_words
    words = np.zeros(num_words, dtype=np.uint64)
    before = np.zeros(num_words + 1, dtype=np.int64)
    slot_key = np.full(num_slots, -1, dtype=np.int32)
    slot_of = np.full(num_keys, -1, dtype=np.int64)
    hist = np.zeros(capacity, dtype=np.int64)
    grouped = accounting != REQUEST
    start_depth = np.empty(max_group_size(group_offsets, 0, len(group_offsets) - 1) if grouped else 0, dtype=np.int64)
    touched = np.empty(num_keys, dtype=np.int64)

    for s in range(num_seqs):
        g0 = seq_group_offsets[s]
        g1 = seq_group_offsets[s + 1]
        a = group_offsets[g0]
        b = group_offsets[g1]
        hist[:] = 0
        now = 0
        distinct = 0
        # Per-request accounting needs no group structure: one flat pass.
        for g in range(g0, g1 if grouped else g0 + 1):
            ga = group_offsets[g] if grouped else a
            gb = group_offsets[g + 1] if grouped else b
            if grouped:
                for r in range(ga, gb):
                    slot = slot_of[keys[r]]
                    if slot >= 0:
                        start_depth[r - ga] = _marks_after(words, before, slot, distinct)
                    else:
                        start_depth[r - ga] = -1
            for r in range(ga, gb):
                x = keys[r]
                slot = slot_of[x]
                if slot < 0:
                    if cold_free and distinct < capacity:
                        hist[distinct] += 1
                    touched[distinct] = x
                    distinct += 1
                else:
                    if grouped:
                        depth = start_depth[r - ga]
                    else:
                        depth = _marks_after(words, before, slot, distinct)
                    if depth < capacity:
                        hist[depth] += 1
                    # Clearing x's old mark (inline for the same reason as appending below).
                    w = slot >> 6
                    words[w] &= ~(_ONE << np.uint64(slot & 63))
                    top = now >> 6
                    if top < 64:
                        for v in range(top + 1):  # masked: never mispredicts, vectorises
                            before[v] -= np.int64(v > w)
                    else:
                        for v in range(w + 1, top + 1):
                            before[v] -= 1
                    slot_key[slot] = -1
                if now == num_slots:  # x holds no mark at this point
                    _renumber(words, before, slot_key, slot_of, distinct - 1)
                    now = distinct - 1
                slot_of[x] = now
                slot_key[now] = x
                # Appending x's mark at ``now`` is written out here: as a call it cost 4x the
                # whole loop (numba did not inline it).
                w = now >> 6
                if (now & 63) == 0 and w > 0:
                    before[w] = before[w - 1] + popcount64(words[w - 1])
                words[w] |= _ONE << np.uint64(now & 63)
                now += 1
        for i in range(distinct):  # leave the time axis empty for the next sequence
            x = touched[i]
            _clear_mark(words, before, slot_of[x], now)
            slot_key[slot_of[x]] = -1
            slot_of[x] = -1
        _store_counts(hist, out, s, capacity, max_group_size(group_offsets, g0, g1), accounting)
    return out
