"""`SynthParams`: the validated, serialisable description of one synthetic routing process."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from moesim.errors import ConfigError
from moesim.trace.schema import PHASES

_INT16_MAX = int(np.iinfo(np.int16).max)
_SEED_MAX = 2**64 - 1
MAX_TAIL = 100.0
# Rank probabilities below this fraction of the largest are raised to it, so that every expert
# stays drawable (the kernels sum masses in float64) at a cost of at most E * 1e-12 of mass.
_RANK_FLOOR = 1e-12


def _integer(field: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{field}: expected an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{field}: expected an integer {bound}, got {value}")
    return value


def _number(field: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{field}: expected a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{field}: expected a number in [{low:g}, {high:g}], got {value!r}")
    return value


def _probability(field: str, value: object, *, below_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{field}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or value > 1.0 or (below_one and value == 1.0):
        interval = "[0, 1)" if below_one else "[0, 1]"
        raise ConfigError(f"{field}: expected a number in {interval}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class SynthParams:
    """Parameters of the synthetic routing process (see :func:`moesim.trace.synthetic.generate`).

    Parameters
    ----------
    num_experts, top_k, num_layers : int
        Routed experts per MoE layer (1..32767), experts per token (1..num_experts), MoE layers.
    tokens_per_sequence, num_sequences : int
        Shape of the trace: ``num_sequences`` sequences of ``tokens_per_sequence`` tokens each.
    popularity_skew : float in [0, 1)
        Head of the per-layer popularity curve. Each layer ranks its experts (seeded), and the
        experts in the top rank fraction ``x`` receive ``F(x) = 1 - (1 - x**(1 - s))**(1 + t)`` of
        the fresh draws (s = skew, t = tail). With t = 0 this is ``x**(1 - s)``, the large-E limit
        of the discrete Zipf law ``p_r ~ r**-s``: s = 0 is uniform, s -> 1 puts everything on one
        expert. Stating it on the rank fraction makes it independent of E.
    popularity_tail : float in [0, 100]
        Tail of the curve: the least popular experts' share falls off as ``(1 - x)**t`` near
        ``x = 1``. 0 keeps the Zipf tail; load-balanced routers, with a flat head and a few
        rarely used experts, have t > 0 and little skew. (F is the Kumaraswamy distribution
        function with shapes ``1 - s`` and ``1 + t``.)
    persistence : float in [0, 1]
        Probability that a slot reuses an expert of the previous token at the same layer.
    cross_layer : float in [0, 1]
        Probability that a slot follows the (fixed, seeded) map of the token's expert at the
        previous layer. ``persistence + cross_layer <= 1``: each slot has one source.
    sequence_affinity : float in [0, 1)
        How strongly each sequence (prompt, topic) prefers its own experts. A sequence's fresh
        draws at a layer follow its own popularity ``theta ~ Dirichlet(alpha * pi)``, where ``pi``
        is the layer's popularity (skew and tail) and ``alpha = (1 - a) / a``: on average over sequences
        ``theta = pi`` (so the skew keeps its meaning), and two fresh draws of one sequence pick
        the same expert with probability ``(1 - a) * sum(pi**2) + a``. 0 makes every sequence
        alike; larger values give each sequence a smaller working set of experts.
    seed : int
        0..2**64-1. Same parameters and seed give the same trace, bit for bit.
    phase : str
        ``"decode"`` (default) or ``"prefill"``: the phase recorded for every token.
    model : str
        Model label written to the trace (e.g. the traced model a fit stands in for).
    source_trace : str or None
        The real trace these parameters were fitted to, if any (recorded in the trace metadata).
    """

    num_experts: int
    top_k: int
    num_layers: int
    tokens_per_sequence: int
    num_sequences: int = 1
    popularity_skew: float = 0.0
    popularity_tail: float = 0.0
    persistence: float = 0.0
    cross_layer: float = 0.0
    sequence_affinity: float = 0.0
    seed: int = 0
    phase: str = "decode"
    model: str = "synthetic"
    source_trace: str | None = None

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        fix("num_experts", _integer("num_experts", self.num_experts, 1, _INT16_MAX))
        fix("top_k", _integer("top_k", self.top_k, 1))
        if self.top_k > self.num_experts:
            raise ConfigError(
                f"top_k: expected at most num_experts ({self.num_experts}) distinct experts per token, "
                f"got {self.top_k}"
            )
        fix("num_layers", _integer("num_layers", self.num_layers, 1))
        fix("tokens_per_sequence", _integer("tokens_per_sequence", self.tokens_per_sequence, 1))
        fix("num_sequences", _integer("num_sequences", self.num_sequences, 1))
        fix("popularity_skew", _probability("popularity_skew", self.popularity_skew, below_one=True))
        fix("popularity_tail", _number("popularity_tail", self.popularity_tail, 0.0, MAX_TAIL))
        fix("persistence", _probability("persistence", self.persistence))
        fix("cross_layer", _probability("cross_layer", self.cross_layer))
        fix("sequence_affinity", _probability("sequence_affinity", self.sequence_affinity, below_one=True))
        if self.persistence + self.cross_layer > 1.0:
            raise ConfigError(
                f"persistence + cross_layer: expected at most 1 (each slot has one source), got "
                f"{self.persistence!r} + {self.cross_layer!r}; lower one of them"
            )
        fix("seed", _integer("seed", self.seed, 0, _SEED_MAX))
        if self.phase not in PHASES:
            raise ConfigError(f"phase: expected one of {', '.join(PHASES)}, got {self.phase!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model: expected a non-empty label such as 'synthetic', got {self.model!r}")
        if self.source_trace is not None and not isinstance(self.source_trace, str):
            raise ConfigError(f"source_trace: expected a string or None, got {self.source_trace!r}")

    @property
    def num_tokens(self) -> int:
        """Tokens in the generated trace: ``num_sequences * tokens_per_sequence``."""
        return self.tokens_per_sequence * self.num_sequences

    def rescaled(
        self, *, num_experts: int | None = None, top_k: int | None = None, num_layers: int | None = None
    ) -> SynthParams:
        """The same routing process for another architecture (expert count, top-k, depth).

        Extrapolation rule: ``popularity_skew``, ``popularity_tail``, ``persistence``,
        ``cross_layer`` and ``sequence_affinity`` are kept as they are, because each is defined
        independently of E and k:

        * skew and tail fix the load share of every rank *fraction* (the top 10% of experts get
          ``F(0.1)`` of fresh draws at any E), so splitting each expert into g finer ones
          (E -> gE, k -> gk) keeps the popularity curve;
        * persistence and cross-layer are per-slot probabilities: the expected fraction of a
          token's experts carried over from the previous token, or following from the previous
          layer, beyond chance;
        * the affinity is a Dirichlet concentration, and Dirichlet weights aggregate: splitting
          every expert in g leaves a sequence's preferences over the original experts unchanged.

        What changes with E and k is only the chance part of the observed statistics (two
        independent top-k sets overlap in about k/E of their experts when popularity is flat),
        as it would for a real model of that shape.

        The model label gains ``[rescaled E=.. k=.. L=..]`` so the trace is not mistaken for
        the original architecture.
        """
        changes = {
            name: value
            for name, value in (("num_experts", num_experts), ("top_k", top_k), ("num_layers", num_layers))
            if value is not None and value != getattr(self, name)
        }
        if not changes:
            return self
        shape = {"num_experts": self.num_experts, "top_k": self.top_k, "num_layers": self.num_layers, **changes}
        # The label says the architecture is not the model's own any more.
        base = self.model.split("[rescaled ", 1)[0]
        model = f"{base}[rescaled E={shape['num_experts']} k={shape['top_k']} L={shape['num_layers']}]"
        return dataclasses.replace(self, **changes, model=model)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping of every field (the inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "params") -> SynthParams:
        """Build from a mapping (e.g. parsed JSON); unknown or missing keys are a :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of parameter names to values, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {', '.join(names)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {missing}; required are {', '.join(required)}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc}") from None


