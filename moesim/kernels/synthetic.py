"""Synthetic routing generator, and the cross-layer statistic its fit matches.

Randomness is counter-based (SplitMix64 outputs of a per-sequence key; Steele, Lea & Flood 2014):
the i-th uniform of a sequence is a pure function of (seed, sequence index, i). Each slot consumes
exactly two uniforms (counters from 0), the sequence's Dirichlet preferences draw theirs from
counter 2**63 on, so a sequence is a prefix of the same sequence drawn longer, sequences can be
drawn in any order or thread, and the plain-Python twins in ``tests/naive/synthetic.py``
reproduce every draw bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53
# Smallest Dirichlet weight relative to the largest: keeps every expert drawable (a tiny shape
# underflows exp) at a cost of at most E * 1e-9 of probability mass.
_MASS_FLOOR = 1e-9

# Slot sources (also the documented order of the u1 comparison).
_FRESH = 0
_REUSE = 1
_FOLLOW = 2


@njit(cache=True, nogil=True)
def mix64(z):
    """SplitMix64 finaliser (Steele, Lea & Flood 2014) of a uint64."""
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True)
def stream_key(seed, stream):
    """Key of random stream ``stream`` (uint64) under ``seed`` (uint64)."""
    return mix64(mix64(seed) ^ (stream * _GAMMA))


@njit(cache=True, nogil=True, inline="always")
def _bits(key, counter):
    """The ``counter``-th raw 64-bit output of the stream with ``key``."""
    return mix64(key + (counter + np.uint64(1)) * _GAMMA)


@njit(cache=True, nogil=True)
def uniform(key, counter):
    """The ``counter``-th uniform double in [0, 1) of the stream with ``key``."""
    return float(_bits(key, counter) >> _S11) * _TWO_M53


@njit(cache=True, nogil=True, inline="always")
def _contains(values, count, value):
    for i in range(count):
        if values[i] == value:
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _pick_unchosen(candidates, chosen, count, u):
    """The floor(u * m)-th (slot order) of the m candidates not among ``chosen[:count]``."""
    free = 0
    for i in range(candidates.shape[0]):
        if not _contains(chosen, count, candidates[i]):
            free += 1
    target = int(u * free)
    for i in range(candidates.shape[0]):
        if not _contains(chosen, count, candidates[i]):
            if target == 0:
                return candidates[i]
            target -= 1
    return -1  # unreachable while candidates are distinct and count < len(candidates)


@njit(cache=True, nogil=True)
def log_gamma_variate(shape, key, counter):
    """(log of a Gamma(shape, 1) variate, next counter), from uniforms ``counter, counter + 1, ...``.

    Marsaglia & Tsang (2000) for shape + 1, with Box-Muller normals, times ``U ** (1 / shape)``
    (their boost for shapes below 1), all in logs so that tiny shapes do not underflow.
    """
    d = shape + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        u1 = 1.0 - uniform(key, counter)
        u2 = uniform(key, counter + np.uint64(1))
        counter += np.uint64(2)
        x = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = 1.0 - uniform(key, counter)
        counter += np.uint64(1)
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            break
    u = 1.0 - uniform(key, counter)
    counter += np.uint64(1)
    return math.log(d * v) + math.log(u) / shape, counter


@njit(cache=True, nogil=True, inline="always")
def _fill_cdf(cdf, guide, layer, mass):
    """Row ``layer`` of ``cdf`` (cumulative ``mass / sum(mass)`` in expert-id order, last entry
    exactly 1) and of its guide table (``guide[layer, i]``: smallest id with cdf > i / E; Chen &
    Asau 1974)."""
    num_experts = mass.shape[0]
    total = 0.0
    for e in range(num_experts):
        total += mass[e]
    running = 0.0
    for e in range(num_experts):
        running += mass[e]
        cdf[layer, e] = running / total
    cdf[layer, num_experts - 1] = 1.0
    e = 0
    for i in range(num_experts):
        while e < num_experts - 1 and cdf[layer, e] <= i / num_experts:
            e += 1
        guide[layer, i] = e


@njit(cache=True, nogil=True, inline="always")
def _draw_fresh(cdf, guide, layer, sorted_ids, count, chosen_mass, u):
    """Inverse-CDF draw of an expert at ``layer``, conditioned on not being in ``sorted_ids[:count]``.

    ``u`` is scaled onto the unchosen mass and then shifted past every chosen id's interval at or
    below it, so one uniform gives an exact draw without rejection.
    """
    num_experts = cdf.shape[1]
    remaining = 1.0 - chosen_mass
    if remaining < 0.0:
        remaining = 0.0
    x = u * remaining
    for i in range(count):
        c = sorted_ids[i]
        low = cdf[layer, c - 1] if c > 0 else 0.0
        if x >= low:
            x += cdf[layer, c] - low
        else:
            break
    # Smallest id with cdf > x, starting from the guide table: O(1) expected.
    bucket = int(x * num_experts)
    expert = guide[layer, bucket] if bucket < num_experts else num_experts - 1
    while expert > 0 and cdf[layer, expert - 1] > x:
        expert -= 1
    while expert < num_experts - 1 and cdf[layer, expert] <= x:
        expert += 1
    if _contains(sorted_ids, count, expert):
        # Rounding put x on the edge of a chosen interval: take the nearest free id above, else below.
        up = expert + 1
        while up < num_experts and _contains(sorted_ids, count, up):
            up += 1
        if up < num_experts:
            return up
        down = expert - 1
        while _contains(sorted_ids, count, down):
            down -= 1
        return down
    return expert


@njit(cache=True, nogil=True)
def synth_experts(out, seed, first_seq, seq_offsets, persistence, cross_layer, affinity, rank_probability, order, rank):
    """Fill and return ``out``, int16 ``[seq_offsets[-1], L, k]``, with the routed experts of
    sequences ``first_seq + s`` (rows ``seq_offsets[s]:seq_offsets[s+1]``).

    ``seed`` uint64; ``rank_probability`` float64 ``[E]``: popularity of each rank (positive);
    ``order`` int64 ``[L, E]``: expert of each rank per layer; ``rank`` int64 ``[L, E]``: its inverse.
    Sequence s uses stream ``first_seq + s + 1``. Its fresh draws at layer l follow the layer's
    popularity ``pi[e] = rank_probability[rank[l, e]]`` or, when ``0 < affinity < 1``, the
    sequence's own ``theta ~ Dirichlet(alpha * pi)``, ``alpha = (1 - affinity) / affinity``, drawn
    by :func:`log_gamma_variate` from counters ``2**63, 2**63 + 1, ...`` (layer by layer, expert by
    expert; each theta floored at ``1e-9`` of its largest so every expert stays drawable).
    Slot j of token t at layer l then draws u1, u2 (counters 2n, 2n+1, n = (t * L + l) * k + j):
    u1 < persistence reuses the previous token's slot-j expert at layer l; else
    u1 < persistence + cross_layer follows the rank-preserving map of the token's slot-j expert at
    layer l-1; a taken target is replaced by the floor(u2 * m)-th free candidate of that source.
    Otherwise, or when the source does not exist (first token, first layer), u2 draws a fresh
    expert among those not yet chosen.
    """
    num_layers, num_experts = order.shape
    top_k = out.shape[2]
    follow_edge = persistence + cross_layer
    chosen = np.empty(top_k, dtype=np.int64)
    sorted_ids = np.empty(top_k, dtype=np.int64)
    candidates = np.empty(top_k, dtype=np.int64)
    cdf = np.empty((num_layers, num_experts), dtype=np.float64)
    guide = np.empty((num_layers, num_experts), dtype=np.int64)
    mass = np.empty(num_experts, dtype=np.float64)
    log_mass = np.empty(num_experts, dtype=np.float64)
    for layer in range(num_layers):
        for e in range(num_experts):
            mass[e] = rank_probability[rank[layer, e]]
        _fill_cdf(cdf, guide, layer, mass)
    dirichlet = 0.0 < affinity < 1.0
    concentration = (1.0 - affinity) / affinity if dirichlet else 0.0
    gamma_base = np.uint64(1) << np.uint64(63)
    for s in range(seq_offsets.shape[0] - 1):
        key = stream_key(seed, np.uint64(first_seq + s + 1))
        if dirichlet:
            gamma_counter = gamma_base
            for layer in range(num_layers):
                largest = -np.inf
                for e in range(num_experts):
                    shape = concentration * rank_probability[rank[layer, e]]
                    log_mass[e], gamma_counter = log_gamma_variate(shape, key, gamma_counter)
                    if log_mass[e] > largest:
                        largest = log_mass[e]
                for e in range(num_experts):
                    mass[e] = max(math.exp(log_mass[e] - largest), _MASS_FLOOR)
                _fill_cdf(cdf, guide, layer, mass)
        counter = np.uint64(0)
        for row in range(seq_offsets[s], seq_offsets[s + 1]):
            first_token = row == seq_offsets[s]
            for layer in range(num_layers):
                chosen_mass = 0.0
                for j in range(top_k):
                    u1 = uniform(key, counter)
                    u2 = uniform(key, counter + np.uint64(1))
                    counter += np.uint64(2)
                    source = _FRESH
                    if u1 < persistence:
                        if not first_token:
                            source = _REUSE
                    elif u1 < follow_edge:
                        if layer > 0:
                            source = _FOLLOW
                    expert = -1
                    if source == _REUSE:
                        for i in range(top_k):
                            candidates[i] = out[row - 1, layer, i]
                    elif source == _FOLLOW:
                        for i in range(top_k):
                            candidates[i] = order[layer, rank[layer - 1, out[row, layer - 1, i]]]
                    if source != _FRESH:
                        expert = candidates[j]
                        if _contains(chosen, j, expert):
                            expert = _pick_unchosen(candidates, chosen, j, u2)
                    else:
                        expert = _draw_fresh(cdf, guide, layer, sorted_ids, j, chosen_mass, u2)
                    chosen_mass += cdf[layer, expert] - (cdf[layer, expert - 1] if expert > 0 else 0.0)
                    chosen[j] = expert
                    i = j  # insertion into the ascending id list
                    while i > 0 and sorted_ids[i - 1] > expert:
                        sorted_ids[i] = sorted_ids[i - 1]
                        i -= 1
                    sorted_ids[i] = expert
                    out[row, layer, j] = expert
    return out


@njit(cache=True, nogil=True)
def stream_bits(seed, stream, count):
    """uint64 ``[count]``: the raw 64-bit outputs 0..count-1 of random stream ``stream``."""
    key = stream_key(seed, stream)
    out = np.empty(count, dtype=np.uint64)
    for i in range(count):
        out[i] = _bits(key, np.uint64(i))
    return out


@njit(cache=True, nogil=True, inline="always")
def _ranks_before(score_a, id_a, score_b, id_b):
    """True if (score_a, id_a) comes first: higher score, then lower id."""
    return score_a > score_b or (score_a == score_b and id_a < id_b)


@njit(cache=True, nogil=True)
def cross_layer_hits(experts, num_experts):
    """(hits, slots), int64 ``[L]`` each: how many of the valid layer-l slots hold one of the k
    experts a co-occurrence prefetcher predicts from the token's layer-(l-1) experts.

    The prediction for a token is the k experts e with the highest ``max_i cond[e'_i, e]`` over its
    valid layer-(l-1) experts e'_i, ties to the lower id, where ``cond[a, b]`` is the share of the
    (layer l-1 = a, layer l) co-occurrences of the whole trace that have b at layer l. Layer 0 is 0/0.
    Only the union of each source's own top k can reach the overall top k, and an expert in the
    overall top k takes its maximum from a source that lists it, so scoring the union from those
    lists alone selects the same set: a token costs O(k^3) rather than O(k * E).
    """
    num_tokens, num_layers, top_k = experts.shape
    hits = np.zeros(num_layers, dtype=np.int64)
    slots = np.zeros(num_layers, dtype=np.int64)
    counts = np.zeros((num_experts, num_experts), dtype=np.int64)
    cond = np.zeros((num_experts, num_experts), dtype=np.float64)
    best_of = np.empty((num_experts, top_k), dtype=np.int64)  # each source's top k, best first
    taken = np.zeros(num_experts, dtype=np.bool_)
    stamp = np.full(num_experts, -1, dtype=np.int64)
    slot_of = np.zeros(num_experts, dtype=np.int64)
    candidates = np.empty(top_k * top_k, dtype=np.int64)
    score = np.empty(top_k * top_k, dtype=np.float64)
    predicted = np.empty(top_k, dtype=np.int64)
    kept_score = np.empty(top_k, dtype=np.float64)
    for layer in range(1, num_layers):
        counts[:, :] = 0
        for t in range(num_tokens):
            for i in range(top_k):
                a = experts[t, layer - 1, i]
                if a < 0:
                    continue
                for j in range(top_k):
                    b = experts[t, layer, j]
                    if b >= 0:
                        counts[a, b] += 1
        for a in range(num_experts):
            total = 0
            for b in range(num_experts):
                total += counts[a, b]
            for b in range(num_experts):
                cond[a, b] = counts[a, b] / total if total > 0 else 0.0
            for r in range(top_k):
                best = -1
                for b in range(num_experts):
                    if not taken[b] and (best < 0 or _ranks_before(cond[a, b], b, cond[a, best], best)):
                        best = b
                taken[best] = True
                best_of[a, r] = best
            for r in range(top_k):
                taken[best_of[a, r]] = False
        for t in range(num_tokens):
            stamp_id = t + layer * num_tokens
            num_candidates = 0
            for i in range(top_k):
                a = experts[t, layer - 1, i]
                if a < 0:
                    continue
                for r in range(top_k):
                    e = best_of[a, r]
                    value = cond[a, e]
                    if stamp[e] != stamp_id:
                        stamp[e] = stamp_id
                        slot_of[e] = num_candidates
                        candidates[num_candidates] = e
                        score[num_candidates] = value
                        num_candidates += 1
                    elif value > score[slot_of[e]]:
                        score[slot_of[e]] = value
            if num_candidates == 0:  # no source: every score is 0, the lowest ids win
                for r in range(top_k):
                    predicted[r] = r
            else:
                # One pass keeping the best k in order (insertion), usually O(1) per candidate.
                kept = 0
                for c in range(num_candidates):
                    value, e = score[c], candidates[c]
                    if kept == top_k and not _ranks_before(value, e, kept_score[kept - 1], predicted[kept - 1]):
                        continue
                    i = kept if kept < top_k else top_k - 1
                    while i > 0 and _ranks_before(value, e, kept_score[i - 1], predicted[i - 1]):
                        kept_score[i] = kept_score[i - 1]
                        predicted[i] = predicted[i - 1]
                        i -= 1
                    kept_score[i] = value
                    predicted[i] = e
                    if kept < top_k:
                        kept += 1
            for j in range(top_k):
                b = experts[t, layer, j]
                if b >= 0:
                    slots[layer] += 1
                    for r in range(top_k):
                        if predicted[r] == b:
                            hits[layer] += 1
                            break
    return hits, slots
