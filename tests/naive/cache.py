"""Plain-Python twins of the cache kernels (moesim/kernels/cache_*.py).

One cache of one size is simulated at a time, by the definitions of spec lrc-metrics.md sections
3.2 and 4 and the docstring of moesim/kernels/cache_common.py, with nothing clever: the victim is
found by scanning every resident, the future (Belady's next use, SCH's window counts) by scanning
the rest of the stream. Curves call the per-size simulator once per size.

Inputs are the kernels' arrays: ``keys`` int32[N], ``group_offsets`` int64[G+1], ``group_token``
int64[G], ``seq_group_offsets`` int64[S+1]; codes below.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "cache_hit_flags",
    "per_size_hit_counts",
    "stack_hit_counts",
    "lru_hit_counts",
    "fifo_hit_counts",
    "lru_batch_reference_hit_counts",
]

LRU, LFU, FIFO, BELADY, SCH = 0, 1, 2, 3, 4
REFERENCE, REQUEST, PINNED = 0, 1, 2
NOT_APPLICABLE = -1


def _priority(policy, y, r, t, state, segment):
    """Eviction priority of resident y when request r (of token t) is being served: smaller goes."""
    keys, tokens, last, count, inserted = state
    if policy == LRU:
        return (last[y],)
    if policy == FIFO:
        return (inserted[y],)
    if policy == LFU:
        return (count[y], last[y])
    if policy == BELADY:
        # Never requested again: farthest of all; among those the larger key goes (irrelevant to hits).
        return (-keys.index(y, r),) if y in keys[r:] else (-(len(keys) + 1 + y),)
    if policy == SCH:
        window_end = next((j for j in range(r, len(keys)) if tokens[j] >= t + segment), len(keys))
        return (keys[r:window_end].count(y), last[y])
    raise ValueError(policy)


def _simulate_sequence(keys, groups, group_token, capacity, policy, accounting, cold_free, segment):
    """Hit flags (1/0) of one sequence, or None where pinned accounting does not apply."""
    if accounting == PINNED and any(b - a > capacity for a, b in groups):
        return None
    tokens = [0] * len(keys)
    for (a, b), t in zip(groups, group_token):
        for r in range(a, b):
            tokens[r] = t
    last, count, inserted = {}, {}, {}
    state = (keys, tokens, last, count, inserted)
    resident: set[int] = set()
    seen: set[int] = set()
    flags = [0] * len(keys)
    for (a, b), t in zip(groups, group_token):
        at_start = set(resident)
        group = set(keys[a:b])
        for r in range(a, b):
            x = keys[r]
            if x not in seen:
                hit = cold_free and len(seen) < capacity
            elif accounting == REFERENCE:
                hit = x in at_start
            else:  # request; pinned (group members are never evicted, so this is x in at_start)
                hit = x in resident
            flags[r] = int(hit)
            seen.add(x)
            if x not in resident:
                if len(resident) == capacity:
                    protected = group if accounting == PINNED else set()
                    candidates = [y for y in resident if y not in protected and y != x]
                    victim = min(candidates, key=lambda y: _priority(policy, y, r, t, state, segment))
                    resident.remove(victim)
                resident.add(x)
                inserted[x] = r
            last[x] = r
            count[x] = count.get(x, 0) + 1
    return flags


def _sequences(keys, group_offsets, group_token, seq_group_offsets):
    keys = [int(x) for x in keys]
    for s in range(len(seq_group_offsets) - 1):
        g0, g1 = int(seq_group_offsets[s]), int(seq_group_offsets[s + 1])
        base = int(group_offsets[g0])
        end = int(group_offsets[g1])
        groups = [(int(group_offsets[g]) - base, int(group_offsets[g + 1]) - base) for g in range(g0, g1)]
        yield base, keys[base:end], groups, [int(t) for t in group_token[g0:g1]]


def cache_hit_flags(keys, group_offsets, group_token, seq_group_offsets, num_keys, capacity, policy,
                    accounting, cold_free, segment):
    """int8[N]: 1 hit, 0 miss, -1 where pinned accounting does not apply (capacity < a group)."""
    out = np.zeros(len(keys), dtype=np.int8)
    for base, seq_keys, groups, tokens in _sequences(keys, group_offsets, group_token, seq_group_offsets):
        flags = _simulate_sequence(seq_keys, groups, tokens, capacity, policy, accounting, cold_free, segment)
        out[base:base + len(seq_keys)] = NOT_APPLICABLE if flags is None else flags
    return out


def per_size_hit_counts(keys, group_offsets, group_token, seq_group_offsets, num_keys, sizes, policy,
                        accounting, cold_free, segment):
    """int64[S, len(sizes)]: hits per sequence at each cache size, -1 where not applicable."""
    num_seqs = len(seq_group_offsets) - 1
    out = np.zeros((num_seqs, len(sizes)), dtype=np.int64)
    for i, c in enumerate(sizes):
        flags = cache_hit_flags(keys, group_offsets, group_token, seq_group_offsets, num_keys, int(c), policy,
                                accounting, cold_free, segment)
        for s, (base, seq_keys, _, _) in enumerate(
            _sequences(keys, group_offsets, group_token, seq_group_offsets)
        ):
            part = flags[base:base + len(seq_keys)]
            out[s, i] = NOT_APPLICABLE if (part == NOT_APPLICABLE).any() else int(part.sum())
    return out


def stack_hit_counts(keys, group_offsets, group_token, seq_group_offsets, num_keys, max_capacity, policy,
                     accounting, cold_free, segment):
    return per_size_hit_counts(keys, group_offsets, group_token, seq_group_offsets, num_keys,
                               range(1, max_capacity + 1), policy, accounting, cold_free, segment)


def lru_hit_counts(keys, group_offsets, seq_group_offsets, num_keys, max_capacity, accounting, cold_free):
    group_token = np.arange(len(group_offsets) - 1, dtype=np.int64)
    return per_size_hit_counts(keys, group_offsets, group_token, seq_group_offsets, num_keys,
                               range(1, max_capacity + 1), LRU, accounting, cold_free, 1)


def fifo_hit_counts(keys, group_offsets, seq_group_offsets, num_keys, max_capacity, accounting, cold_free):
    group_token = np.arange(len(group_offsets) - 1, dtype=np.int64)
    return per_size_hit_counts(keys, group_offsets, group_token, seq_group_offsets, num_keys,
                               range(1, max_capacity + 1), FIFO, accounting, cold_free, 1)


def lru_batch_reference_hit_counts(keys, group_offsets, seq_group_offsets, num_keys, max_capacity):
    """The paper's LRU literally (50_chr_calc.py, spec section 4), free cold fill: after each token
    every expert of it becomes most recent in list order; the cache of size c is the c most recent."""
    num_seqs = len(seq_group_offsets) - 1
    out = np.zeros((num_seqs, max_capacity), dtype=np.int64)
    tokens = np.zeros(len(seq_group_offsets) and int(seq_group_offsets[-1]), dtype=np.int64)
    for s, (_, seq_keys, groups, _) in enumerate(_sequences(keys, group_offsets, tokens, seq_group_offsets)):
        for c in range(1, max_capacity + 1):
            recency: list[int] = []  # most recent first
            hits = 0
            for a, b in groups:
                cache = set(recency[:c])
                for r in range(a, b):
                    x = seq_keys[r]
                    if x in recency:
                        hits += x in cache
                    else:
                        hits += len(recency) + sum(1 for q in range(a, r) if seq_keys[q] not in recency) < c
                for x in seq_keys[a:b]:
                    if x in recency:
                        recency.remove(x)
                    recency.insert(0, x)
            out[s, c - 1] = hits
    return out
