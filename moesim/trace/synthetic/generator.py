"""`generate`: draw a routing trace from the synthetic process described by :class:`SynthParams`."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from moesim.errors import ConfigError
from moesim.trace.synthetic.params import SynthParams, rank_popularity
from moesim.trace.trace import Trace

GENERATOR = "moesim.trace.synthetic"
# Bump when the same parameters would give a different trace.
GENERATOR_VERSION = 1
# Sequences per thread are at least this many slots (tokens * layers * k), so small traces stay serial.
_MIN_SLOTS_PER_THREAD = 1 << 22


def _check_params(params: object) -> SynthParams:
    if not isinstance(params, SynthParams):
        raise ConfigError(f"params: expected a SynthParams, got {type(params).__name__}")
    return params


def _layout(params: SynthParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Popularity of each rank, and each layer's seeded ranking: (rank_probability, order, rank)."""
    from moesim.kernels.synthetic import stream_bits

    num_experts, num_layers = params.num_experts, params.num_layers
    rank_probability = rank_popularity(params.popularity_skew, params.popularity_tail, num_experts)
    # Stream 0 ranks the experts of every layer; streams 1.. belong to the sequences.
    bits = stream_bits(np.uint64(params.seed), np.uint64(0), num_layers * num_experts)
    order = np.argsort(bits.reshape(num_layers, num_experts), axis=1, kind="stable").astype(np.int64)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(num_experts, dtype=np.int64)[None, :].repeat(num_layers, 0), axis=1)
    return rank_probability, order, rank


