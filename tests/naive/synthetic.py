"""Plain-Python twins of ``moesim.kernels.synthetic``: slow, obvious, same results bit for bit."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["cross_layer_hits", "log_gamma_variate", "mix64", "stream_bits", "stream_key", "synth_experts", "uniform"]

_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15


def mix64(z):
    z = int(z) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def stream_key(seed, stream):
    return mix64(mix64(seed) ^ ((int(stream) * _GAMMA) & _MASK))


def _bits(key, counter):
    return mix64((int(key) + (int(counter) + 1) * _GAMMA) & _MASK)


def uniform(key, counter):
    return (_bits(key, counter) >> 11) / 2.0**53


def stream_bits(seed, stream, count):
    key = stream_key(seed, stream)
    return np.array([_bits(key, i) for i in range(count)], dtype=np.uint64)


def log_gamma_variate(shape, key, counter):
    """Marsaglia & Tsang (2000) with the shape + 1 boost, in logs; returns (log variate, next counter)."""
    d = shape + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        u1 = 1.0 - uniform(key, counter)
        u2 = uniform(key, counter + 1)
        counter += 2
        x = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = 1.0 - uniform(key, counter)
        counter += 1
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            break
    u = 1.0 - uniform(key, counter)
    counter += 1
    return math.log(d * v) + math.log(u) / shape, counter


def _cdf(mass):
    """Cumulative ``mass / sum(mass)`` in expert-id order, the last entry exactly 1."""
    total = 0.0
    for m in mass:
        total += m
    cdf, running = [], 0.0
    for m in mass:
        running += m
        cdf.append(running / total)
    cdf[-1] = 1.0
    return cdf


def _fresh_expert(cdf, chosen, u):
    """Inverse CDF over the experts not yet chosen, their masses laid end to end in id order."""
    mass = [cdf[e] - (cdf[e - 1] if e > 0 else 0.0) for e in range(len(cdf))]
    chosen_mass = 0.0
    for e in chosen:  # slot order, as the kernel sums it
        chosen_mass += mass[e]
    x = u * max(1.0 - chosen_mass, 0.0)
    free = [e for e in range(len(cdf)) if e not in chosen]
    cumulative = 0.0
    for e in free:
        cumulative += mass[e]
        if x < cumulative:
            return e
    return free[-1]


def synth_experts(out, seed, first_seq, seq_offsets, persistence, cross_layer, affinity, rank_probability, order, rank):
    num_layers, num_experts = order.shape
    top_k = out.shape[2]
    for s in range(len(seq_offsets) - 1):
        key = stream_key(seed, first_seq + s + 1)
        cdfs = []
        gamma_counter = 1 << 63
        for layer in range(num_layers):
            layer_mass = [float(rank_probability[rank[layer, e]]) for e in range(num_experts)]
            if 0.0 < affinity < 1.0:  # the sequence's own popularity ~ Dirichlet(alpha * layer popularity)
                alpha = (1.0 - affinity) / affinity
                logs = []
                for e in range(num_experts):
                    value, gamma_counter = log_gamma_variate(alpha * layer_mass[e], key, gamma_counter)
                    logs.append(value)
                layer_mass = [max(math.exp(value - max(logs)), 1e-9) for value in logs]
            cdfs.append(_cdf(layer_mass))
        counter = 0
        for row in range(seq_offsets[s], seq_offsets[s + 1]):
            for layer in range(num_layers):
                chosen = []
                for j in range(top_k):
                    u1, u2 = uniform(key, counter), uniform(key, counter + 1)
                    counter += 2
                    candidates = None
                    if u1 < persistence:
                        if row > seq_offsets[s]:
                            candidates = [int(e) for e in out[row - 1, layer]]
                    elif u1 < persistence + cross_layer:
                        if layer > 0:
                            candidates = [int(order[layer, rank[layer - 1, e]]) for e in out[row, layer - 1]]
                    if candidates is None:
                        expert = _fresh_expert(cdfs[layer], chosen, u2)
                    elif candidates[j] not in chosen:
                        expert = candidates[j]
                    else:
                        free = [e for e in candidates if e not in chosen]
                        expert = free[int(u2 * len(free))]
                    chosen.append(expert)
                out[row, layer, :] = chosen
    return out


def cross_layer_hits(experts, num_experts):
    num_tokens, num_layers, top_k = experts.shape
    hits = np.zeros(num_layers, dtype=np.int64)
    slots = np.zeros(num_layers, dtype=np.int64)
    for layer in range(1, num_layers):
        pairs = {}
        for token in experts:
            for a in token[layer - 1]:
                for b in token[layer]:
                    if a >= 0 and b >= 0:
                        pairs[int(a), int(b)] = pairs.get((int(a), int(b)), 0) + 1
        totals = {}
        for (a, _), n in pairs.items():
            totals[a] = totals.get(a, 0) + n
        for token in experts:
            sources = [int(a) for a in token[layer - 1] if a >= 0]
            score = [
                max([pairs.get((a, e), 0) / totals[a] if totals.get(a) else 0.0 for a in sources], default=0.0)
                for e in range(num_experts)
            ]
            predicted = sorted(range(num_experts), key=lambda e: (-score[e], e))[:top_k]
            for b in token[layer]:
                if b >= 0:
                    slots[layer] += 1
                    hits[layer] += int(b) in predicted
    return hits, slots
