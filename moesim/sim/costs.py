"""Durations of every piece of work in a planned run, vectorised over steps.

GPU work takes ``max(FLOPs / gpu_flops, bytes / hbm_bps) + launch_s`` (sim-semantics). Dense work
per step and MoE layer comes from :meth:`moesim.models.ModelSpec.step_costs`: weights are read once
per step, and each *sequence's* KV cache once per step (flash-attention style: a prefill chunk does
not re-read the cache for every query token). Expert kernels take
``max(2 x params x n_e / gpu_flops, expert_bytes / hbm_bps) + launch_s``; on the CPU
``max(FLOPs / cpu_flops, expert_bytes / dram_bps)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StepShape:
    """What each step processes: tokens, their contexts, and the KV reads per (step, sequence)."""

    num_tokens: np.ndarray  # int64[S]
    logit_tokens: np.ndarray  # int64[S] tokens that need the LM head
    token_contexts: np.ndarray  # int64[R] keys each row attends to (its own included), step order
    seq_contexts: np.ndarray  # int64[Q] keys read per (step, sequence): the sequence's last context
    seqs_per_step: np.ndarray  # int64[S]


def _segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    sums = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return sums[offsets[1:]] - sums[offsets[:-1]]


def step_shape(positions: np.ndarray, seq_ids: np.ndarray, step_offsets: np.ndarray, step_rows: np.ndarray,
               step_phase: np.ndarray) -> StepShape:
    """Shape of every step from the schedule. Decode steps need logits for every token, a prefill
    chunk only for its last (which starts the sequence's decode)."""
    contexts = positions[step_rows].astype(np.int64) + 1
    seqs = seq_ids[step_rows]
    num_tokens = np.diff(step_offsets).astype(np.int64)
    starts = np.zeros(len(step_rows), dtype=bool)  # a new (step, sequence) run begins here
    starts[step_offsets[:-1][num_tokens > 0]] = True
    starts[1:] |= seqs[1:] != seqs[:-1]
    ends = np.append(starts[1:], True)
    seqs_per_step = _segment_sums(starts.astype(np.int64), step_offsets.astype(np.int64))
    logit_tokens = np.where(step_phase == 1, num_tokens, np.minimum(num_tokens, 1))
    return StepShape(num_tokens, logit_tokens.astype(np.int64), contexts, contexts[ends], seqs_per_step)


def gpu_time_s(flops: np.ndarray, num_bytes: np.ndarray, gpu_flops: float, hbm_bps: float, launch_s: float) -> np.ndarray:
    return np.maximum(flops / gpu_flops, num_bytes / hbm_bps) + launch_s


def dense_times_s(model, shape: StepShape, *, gpu_flops: float, hbm_bps: float, launch_s: float,
                  kv_format: str) -> tuple[np.ndarray, np.ndarray]:
    """``(dense_s [S, L], head_s [S])`` for every step and MoE layer."""
    costs = model.step_costs(shape.num_tokens, shape.token_contexts, logit_tokens=shape.logit_tokens,
                             kv_format=kv_format, read_context_lens=shape.seq_contexts,
                             reads_per_step=shape.seqs_per_step)
    dense = gpu_time_s(costs.dense_flops, costs.dense_bytes.astype(np.float64), gpu_flops, hbm_bps, launch_s)
    head = gpu_time_s(costs.head_flops, costs.head_bytes.astype(np.float64), gpu_flops, hbm_bps, launch_s)
    return dense, head
