"""Descriptive statistics of a routing trace: expert popularity and previous-token reuse.

These are the two properties of real routing that drive expert-cache behaviour most directly:
*popularity skew* (a few experts of a layer take most of the traffic, so a small cache of the
popular ones already hits often) and *temporal locality* (a token tends to reuse experts the
previous token of the same sequence used in the same layer, so recency-based caches hit).
Both are plain counts over the trace, computed with numpy in a few passes; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.trace.trace import Trace

# Rows compared per chunk in the reuse pass; bounds the [rows, L, k, k] comparison temporary.
_REUSE_CHUNK_ROWS = 16384


@dataclass(frozen=True)
class ExpertPopularity:
    """How often each expert of each MoE layer is routed to.

    Attributes
    ----------
    counts : int64 ndarray ``[L, E]``
        Number of tokens that routed to expert e at trace layer l (empty slots not counted).
    num_tokens : int
        Tokens in the trace (the denominator of activation frequencies).
    top_k : int
        Routing slots per token and layer.

    All other attributes are derived from these three.
    """

    counts: np.ndarray
    num_tokens: int
    top_k: int

    @property
    def num_layers(self) -> int:
        return int(self.counts.shape[0])

    @property
    def num_experts(self) -> int:
        return int(self.counts.shape[1])

    @property
    def routed(self) -> np.ndarray:
        """int64 ``[L]``: routed (non-empty) slots per layer."""
        return self.counts.sum(axis=1)

    @property
    def shares(self) -> np.ndarray:
        """float64 ``[L, E]``: each expert's share of its layer's routed slots (rows sum to 1; NaN if none)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.counts / self.routed[:, None]

    @property
    def frequencies(self) -> np.ndarray:
        """float64 ``[L, E]``: activation frequency, the fraction of tokens that routed to the expert.

        Rows sum to k for full traces (NaN for an empty trace).
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.counts / np.float64(self.num_tokens)

    @property
    def top_expert(self) -> np.ndarray:
        """int64 ``[L]``: the most popular expert of each layer (lowest id on ties; -1 if none routed)."""
        if not self.num_experts:
            return np.full(self.num_layers, -1, dtype=np.int64)
        return np.where(self.routed > 0, np.argmax(self.counts, axis=1), -1)

    @property
    def top_share(self) -> np.ndarray:
        """float64 ``[L]``: the most popular expert's share of its layer's routed slots (uniform: 1/E)."""
        return self.shares.max(axis=1) if self.num_experts else np.full(self.num_layers, np.nan)

    @property
    def entropy(self) -> np.ndarray:
        """float64 ``[L]``: entropy of the share distribution normalised by log E (uniform: 1).

        1 means every expert is used equally often, 0 that one expert takes everything; NaN when
        E = 1 or the layer routed nothing.
        """
        shares = self.shares
        with np.errstate(invalid="ignore", divide="ignore"):
            terms = np.where(shares > 0, shares * np.log(np.where(shares > 0, shares, 1.0)), 0.0)
            result = -terms.sum(axis=1) / np.log(self.num_experts)
        result[~np.isfinite(result) | (self.routed == 0)] = np.nan
        return result

    @property
    def cv(self) -> np.ndarray:
        """float64 ``[L]``: coefficient of variation (population SD / mean) of the expert counts (uniform: 0)."""
        counts = self.counts.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return counts.std(axis=1) / counts.mean(axis=1)

    @property
    def load_balance(self) -> np.ndarray:
        """float64 ``[L]``: "LB", the population SD of the experts' activation frequencies.

        Notes
        -----
        Liang et al. (2025), *Not All Models Suit Expert Offloading: On Local Routing Consistency of
        Mixture-of-Expert Models* (arXiv 2505.16056), Tables 1-2, report LB x 100. 0 is perfectly
        balanced; larger is more skewed. Unlike :attr:`cv` it grows with k/E, so compare it only
        between models of equal E and k.
        """
        return self.frequencies.std(axis=1)

    @property
    def load_balance_model(self) -> float:
        """Model-level LB: the SD of activation frequencies over all experts of all MoE layers."""
        return float(self.frequencies.std()) if self.counts.size and self.num_tokens else float("nan")

    @property
    def unused(self) -> np.ndarray:
        """int64 ``[L]``: experts never routed to in each layer."""
        return (self.counts == 0).sum(axis=1)


@dataclass(frozen=True)
class TokenReuse:
    """Reuse of the previous token's experts, per MoE layer.

    For every token that has a predecessor in its sequence, and every layer, count how many of the
    token's (non-empty) experts the previous token of the same sequence also routed to in that layer.

    Attributes
    ----------
    matches : int64 ndarray ``[L]``
        Slots whose expert was also used by the previous token in the same layer.
    slots : int64 ndarray ``[L]``
        Non-empty slots of tokens that have a previous token in their sequence.
    expected_matches : float64 ndarray ``[L]``
        ``matches`` expected if each token's experts were drawn uniformly at random and
        independently of its predecessor: ``sum over pairs of a_t * a_(t-1) / E`` with ``a`` the
        non-empty slots of a token (so :attr:`uniform` is exactly k/E for a trace without empty slots).
    """

    matches: np.ndarray
    slots: np.ndarray
    expected_matches: np.ndarray

    @property
    def per_layer(self) -> np.ndarray:
        """float64 ``[L]``: fraction of a token's experts also used by the previous token (NaN if no pairs)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.matches / self.slots

    @property
    def uniform_per_layer(self) -> np.ndarray:
        """float64 ``[L]``: the uniform-random expectation of :attr:`per_layer` (k/E without empty slots)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.expected_matches / self.slots

    @property
    def overall(self) -> float:
        """Reuse pooled over all layers (each layer weighted by its slots)."""
        total = int(self.slots.sum())
        return int(self.matches.sum()) / total if total else float("nan")

    @property
    def uniform(self) -> float:
        """The uniform-random expectation of :attr:`overall`."""
        total = int(self.slots.sum())
        return float(self.expected_matches.sum()) / total if total else float("nan")

    @property
    def lift(self) -> float:
        """``overall / uniform``: how many times more reuse than independent uniform routing."""
        uniform = self.uniform
        return self.overall / uniform if uniform > 0 else float("nan")


def expert_popularity(trace: Trace) -> ExpertPopularity:
    """Per-layer routing counts of every expert.

    Parameters
    ----------
    trace : Trace
        Any trace; empty slots (-1) are ignored.

    Returns
    -------
    ExpertPopularity
        Counts plus derived shares, normalised entropy, coefficient of variation and the
        load-balance statistic "LB" of Liang et al. (2025).
    """
    num_layers, num_experts = trace.num_layers, trace.num_experts
    experts = trace.experts
    keys = experts.astype(np.int64) + (np.arange(num_layers, dtype=np.int64) * num_experts)[None, :, None]
    keys = keys[experts >= 0]
    counts = np.bincount(keys, minlength=num_layers * num_experts).reshape(num_layers, num_experts)
    return ExpertPopularity(counts=counts.astype(np.int64), num_tokens=trace.num_tokens, top_k=trace.top_k)


def previous_token_reuse(trace: Trace) -> TokenReuse:
    """How much each token reuses the experts of the previous token of its sequence, per layer.

    Parameters
    ----------
    trace : Trace
        Rows of a sequence are in execution order (a :class:`Trace` guarantees it), so the previous
        token is the previous row when both rows belong to the same sequence. The first token of a
        sequence has no predecessor and is not counted.

    Returns
    -------
    TokenReuse
        Matching slots, counted slots and the uniform-random expectation, per layer.

    Notes
    -----
    This is the per-layer "temporal locality" that recency caches exploit; an i.i.d. uniform router
    gives k/E. The paper's segment statistics (SRP/SCH, Liang et al. 2025) generalise it to windows
    of m tokens; this is the m = 2 special case measured as a plain overlap fraction.
    """
    experts = trace.experts
    num_tokens, num_layers, _ = experts.shape
    matches = np.zeros(num_layers, dtype=np.int64)
    slots = np.zeros(num_layers, dtype=np.int64)
    slot_products = np.zeros(num_layers, dtype=np.int64)
    if num_tokens < 2:
        return TokenReuse(matches=matches, slots=slots, expected_matches=slot_products / trace.num_experts)
    same_seq = trace.seq_ids[1:] == trace.seq_ids[:-1]
    valid_all = experts >= 0
    for start in range(0, num_tokens - 1, _REUSE_CHUNK_ROWS):
        stop = min(start + _REUSE_CHUNK_ROWS, num_tokens - 1)
        pair = same_seq[start:stop]
        current = experts[start + 1 : stop + 1][pair]
        previous = experts[start:stop][pair]
        current_valid = valid_all[start + 1 : stop + 1][pair]
        # Ids are distinct within a token, so "any" over the previous token's slots counts each once.
        hit = (current[:, :, :, None] == previous[:, :, None, :]).any(axis=3) & current_valid
        matches += hit.sum(axis=(0, 2))
        current_count = current_valid.sum(axis=2)
        previous_count = valid_all[start:stop][pair].sum(axis=2)
        slots += current_count.sum(axis=0)
        slot_products += (current_count * previous_count).sum(axis=0)
    return TokenReuse(matches=matches, slots=slots, expected_matches=slot_products / trace.num_experts)
