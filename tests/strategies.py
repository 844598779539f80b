"""Hypothesis strategies shared by the tests: traces and key streams."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def expert_arrays(draw, *, max_tokens=40, max_layers=4, max_experts=40, max_k=8, empty_slots=False):
    """``(experts [T, L, k] int16, num_experts)`` with distinct ids per token and layer."""
    num_experts = draw(st.integers(1, max_experts))
    top_k = draw(st.integers(1, min(max_k, num_experts)))
    num_layers = draw(st.integers(1, max_layers))
    num_tokens = draw(st.integers(0, max_tokens))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    experts = np.argsort(rng.random((num_tokens, num_layers, num_experts)), axis=-1)[..., :top_k]
    experts = experts.astype(np.int16)
    if empty_slots and num_tokens and draw(st.booleans()):
        mask = rng.random(experts.shape) < 0.2
        experts[mask] = -1
    return experts, num_experts


@st.composite
def traces(draw, *, max_tokens=40, max_layers=4, max_experts=40, max_k=8, max_seqs=4, optional_columns=True):
    """Random valid :class:`moesim.Trace` objects, with optional columns and metadata."""
    from moesim import Trace

    experts, num_experts = draw(
        expert_arrays(max_tokens=max_tokens, max_layers=max_layers, max_experts=max_experts, max_k=max_k, empty_slots=True)
    )
    num_tokens, num_layers, top_k = experts.shape
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    num_seqs = draw(st.integers(1, max_seqs))
    seq_ids = np.sort(rng.integers(0, num_seqs, num_tokens)) * draw(st.sampled_from([1, 7, 1_000_003]))
    phases = rng.integers(0, 2, num_tokens).astype(np.int8)
    weights = predicted = logits = None
    if optional_columns and draw(st.booleans()):
        weights = rng.random(experts.shape).astype(np.float32)
    if optional_columns and draw(st.booleans()):
        predicted = np.where(rng.random(experts.shape) < 0.5, experts, -1).astype(np.int16)
    if optional_columns and draw(st.booleans()):
        logits = rng.standard_normal((num_tokens, num_layers, num_experts)).astype(np.float16)
    gaps = rng.integers(1, 3, num_tokens)
    positions = np.cumsum(gaps) + rng.integers(0, 100)
    moe_layers = np.cumsum(rng.integers(1, 3, num_layers)) - 1
    return Trace.from_arrays(
        experts,
        num_experts=num_experts,
        seq_ids=seq_ids,
        positions=positions,
        phases=phases,
        weights=weights,
        predicted_experts=predicted,
        router_logits=logits,
        model=draw(st.sampled_from([None, "test-model", "ünïcode/model"])),
        moe_layers=moe_layers.tolist(),
        note=draw(st.sampled_from(["", "x", "ü"])),
    )


@st.composite
def key_streams(draw, *, max_len=200, max_keys=30):
    """A flat request stream of cache keys, ``int32 [N]``, and the number of distinct keys allowed."""
    num_keys = draw(st.integers(1, max_keys))
    length = draw(st.integers(0, max_len))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    skew = draw(st.sampled_from([0.0, 1.0, 2.0]))
    probs = 1.0 / np.arange(1, num_keys + 1) ** skew
    keys = rng.choice(num_keys, size=length, p=probs / probs.sum()).astype(np.int32)
    return keys, num_keys
