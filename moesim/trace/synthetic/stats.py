"""The routing statistics a synthetic fit matches and reports, computed the same way on any trace.

Whole-trace popularity skew and previous-token reuse come from :mod:`moesim.trace.stats`, LRU hit rates from
:func:`moesim.metrics.hit_curve.hit_curve`; this module adds what the fit needs beyond them:
per-sequence popularity skew, the top-k share, reuse within a window of recent tokens, and
cross-layer predictability.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from moesim.errors import ConfigError
from moesim.jsonable import to_jsonable
from moesim.trace.stats import expert_popularity, previous_token_reuse
from moesim.trace.trace import Trace

# Rows per vectorised block: bounds the [rows, L, k, k] comparison temporaries to tens of MB.
_CHUNK_ROWS = 1 << 14
DEFAULT_WINDOW_TOKENS = 8
DEFAULT_LRU_FRACTIONS = (0.125, 0.25, 0.5)


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array.flags.writeable = False
    return array


json_ready = to_jsonable  # the shared strict-JSON conversion


def nanmean(values: np.ndarray) -> float:
    """Mean of the finite values (NaN if there are none), without numpy's empty-slice warning."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


@dataclasses.dataclass(frozen=True, eq=False)
class RoutingStats:
    """Cache-relevant statistics of a routing trace (arrays are per MoE layer, read-only).

    Attributes
    ----------
    load_entropy : float64 ``[L]``
        Entropy of the layer's expert load divided by ``ln E`` (1 = uniform; NaN when E = 1).
    sequence_entropy : float64 ``[L]``
        The same within each sequence, averaged over sequences (:func:`sequence_entropy`).
    top_k_share : float64 ``[L]``
        Share of the layer's activations taken by its k most-used experts: the hit rate of the
        best static per-layer cache of k experts.
    reuse_prev : float64 ``[L]``
        Fraction of a token's experts that the previous token of its sequence also used at that
        layer (tokens with a predecessor).
    reuse_window : float64 ``[L]``
        Fraction of a token's experts used by any of the previous ``window_tokens`` tokens.
    cross_layer : float64 ``[L]``
        Hit rate at layer l of a prefetcher that predicts k experts from the token's experts at
        layer l-1 (:func:`cross_layer_predictability`); NaN at layer 0.
    lru_capacities : int64 ``[C]``, lru_hit_rate : float64 ``[C]``
        Hit rate (all hits over all requests) of one LRU cache of that many experts shared by all
        layers (keys ``layer * E + expert``), each request judged when served, every sequence
        starting empty and every first request a miss.
    """

    num_tokens: int
    num_sequences: int
    num_layers: int
    num_experts: int
    top_k: int
    window_tokens: int
    load_entropy: np.ndarray
    sequence_entropy: np.ndarray
    top_k_share: np.ndarray
    reuse_prev: np.ndarray
    reuse_window: np.ndarray
    cross_layer: np.ndarray
    lru_capacities: np.ndarray
    lru_hit_rate: np.ndarray

    def summary(self) -> dict[str, float]:
        """Whole-trace values: layer means of the per-layer statistics, plus the LRU hit rates."""
        out = {
            "load_entropy": nanmean(self.load_entropy),
            "sequence_entropy": nanmean(self.sequence_entropy),
            "top_k_share": nanmean(self.top_k_share),
            "reuse_prev": nanmean(self.reuse_prev),
            f"reuse_window{self.window_tokens}": nanmean(self.reuse_window),
            "cross_layer": nanmean(self.cross_layer[1:]),
        }
        for capacity, rate in zip(self.lru_capacities.tolist(), self.lru_hit_rate.tolist()):
            out[f"lru_hit_rate@{capacity}"] = float(rate)
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-ready mapping: arrays as lists, NaN as None."""
        return json_ready({field.name: getattr(self, field.name) for field in dataclasses.fields(self)})


def top_k_share(trace: Trace) -> np.ndarray:
    """float64 ``[L]``: share of each layer's activations on its ``k`` most-used experts."""
    counts = expert_popularity(trace).counts
    top = np.sort(counts, axis=1)[:, ::-1][:, : trace.top_k].sum(axis=1)
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, top / np.maximum(total, 1), np.nan)


