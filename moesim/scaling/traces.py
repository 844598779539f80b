"""Trace families: the routing traces a scaling analysis simulates each architecture with.

An analysis compares architectures that were never traced (other E, k, depth). A
:class:`TraceFamily` stands in for them: it fits the synthetic routing process to a real trace
once (:func:`moesim.trace.synthetic.fit`) and draws, for any shape, a synthetic trace from the
fitted parameters rescaled by :meth:`SynthParams.rescaled`'s extrapolation rule. Where the real
trace has the requested shape it is used itself. Traces are described by small
:class:`TraceRecipe` s (what to read or draw), so parallel workers rebuild them instead of
receiving arrays, and results record exactly which trace each point saw.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moesim import fields as F
from moesim.errors import ConfigError
from moesim.trace import Trace, read_trace

EXTRAPOLATION_RULE = (
    "synthetic traces are drawn from the routing process fitted to the real trace (simulated method of "
    "moments: popularity skew and tail, persistence, cross-layer following, sequence affinity) and "
    "rescaled to each architecture's E, k and number of MoE layers with those five parameters held fixed: "
    "each is defined on rank fractions or per slot, independently of E and k, so splitting every expert "
    "into g finer ones keeps the popularity curve and a sequence's preferences over the original experts; "
    "only the chance part of the statistics changes with E and k (SynthParams.rescaled)"
)


# Keys of Trace.metadata that are the trace's shape, not user metadata.
_HEADER_KEYS = ("num_experts", "top_k", "num_layers", "model", "moe_layers")


@dataclass(frozen=True)
class TraceRecipe:
    """What trace a point simulates: ``kind`` ``"real"`` (a sample of ``path``) or ``"synthetic"``
    (``params`` drawn with the given sequence lengths and first positions).

    ``seq_ids`` and ``max_tokens`` select the real sample (sequence ids, each cut to its first
    ``max_tokens`` rows); ``lengths`` and ``first_positions`` shape a synthetic trace, one entry per
    sequence (positions run ``first, first + 1, ...``, so contexts and KV caches are those of
    decoding after a prompt of that many tokens).
    """

    kind: str
    path: str | None = None
    seq_ids: tuple[int, ...] = ()
    max_tokens: int | None = None
    params: tuple[tuple[str, object], ...] = ()
    lengths: tuple[int, ...] = ()
    first_positions: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        if self.kind == "real":
            return f"real:{Path(self.path or '').name}"
        p = dict(self.params)
        return f"synthetic:E={p['num_experts']},k={p['top_k']},L={p['num_layers']},seed={p['seed']}"

    def build(self) -> Trace:
        """The trace (memoised per process: workers build each recipe once)."""
        return _build(self)


@functools.lru_cache(maxsize=4)
def _read(path: str, size: int, mtime_ns: int) -> Trace:
    return read_trace(path)


def read_cached(path: str | os.PathLike) -> Trace:
    """``read_trace(path)``, memoised per process on (path, size, modification time)."""
    try:
        info = os.stat(path)
    except OSError:
        raise ConfigError(f"trace: no such trace file '{path}'; give a path to a .parquet trace") from None
    return _read(str(path), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _build(recipe: TraceRecipe) -> Trace:
    if recipe.kind == "real":
        trace = read_cached(recipe.path).select(seqs=list(recipe.seq_ids))
        return _cut(trace, recipe.max_tokens)
    from moesim.trace.synthetic import SynthParams
    from moesim.trace.synthetic.generator import draw_experts

    params = SynthParams(**dict(recipe.params))
    lengths = np.asarray(recipe.lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    experts = draw_experts(params, offsets)
    seq_ids = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    starts = np.repeat(np.asarray(recipe.first_positions, dtype=np.int64), lengths)
    positions = starts + (np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], lengths))
    return Trace.from_arrays(
        experts,
        num_experts=params.num_experts,
        seq_ids=seq_ids,
        positions=positions,
        phases=params.phase,
        model=params.model,
        synthetic=True,
        synth_params=params.to_dict(),
        source_trace=params.source_trace,
    )


def _cut(trace: Trace, max_tokens: int | None) -> Trace:
    if max_tokens is None:
        return trace
    offsets = trace.seq_offsets
    keep = np.zeros(trace.num_tokens, dtype=bool)
    for start, stop in itertools.pairwise(offsets):
        keep[start : min(stop, start + max_tokens)] = True
    if keep.all():
        return trace
    return trace.take(keep)


class TraceFamily:
    """A real trace, the synthetic process fitted to it, and traces for any architecture.

    Parameters
    ----------
    path : str or Path
        The real trace (Parquet). Its decode tokens are fitted (prefill if it has none).
    num_sequences : int or None
        Sequences of the real sample the analyses replay (the first ones by id; None: all).
    max_tokens_per_sequence : int or None
        Cut each sampled sequence to this many tokens (None: whole sequences).
    fit_tokens : int
        Tokens the fit uses (:func:`moesim.trace.synthetic.fit` ``max_tokens``).
    seed : int
        Seed of the fit and of every synthetic trace (the same seed for every shape: common random
        numbers, so differences between architectures are not seed noise).

    Notes
    -----
    :meth:`like_sample` draws synthetic traces with the real sample's exact sequence lengths and
    positions, so a real and a synthetic point differ only in routing; :meth:`synthetic` draws any
    number of equal sequences after a prompt (for batched serving). The fit and its rule:
    :data:`EXTRAPOLATION_RULE`.
    """

    rule = EXTRAPOLATION_RULE

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        num_sequences: int | None = None,
        max_tokens_per_sequence: int | None = None,
        fit_tokens: int = 16384,
        seed: int = 0,
    ):
        from moesim.trace.synthetic import fit

        self.path = str(Path(path).resolve())
        real = read_cached(self.path)
        self.seed = F.check_int("seed", seed, minimum=0)
        phase = "decode" if real.phase_counts().get("decode", 0) else "prefill"
        ids = real.select(phase=phase).sequence_ids
        if num_sequences is not None:
            ids = ids[: F.check_int("num_sequences", num_sequences, minimum=1)]
        if max_tokens_per_sequence is not None:
            max_tokens_per_sequence = F.check_int("max_tokens_per_sequence", max_tokens_per_sequence, minimum=1)
        self.real_recipe = TraceRecipe(
            kind="real", path=self.path, seq_ids=tuple(int(i) for i in ids), max_tokens=max_tokens_per_sequence
        )
        self.real_sample = self.real_recipe.build().select(phase=phase)
        self.fit = fit(
            real,
            phase=phase,
            max_tokens=F.check_int("fit_tokens", fit_tokens, minimum=2),
            seed=self.seed,
            source_trace=Path(self.path).name,
        )
        self.params = self.fit.params
        self.phase = phase

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(num_experts, top_k, num_layers)`` of the real trace."""
        return self.params.num_experts, self.params.top_k, self.params.num_layers

    def _synthetic_recipe(self, num_experts: int, top_k: int, num_layers: int, lengths, first_positions) -> TraceRecipe:
        params = self.params.rescaled(num_experts=num_experts, top_k=top_k, num_layers=num_layers)
        params = dataclasses.replace(
            params, seed=self.seed, num_sequences=len(lengths), tokens_per_sequence=max(1, int(max(lengths)))
        )
        return TraceRecipe(
            kind="synthetic",
            params=tuple(params.to_dict().items()),
            lengths=tuple(int(n) for n in lengths),
            first_positions=tuple(int(p) for p in first_positions),
        )

    def like_sample(self, num_experts: int, top_k: int, num_layers: int, *, prefer_real: bool = True) -> TraceRecipe:
        """The recipe for shape ``(E, k, L)``: the real sample when it has that shape (and
        ``prefer_real``), else a synthetic trace with the real sample's sequence lengths and positions."""
        if prefer_real and (num_experts, top_k, num_layers) == self.shape:
            return self.real_recipe
        sample = self.real_sample
        offsets = sample.seq_offsets
        return self._synthetic_recipe(
            num_experts, top_k, num_layers, np.diff(offsets), sample.positions[offsets[:-1]].astype(np.int64)
        )

    def synthetic(
        self,
        num_experts: int,
        top_k: int,
        num_layers: int,
        *,
        num_sequences: int,
        tokens_per_sequence: int,
        prompt_tokens: int = 0,
    ) -> TraceRecipe:
        """A synthetic recipe of ``num_sequences`` sequences decoding ``tokens_per_sequence`` tokens
        each after a prompt of ``prompt_tokens`` (positions start there)."""
        num_sequences = F.check_int("num_sequences", num_sequences, minimum=1)
        tokens = F.check_int("tokens_per_sequence", tokens_per_sequence, minimum=1)
        prompt_tokens = F.check_int("prompt_tokens", prompt_tokens, minimum=0)
        return self._synthetic_recipe(
            num_experts, top_k, num_layers, [tokens] * num_sequences, [prompt_tokens] * num_sequences
        )

    def describe(self) -> dict[str, object]:
        """The family as plain data: real sample, fitted parameters, fit notes and the rule."""
        sample = self.real_sample
        return {
            "real_trace": self.path,
            "real_model": sample.model,
            "real_shape": {"num_experts": self.shape[0], "top_k": self.shape[1], "num_layers": self.shape[2]},
            "real_sample_sequences": sample.num_sequences,
            "real_sample_tokens": sample.num_tokens,
            "phase": self.phase,
            "fitted_params": self.params.to_dict(),
            "fit_notes": list(self.fit.notes),
            "seed": self.seed,
            "extrapolation_rule": self.rule,
        }
