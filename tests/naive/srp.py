"""Plain-Python twins for SRP (Liang et al. 2025, App. C.1): windows, experts and thresholds one by one."""

from __future__ import annotations

import numpy as np

__all__ = ["window_count_histograms", "srp_by_definition", "srp_by_brute_force"]


def _active_sets(experts, t):
    """Per layer, the set of experts a token activates (empty slots and repeats ignored)."""
    return [{int(e) for e in experts[t, layer] if e >= 0} for layer in range(experts.shape[1])]


def _window_counts(experts, seq_offsets, num_experts, segment):
    """Yield ``(sequence, layer, expert, f)`` for every window of every sequence, from the definition."""
    for s in range(len(seq_offsets) - 1):
        start, stop = int(seq_offsets[s]), int(seq_offsets[s + 1])
        for p in range(start, stop - segment + 1):
            window = [_active_sets(experts, t) for t in range(p, p + segment)]
            for layer in range(experts.shape[1]):
                for expert in range(num_experts):
                    f = sum(1 for token in window if expert in token[layer])
                    yield s, layer, expert, f


def window_count_histograms(experts, seq_offsets, num_experts, segment, row_of_seq, col_of_key, num_rows, num_cols):
    """Twin of :func:`moesim.kernels.srp.window_count_histograms`."""
    hist = np.zeros((num_rows, num_cols, segment + 1), dtype=np.int64)
    for s, layer, expert, f in _window_counts(experts, seq_offsets, num_experts, segment):
        hist[row_of_seq[s], col_of_key[layer * num_experts + expert], f] += 1
    return hist


def _f1(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def srp_by_definition(experts, seq_offsets, num_experts, segment, keys=None):
    """``(srp, alpha, rho_hat, act_r, f1_by_alpha)`` of the keys ``layer * E + expert`` (default: all).

    For every threshold alpha the router "active iff f >= alpha" is scored against every
    (window, key) pair: TP += f, FP += m - f for predicted windows, FN += f for the others.
    """
    keys = None if keys is None else set(keys)
    pairs = [
        f
        for _, layer, expert, f in _window_counts(experts, seq_offsets, num_experts, segment)
        if keys is None or layer * num_experts + expert in keys
    ]
    f1_by_alpha, predicted = [], []
    for alpha in range(segment + 1):
        tp = fp = fn = 0
        for f in pairs:
            if f >= alpha:
                tp, fp = tp + f, fp + segment - f
            else:
                fn += f
        f1_by_alpha.append(_f1(tp, fp, fn))
        predicted.append(tp + fp)
    best = max(range(segment + 1), key=lambda a: (f1_by_alpha[a], -a))
    activations = sum(pairs)
    rho_hat = predicted[best] / activations if activations else 0.0
    act_r = activations / predicted[0] if predicted[0] else float("nan")
    return f1_by_alpha[best], best, rho_hat, act_r, f1_by_alpha


def srp_by_brute_force(window_counts, segment):
    """Best F1 over *every* segment router (each (window, key) pair on or off), not only thresholds."""
    best = 0.0
    for bits in range(1 << len(window_counts)):
        tp = fp = fn = 0
        for i, f in enumerate(window_counts):
            if bits >> i & 1:
                tp, fp = tp + f, fp + segment - f
            else:
                fn += f
        best = max(best, _f1(tp, fp, fn))
    return best