def draw_experts(params: SynthParams, seq_offsets: np.ndarray) -> np.ndarray:
    """int16 ``[seq_offsets[-1], L, k]``: sequence s of ``params`` cut to ``seq_offsets[s+1] - seq_offsets[s]`` tokens.

    Sequences are drawn independently (a sequence is a prefix of itself drawn longer), so this
    mirrors any length profile; :func:`generate` uses equal lengths. Sequences are split between
    threads when there is enough work; the result does not depend on it.
    """
    from moesim.kernels.synthetic import synth_experts

    rank_probability, order, rank = _layout(params)
    seq_offsets = np.ascontiguousarray(seq_offsets, dtype=np.int64)
    num_seqs, num_rows = len(seq_offsets) - 1, int(seq_offsets[-1])
    experts = np.empty((num_rows, params.num_layers, params.top_k), dtype=np.int16)
    slots = num_rows * params.num_layers * params.top_k
    num_threads = max(1, min(os.cpu_count() or 1, num_seqs, slots // _MIN_SLOTS_PER_THREAD))
    # Split at sequence boundaries into parts of about equal tokens.
    cuts = np.searchsorted(seq_offsets, np.linspace(0, num_rows, num_threads + 1)[1:-1])
    edges = np.unique(np.concatenate([[0], cuts, [num_seqs]]))

    def fill(first: int, stop: int) -> None:
        low, high = seq_offsets[first], seq_offsets[stop]
        synth_experts(
            experts[low:high], np.uint64(params.seed), first, seq_offsets[first : stop + 1] - low,
            params.persistence, params.cross_layer, params.sequence_affinity, rank_probability, order, rank,
        )

    if len(edges) <= 2:
        fill(0, num_seqs)
    else:
        with ThreadPoolExecutor(len(edges) - 1) as pool:  # the kernel releases the GIL (nogil)
            list(pool.map(fill, edges[:-1].tolist(), edges[1:].tolist()))
    return experts


def layer_popularity(params: SynthParams) -> np.ndarray:
    """float64 ``[L, E]``: the popularity ``pi`` of expert e at layer l: the probability that a
    fresh draw picks it, on average over sequences (each sequence's own Dirichlet popularity has
    mean ``pi``). Reuse and cross-layer slots copy earlier choices, so they leave this marginal
    unchanged up to the coupling of a token's k distinct slots.
    """
    params = _check_params(params)
    rank_probability, _, rank = _layout(params)
    return rank_probability[rank]


def cross_layer_map(params: SynthParams) -> np.ndarray:
    """int64 ``[L, E]``: ``m[l, e]`` is the layer-l expert a cross-layer slot takes when the token
    chose ``e`` at layer l-1 (row 0 is -1: the first layer has nothing to follow).

    The map sends the expert of popularity rank r at layer l-1 to the expert of rank r at layer l,
    so following it keeps every layer's popularity marginal intact.
    """
    params = _check_params(params)
    _, order, rank = _layout(params)
    mapping = np.full_like(order, -1)
    for layer in range(1, params.num_layers):
        mapping[layer] = order[layer, rank[layer - 1]]
    return mapping


def generate(params: SynthParams) -> Trace:
    """Draw a synthetic routing trace.

    Parameters
    ----------
    params : SynthParams
        Architecture, trace shape, the five routing parameters and the seed.

    Returns
    -------
    Trace
        ``num_sequences * tokens_per_sequence`` tokens; sequence ids 0..S-1, positions 0..T-1,
        every token in ``params.phase``; no gate weights. Metadata: ``synthetic: true``,
        ``generator``, ``generator_version``, ``synth_params`` (every field) and, for fitted
        parameters, ``source_trace``.

    Notes
    -----
    Each layer l has its own seeded ranking of the experts; the expert of rank r has popularity
    ``pi_r = F((r+1)/E) - F(r/E)``, ``F(x) = 1 - (1 - x**(1-s))**(1+t)`` on the rank fraction
    (s = ``popularity_skew``, a Zipf exponent when t = ``popularity_tail`` is 0). Each
    sequence draws its own popularity per layer, ``theta ~ Dirichlet(pi * (1 - a) / a)`` with
    ``a = sequence_affinity`` (``theta = pi`` when a = 0): sequences share the layer's popular
    experts on average and keep their own working sets, as prompts on different topics do
    (per-request activation patterns: Xue et al. 2024; the Dirichlet is the usual hierarchical
    prior, as in Teh et al. 2006). Slot j of token t at layer l (slots are filled in order, 0
    being the top-1 expert) has one source:

    * with probability ``persistence``: the previous token's slot-j expert at layer l (temporal
      locality, the reuse LRU expert caches exploit; Eliseev & Mazur 2023),
    * with probability ``cross_layer``: the expert that the token's slot-j expert at layer l-1 maps
      to (inter-layer expert affinity, the signal cross-layer prefetchers exploit; Yao et al.
      2024). The map sends the layer-(l-1) expert of rank r to the layer-l expert of rank r, so
      following it keeps every layer's popularity whatever p and c,
    * otherwise: a fresh draw, by theta, among the experts the token has not yet chosen there.

    A source that does not exist (first token of a sequence, first layer) gives a fresh draw; a
    copied expert that the token already holds is replaced by a uniformly chosen free expert of
    the same source, so the k experts stay distinct.

    Generating costs O(T * L * k) plus, when a > 0, O(L * E) gamma variates per sequence
    (Marsaglia & Tsang 2000). Randomness is counter-based (SplitMix64; Steele, Lea & Flood 2014),
    keyed by seed, sequence and slot: the first S' sequences (and first T' tokens of each) of a
    trace are the trace drawn with S' sequences (T' tokens), and the result does not depend on
    the number of threads used.

    References: L. Xue et al., "MoE-Infinity: Offloading-Efficient MoE Model Serving",
    arXiv:2401.14361 (2024). Y. W. Teh, M. I. Jordan, M. J. Beal, D. M. Blei, "Hierarchical
    Dirichlet Processes", JASA 101(476), 2006. G. Marsaglia, W. W. Tsang, "A Simple Method for
    Generating Gamma Variables", ACM TOMS 26(3), 2000. D. Eliseev, D. Mazur, "Fast Inference of
    Mixture-of-Experts Language Models with Offloading", arXiv:2312.17238 (2023). J. Yao et al.,
    "Exploiting Inter-Layer Expert Affinity for Accelerating Mixture-of-Experts Model Inference",
    IPDPS 2024. G. Steele, D. Lea, C. Flood, "Fast Splittable Pseudorandom Number Generators",
    OOPSLA 2014.
    """
    params = _check_params(params)
    num_seqs, num_tokens = params.num_sequences, params.tokens_per_sequence
    experts = draw_experts(params, np.arange(num_seqs + 1, dtype=np.int64) * num_tokens)
    metadata = {
        "synthetic": True,
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "synth_params": params.to_dict(),
    }
    if params.source_trace is not None:
        metadata["source_trace"] = params.source_trace
    return Trace.from_arrays(
        experts,
        num_experts=params.num_experts,
        seq_ids=np.repeat(np.arange(num_seqs, dtype=np.int64), num_tokens),
        phases=params.phase,
        model=params.model,
        **metadata,
    )