def rank_popularity(popularity_skew: float, popularity_tail: float, num_experts: int) -> np.ndarray:
    """float64 ``[E]``: the share of fresh draws of the expert of each popularity rank (sums to 1).

    ``p_r = F((r + 1) / E) - F(r / E)`` with ``F(x) = 1 - (1 - x**(1 - s))**(1 + t)``, evaluated
    as differences of ``(1 - x**(1 - s))**(1 + t)`` so the smallest shares keep their precision;
    shares below ``1e-12`` of the largest are raised to it. Arguments are checked as in
    :class:`SynthParams`.
    """
    num_experts = _integer("num_experts", num_experts, 1, _INT16_MAX)
    popularity_skew = _probability("popularity_skew", popularity_skew, below_one=True)
    popularity_tail = _number("popularity_tail", popularity_tail, 0.0, MAX_TAIL)
    x = np.arange(num_experts + 1, dtype=np.float64) / num_experts
    with np.errstate(divide="ignore"):
        head = -np.expm1((1.0 - popularity_skew) * np.log(x))  # 1 - x**(1-s), 1 at x = 0
    survival = head ** (1.0 + popularity_tail)
    shares = survival[:-1] - survival[1:]
    shares = np.maximum(shares, _RANK_FLOOR * shares.max())
    return shares / shares.sum()