def _normalised_entropy(counts: np.ndarray) -> np.ndarray:
    """Entropy of the last axis's distribution over ``ln(size)`` (NaN where empty or size 1)."""
    counts = counts.astype(np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / totals
        terms = np.where(counts > 0, shares * np.log(np.where(counts > 0, shares, 1.0)), 0.0)
        return -terms.sum(axis=-1) / np.log(counts.shape[-1])


def sequence_entropy(trace: Trace) -> np.ndarray:
    """float64 ``[L]``: normalised entropy of each sequence's own expert load at each layer,
    averaged over sequences weighted by their routed slots (NaN when E = 1 or nothing routed).

    Low values next to a high whole-trace :func:`~moesim.trace.stats.expert_popularity` entropy
    mean that each sequence keeps to a working set of experts. Short sequences are low by
    construction (a token uses only k experts), so compare traces of similar sequence lengths.
    """
    num_layers, num_experts = trace.num_layers, trace.num_experts
    offsets = trace.seq_offsets
    weighted = np.zeros(num_layers)
    weights = np.zeros(num_layers)
    # Blocks of sequences keep the [sequences, L, E] count array near 4M cells.
    block = max(1, (1 << 22) // max(1, num_layers * num_experts))
    for first in range(0, trace.num_sequences, block):
        stop = min(trace.num_sequences, first + block)
        rows = slice(int(offsets[first]), int(offsets[stop]))
        experts = trace.experts[rows]
        seq_index = np.repeat(np.arange(stop - first), np.diff(offsets[first : stop + 1]))
        keys = (seq_index[:, None, None] * num_layers + np.arange(num_layers)[None, :, None]) * num_experts + experts
        counts = np.bincount(keys[experts >= 0], minlength=(stop - first) * num_layers * num_experts)
        counts = counts.reshape(stop - first, num_layers, num_experts)
        slots = counts.sum(axis=2)
        entropy = _normalised_entropy(counts)
        used = slots > 0
        weighted += np.where(used, entropy * slots, 0.0).sum(axis=0)
        weights += slots.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weights > 0, weighted / weights, np.nan)


def window_reuse(trace: Trace, window_tokens: int) -> np.ndarray:
    """float64 ``[L]``: fraction of a token's experts used at that layer by any of the previous
    ``window_tokens`` tokens of its sequence (over tokens with a predecessor; NaN if none)."""
    experts, seq_ids = trace.experts, trace.seq_ids
    num_tokens, num_layers, top_k = experts.shape
    valid = experts >= 0
    has_prev = np.zeros(num_tokens, dtype=bool)
    has_prev[1:] = seq_ids[1:] == seq_ids[:-1]
    slots = (valid & has_prev[:, None, None]).sum(axis=(0, 2))
    hits = np.zeros(num_layers, dtype=np.int64)
    for start in range(0, num_tokens, _CHUNK_ROWS):
        stop = min(num_tokens, start + _CHUNK_ROWS)
        seen = np.zeros((stop - start, num_layers, top_k), dtype=bool)
        for lag in range(1, window_tokens + 1):
            low = max(start, lag)
            if low >= stop:
                break
            # Rows of a sequence are contiguous, so equal ids `lag` rows apart mean the same sequence.
            same = seq_ids[low:stop] == seq_ids[low - lag : stop - lag]
            match = (experts[low:stop, :, :, None] == experts[low - lag : stop - lag, :, None, :]).any(axis=-1)
            seen[low - start :] |= match & same[:, None, None] & valid[low:stop]
        hits += seen.sum(axis=(0, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(slots > 0, hits / np.maximum(slots, 1), np.nan)


def cross_layer_predictability(trace: Trace) -> np.ndarray:
    """float64 ``[L]``: hit rate of a co-occurrence prefetcher for layer l; NaN at l = 0.

    For each token it predicts the k layer-l experts e with the highest ``max_i P(e | e'_i)`` over
    the token's layer-(l-1) experts e'_i, the conditionals being co-occurrence shares counted on
    the same trace (in-sample); ties go to the lower expert id. Taking the maximum rather than the
    sum over e'_i lets one strongly associated source outvote experts that are merely popular.
    Being in-sample it overfits short traces a little, so compare it between traces of similar size.
    """
    from moesim.kernels.synthetic import cross_layer_hits

    hits, slots = cross_layer_hits(np.ascontiguousarray(trace.experts), int(trace.num_experts))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(slots > 0, hits / np.maximum(slots, 1), np.nan)
    out[:1] = np.nan
    return out


def lru_hit_rates(trace: Trace, capacities: np.ndarray) -> np.ndarray:
    """float64 ``[C]``: pooled hit rate of a shared (model-level) LRU cache of each capacity."""
    from moesim.metrics.hit_curve import hit_curve

    if trace.num_tokens == 0 or not len(capacities):
        return np.full(len(capacities), np.nan)
    curve = hit_curve(trace, "lru", level="model", accounting="request", cold_fill="miss")
    return curve.pooled_rate[np.clip(capacities, 1, len(curve.cache_sizes)) - 1]


def default_lru_capacities(num_layers: int, num_experts: int) -> np.ndarray:
    """int64: 1/8, 1/4 and 1/2 of all ``L * E`` experts (at least 1 each), without repeats."""
    total = num_layers * num_experts
    return np.unique([max(1, round(f * total)) for f in DEFAULT_LRU_FRACTIONS]).astype(np.int64)


def routing_stats(
    trace: Trace,
    *,
    window_tokens: int = DEFAULT_WINDOW_TOKENS,
    lru_capacities: Sequence[int] | np.ndarray | None = None,
) -> RoutingStats:
    """Popularity, reuse, cross-layer and LRU statistics of a trace.

    Parameters
    ----------
    trace : Trace
        Any routing trace; -1 slots are ignored.
    window_tokens : int
        Look-back of ``reuse_window`` in tokens (default 8).
    lru_capacities : sequence of int, optional
        Sizes (experts, all layers together, 1..L*E) of the shared LRU caches; default 1/8, 1/4
        and 1/2 of ``L * E``.

    Returns
    -------
    RoutingStats
    """
    if not isinstance(trace, Trace):
        raise ConfigError(f"trace: expected a moesim Trace, got {type(trace).__name__}")
    if isinstance(window_tokens, bool) or not isinstance(window_tokens, (int, np.integer)) or window_tokens < 1:
        raise ConfigError(f"window_tokens: expected an integer >= 1 such as 8, got {window_tokens!r}")
    total_experts = trace.num_layers * trace.num_experts
    if lru_capacities is None:
        capacities = default_lru_capacities(trace.num_layers, trace.num_experts)
    else:
        capacities = np.asarray(lru_capacities)
        if (
            capacities.ndim != 1
            or (capacities.size and not np.issubdtype(capacities.dtype, np.integer))
            or (capacities.size and (capacities.min() < 1 or capacities.max() > total_experts))
        ):
            raise ConfigError(
                f"lru_capacities: expected cache sizes in experts, integers in 1..{total_experts} (L * E), "
                f"got {lru_capacities!r}"
            )
        capacities = capacities.astype(np.int64)
    popularity = expert_popularity(trace)
    return RoutingStats(
        num_tokens=trace.num_tokens,
        num_sequences=trace.num_sequences,
        num_layers=trace.num_layers,
        num_experts=trace.num_experts,
        top_k=trace.top_k,
        window_tokens=int(window_tokens),
        load_entropy=_readonly(popularity.entropy),
        sequence_entropy=_readonly(sequence_entropy(trace)),
        top_k_share=_readonly(top_k_share(trace)),
        reuse_prev=_readonly(previous_token_reuse(trace).per_layer),
        reuse_window=_readonly(window_reuse(trace, int(window_tokens))),
        cross_layer=_readonly(cross_layer_predictability(trace)),
        lru_capacities=_readonly(capacities),
        lru_hit_rate=_readonly(lru_hit_rates(trace, capacities)),
    )
