"""Durations of every piece of work in a planned run, vectorised over steps.

GPU work: ``max(FLOPs / gpu_flops, bytes / hbm_bps) + launch_s`` (sim-semantics). Dense work per
step and MoE layer comes from the model's segment terms: FLOPs = tokens x per-token FLOPs + score
FLOPs per attended key x attended keys (sliding windows capped); bytes = the segment's weights
(read once per step) + KV bytes per key x (keys read + one written per token), where each
*sequence's* KV cache is read once per step (flash-attention style: a prefill chunk does not re-read
the cache per query token). Expert kernels: ``max(2 x params x n_e / gpu_flops, expert_bytes /
hbm_bps) + launch_s``; on the CPU ``max(FLOPs / cpu_flops, expert_bytes / dram_bps)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.models import kv_bytes_per_element


@dataclass(frozen=True)
class StepShape:
    """Per step: tokens, and per attention window the keys attended (summed over tokens) and the
    keys read (summed over the step's sequences)."""

    num_tokens: np.ndarray  # int64[S]
    logit_tokens: np.ndarray  # int64[S] tokens that need the LM head
    token_contexts: np.ndarray  # int64[R] context length of each row in step order
    step_row_offsets: np.ndarray  # int64[S+1]
    seq_last_context: np.ndarray  # int64[Q] context at the end of the step, per (step, sequence)
    step_seq_offsets: np.ndarray  # int64[S+1] into seq_last_context

    def attended(self, window: int | None) -> np.ndarray:
        ctx = self.token_contexts if window is None else np.minimum(self.token_contexts, window)
        return _segment_sums(ctx, self.step_row_offsets)

    def read(self, window: int | None) -> np.ndarray:
        ctx = self.seq_last_context if window is None else np.minimum(self.seq_last_context, window)
        return _segment_sums(ctx, self.step_seq_offsets)


def _segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    sums = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return sums[offsets[1:]] - sums[offsets[:-1]]


def step_shape(positions: np.ndarray, seq_ids: np.ndarray, step_offsets: np.ndarray, step_rows: np.ndarray,
               step_phase: np.ndarray) -> StepShape:
    contexts = positions[step_rows].astype(np.int64) + 1
    seqs = seq_ids[step_rows]
    num_tokens = np.diff(step_offsets).astype(np.int64)
    # a new (step, sequence) starts at every step start and wherever the sequence changes
    starts = np.zeros(len(step_rows), dtype=bool)
    starts[step_offsets[:-1][num_tokens > 0]] = True
    starts[1:] |= seqs[1:] != seqs[:-1]
    ends = np.append(starts[1:], True)
    seq_last_context = contexts[ends]
    step_seq_offsets = np.concatenate([[0], np.cumsum(_segment_sums(starts.astype(np.int64), step_offsets))])
    logit_tokens = np.where(step_phase == 1, num_tokens, np.minimum(num_tokens, 1))
    return StepShape(num_tokens, logit_tokens, contexts, step_offsets.astype(np.int64),
                     seq_last_context, step_seq_offsets.astype(np.int64))


@dataclass(frozen=True)
class SegmentTerms:
    """Linear cost terms of the non-expert work charged to one MoE layer (or the head)."""

    flops_per_token: float  # projections, dense FFNs, routers, shared experts, Mamba
    head_flops_per_token: float  # LM head, per token that needs logits (head segment only)
    weight_bytes: int  # weights read once per step
    embedding_bytes_per_token: int  # embedding row read per token (first segment only)
    windows: tuple[tuple[int | None, float, int], ...]  # (window, score FLOPs per key, KV elements per key)
    state_elements: int  # Mamba state elements read and written per token


def segment_terms(model, index: int) -> SegmentTerms:
    """Cost terms of segment ``index`` (0..L-1: MoE layers, L: the head) of ``model``."""
    segment = model._segments[index]
    dense_fmt = model._fmt(None, model.weight_format, "weight_format")
    emb_fmt = model._fmt(None, model.embedding_format, "embedding_format")
    weight_bytes = segment.weights.nbytes(dense_fmt) + segment.head.nbytes(emb_fmt)
    if index == model.num_moe_layers and model.tie_word_embeddings:
        weight_bytes += emb_fmt.matrix_bytes(model.vocab_size, model.hidden_size)  # tied LM head is still read
    return SegmentTerms(
        flops_per_token=float(segment.flops_per_token),
        head_flops_per_token=float(segment.head_flops_per_token),
        weight_bytes=int(weight_bytes),
        embedding_bytes_per_token=int(emb_fmt.matrix_bytes(1, model.hidden_size)) if index == 0 else 0,
        windows=tuple(segment.windows),
        state_elements=int(segment.state_elements),
    )


def gpu_time_s(flops: np.ndarray, num_bytes: np.ndarray, gpu_flops: float, hbm_bps: float, launch_s: float) -> np.ndarray:
    return np.maximum(flops / gpu_flops, num_bytes / hbm_bps) + launch_s


def dense_times_s(model, shape: StepShape, *, gpu_flops: float, hbm_bps: float, launch_s: float,
                  kv_format: str) -> tuple[np.ndarray, np.ndarray]:
    """``(dense_s [S, L], head_s [S])`` for every step and MoE layer."""
    kv_elem = kv_bytes_per_element(kv_format)
    num_steps = len(shape.num_tokens)
    num_layers = model.num_moe_layers
    dense = np.empty((num_steps, num_layers))
    cache: dict[int | None, tuple[np.ndarray, np.ndarray]] = {}

    def keys(window):
        if window not in cache:
            cache[window] = (shape.attended(window), shape.read(window))
        return cache[window]

    def segment_time(index: int) -> np.ndarray:
        terms = segment_terms(model, index)
        tokens = shape.num_tokens.astype(np.float64)
        flops = tokens * terms.flops_per_token + shape.logit_tokens * terms.head_flops_per_token
        nbytes = float(terms.weight_bytes) + tokens * terms.embedding_bytes_per_token
        for window, score_flops_per_key, kv_elements_per_key in terms.windows:
            attended, read = keys(window)
            flops = flops + score_flops_per_key * attended
            nbytes = nbytes + kv_elements_per_key * kv_elem * (read + shape.num_tokens)
        nbytes = nbytes + 2.0 * shape.num_tokens * terms.state_elements * kv_elem
        return gpu_time_s(flops, nbytes, gpu_flops, hbm_bps, launch_s)

    for layer in range(num_layers):
        dense[:, layer] = segment_time(layer)
    return dense, segment_time(num_layers)
