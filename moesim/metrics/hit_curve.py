"""Expert-cache hit-rate curves of a routing trace: every cache size at once.

:func:`hit_curve` turns a trace into a request stream of cache keys (one layer's experts, or every
MoE layer's experts in one shared cache keyed ``layer * E + expert``) and counts, per sequence, the
hits of a cache of every size ``c = 1..C`` under LRU, LFU, FIFO, Belady or SCH. Each sequence
starts with an empty cache. Exact semantics, including the three accounting modes and the two
cold-fill rules: :mod:`moesim.kernels.cache_common` and spec ``specs/lrc-metrics.md`` sections 3-4.

Kernels: LRU by stack distance (a bitset over time), LFU, Belady and SCH by one-pass priority stacks
(Mattson et al. 1970), FIFO (not a stack algorithm) by one simulation per size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.errors import ConfigError
from moesim.metrics import bootstrap
from moesim.metrics._checks import _check_layer, _check_trace
from moesim.trace.trace import Trace

POLICIES = ("lru", "lfu", "fifo", "belady", "sch")
LEVELS = ("layer", "model")
ACCOUNTING = ("reference", "request", "pinned")
COLD_FILL = ("free", "miss")


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class RequestStream:
    """A trace flattened into cache keys with its group, token and sequence structure.

    ``keys`` int32[N] (0..num_keys-1, empty slots dropped); ``group_offsets`` int64[G+1] (the keys
    looked up together); ``group_token`` int64[G] (index of the group's token within its sequence,
    the row order of the trace); ``seq_group_offsets`` int64[S+1] (groups of each sequence).
    """

    keys: np.ndarray
    group_offsets: np.ndarray
    group_token: np.ndarray
    seq_group_offsets: np.ndarray
    num_keys: int

    def __post_init__(self) -> None:
        """Coerce dtypes, make the arrays read-only and check the structure the kernels rely on
        (they do not check it, and an out-of-range index in a kernel is memory corruption)."""
        where = "request stream"
        arrays = {}
        for name, dtype in [("keys", np.int32), ("group_offsets", np.int64), ("group_token", np.int64),
                            ("seq_group_offsets", np.int64)]:
            array = np.asarray(getattr(self, name))
            if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
                raise ConfigError(f"{where}: {name} must be a 1-d integer array, got {array.dtype} {array.shape}")
            arrays[name] = array.astype(dtype, copy=False)
            object.__setattr__(self, name, _readonly(arrays[name]))
        if isinstance(self.num_keys, bool) or not isinstance(self.num_keys, (int, np.integer)) or self.num_keys < 1:
            raise ConfigError(f"{where}: num_keys must be an integer >= 1, got {self.num_keys!r}")
        object.__setattr__(self, "num_keys", int(self.num_keys))
        keys, offsets = arrays["keys"], arrays["group_offsets"]
        tokens, seqs = arrays["group_token"], arrays["seq_group_offsets"]
        if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(keys) or (np.diff(offsets) < 0).any():
            raise ConfigError(f"{where}: group_offsets must rise from 0 to len(keys) = {len(keys)}")
        if len(tokens) != len(offsets) - 1:
            raise ConfigError(f"{where}: group_token has {len(tokens)} entries, expected one per group "
                              f"({len(offsets) - 1})")
        if len(seqs) < 1 or seqs[0] != 0 or seqs[-1] != len(tokens) or (np.diff(seqs) < 0).any():
            raise ConfigError(f"{where}: seq_group_offsets must rise from 0 to the number of groups ({len(tokens)})")
        if len(keys) and (keys.min() < 0 or keys.max() >= self.num_keys):
            bad = int(np.flatnonzero((keys < 0) | (keys >= self.num_keys))[0])
            raise ConfigError(f"{where}: key {keys[bad]} at request {bad} is outside 0..{self.num_keys - 1}")
        starts = np.zeros(len(tokens), dtype=bool)
        starts[seqs[:-1][seqs[:-1] < len(tokens)]] = True
        steps = np.diff(tokens)
        if (tokens < 0).any() or (steps < 0)[~starts[1:]].any():
            raise ConfigError(f"{where}: group_token must be >= 0 and non-decreasing within each sequence")
        sizes = np.diff(offsets)
        if sizes.max(initial=0) > 1:
            group = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
            pairs = np.sort(group * self.num_keys + keys)
            twice = np.flatnonzero(pairs[1:] == pairs[:-1])
            if len(twice):
                g = int(pairs[twice[0]] // self.num_keys)
                raise ConfigError(f"{where}: key {int(pairs[twice[0]] % self.num_keys)} appears twice in group {g}; "
                                  f"a group's keys must be distinct")

    @classmethod
    def from_trace(
        cls, trace: Trace, *, level: str = "layer", layer: int | None = None, grouping: str = "layer"
    ) -> RequestStream:
        """Keys of one MoE layer (``level="layer"``, keys = expert ids) or of all of them
        (``level="model"``, key = ``layer_index * E + expert``, layers in trace order).

        ``grouping="layer"`` makes each (token, layer) a group; ``"token"`` makes a token's
        requests of all layers one group (the paper's model-level cache, spec 3.3). Within a
        group keys keep the trace's top-k order (highest router score first).
        """
        _check_trace(trace)
        _check_choice("grouping", grouping, ("layer", "token"))
        experts = trace.experts
        if level == "layer":
            slots = experts[:, _check_layer(trace, layer), :]  # [T, k]
            num_keys = trace.num_experts
            groups_per_token = 1
        elif level == "model":
            offsets = (np.arange(trace.num_layers, dtype=np.int32) * trace.num_experts)[None, :, None]
            slots = np.where(experts >= 0, experts.astype(np.int32) + offsets, -1)
            groups_per_token = trace.num_layers if grouping == "layer" else 1
            width = trace.num_layers * trace.top_k // groups_per_token
            slots = slots.reshape(trace.num_tokens * groups_per_token, width)
            num_keys = trace.num_experts * trace.num_layers
        else:
            raise ConfigError(f"level: expected one of {', '.join(LEVELS)}, got {level!r}")
        valid = slots >= 0
        keys = slots[valid].astype(np.int32)
        group_offsets = np.zeros(len(slots) + 1, dtype=np.int64)
        np.cumsum(valid.sum(axis=1), out=group_offsets[1:])
        seq_offsets = trace.seq_offsets
        token_in_seq = np.arange(trace.num_tokens, dtype=np.int64) - np.repeat(
            seq_offsets[:-1], np.diff(seq_offsets)
        )
        return cls(
            keys=keys,
            group_offsets=group_offsets,
            group_token=np.repeat(token_in_seq, groups_per_token),
            seq_group_offsets=seq_offsets * groups_per_token,
            num_keys=int(num_keys),
        )

    @property
    def num_sequences(self) -> int:
        return len(self.seq_group_offsets) - 1

    def requests_per_sequence(self) -> np.ndarray:
        """int64[S]: number of requests (keys) in each sequence."""
        return np.diff(self.group_offsets[self.seq_group_offsets])


@dataclass(frozen=True, eq=False)
class HitCurve:
    """Hits of a cache of every size 1..C on a trace, per sequence.

    Attributes
    ----------
    policy, level, layer, segment, accounting, cold_fill
        What was computed (``layer`` is None at model level, ``segment`` None except for SCH).
    cache_sizes : int64[C]
        1..C, C = E (layer level) or E * L (model level).
    active_experts : int
        k (layer level) or k * L (model level): experts one token activates in the cache's scope.
    rho : float64[C]
        ``cache_sizes / active_experts``, the paper's cache-size ratio.
    hits : int64[S, C]
        Hits per sequence and size; -1 where the accounting mode does not apply (pinned
        accounting below the size of a group).
    num_requests : int64[S]
        Requests (routed expert slots, empty slots excluded) per sequence.
    rate : float64[C]
        Mean over sequences of ``hits / num_requests`` (the paper's aggregation; sequences
        without requests are left out), NaN where not applicable or no sequence has requests.
    """

    policy: str
    level: str
    layer: int | None
    segment: int | None
    accounting: str
    cold_fill: str
    cache_sizes: np.ndarray
    active_experts: int
    rho: np.ndarray
    hits: np.ndarray
    num_requests: np.ndarray
    rate: np.ndarray

    @property
    def applicable(self) -> np.ndarray:
        """bool[C]: sizes at which the accounting mode is defined for every sequence."""
        return ~(self.hits < 0).any(axis=0)

    @property
    def pooled_rate(self) -> np.ndarray:
        """float64[C]: all hits over all requests (weights sequences by length; NaN as ``rate``)."""
        total = int(self.num_requests.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled = self.hits.sum(axis=0) / total if total else np.full(len(self.cache_sizes), np.nan)
        return np.where(self.applicable, pooled, np.nan)

    def per_sequence_rates(self) -> np.ndarray:
        """float64[S', C]: ``hits / num_requests`` of the S' sequences that have requests."""
        used = self.num_requests > 0
        rates = self.hits[used] / self.num_requests[used, None]
        rates[:, ~self.applicable] = np.nan
        return rates

    def rate_at(self, rho: float | np.ndarray) -> float | np.ndarray:
        """Hit rate at cache-size ratio ``rho`` (cache size ``rho * active_experts``).

        Whole cache sizes read :attr:`rate`; between two sizes the rate is interpolated linearly.
        Raises ConfigError outside ``[1, C] / active_experts``.
        """
        values = np.asarray(rho, dtype=np.float64)
        size = values * self.active_experts
        top = len(self.cache_sizes)
        bad = ~((size >= 1 - 1e-9) & (size <= top + 1e-9))
        if bad.any():
            raise ConfigError(
                f"rho: {np.atleast_1d(values)[np.atleast_1d(bad)][0]:g} is outside this curve's range "
                f"{1 / self.active_experts:g}..{top / self.active_experts:g} (cache sizes 1..{top} over "
                f"{self.active_experts} active experts); pick a rho inside it"
            )
        size = np.clip(np.where(np.abs(size - np.round(size)) < 1e-9, np.round(size), size), 1, top)
        low = np.floor(size).astype(np.int64)
        high = np.minimum(low + 1, top)
        frac = size - low
        rate = self.rate
        out = np.where(frac == 0, rate[low - 1], (1 - frac) * rate[low - 1] + frac * rate[high - 1])
        return float(out) if out.ndim == 0 else out

    def confidence_interval(
        self, ci: float = 0.95, num_boot: int = 1000, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Basic bootstrap interval of :attr:`rate` over sequences, float64[C] each.

        Sequences are resampled with replacement (multinomial counts, as the paper's
        ``30_srp_calc.py``); each resample's rate is the mean of its sequences' rates.
        Deterministic for a given ``seed``.

        Notes
        -----
        Liang et al. (2025) report 95% basic bootstrap intervals over 1,000 resamples.
        """
        bootstrap.check_ci(ci, num_boot)
        rates = self.per_sequence_rates()
        counts = bootstrap.resample_counts(len(rates), num_boot, seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates = (counts @ np.nan_to_num(rates)) / max(len(rates), 1)
        replicates[:, ~self.applicable] = np.nan
        if not len(rates):
            replicates[:] = np.nan
        low, high = bootstrap.basic_interval(self.rate, replicates, ci)
        return low, high


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _check_segment(policy: str, segment: object) -> int | None:
    if policy != "sch":
        if segment is not None:
            raise ConfigError(
                f"segment: only policy 'sch' takes a segment length, got segment={segment!r} with "
                f"policy {policy!r}; drop it"
            )
        return None
    if segment is None or isinstance(segment, bool) or not isinstance(segment, (int, np.integer)) or segment < 1:
        raise ConfigError(
            f"segment: policy 'sch' needs its window length in tokens, an integer >= 1 such as 16, got {segment!r}"
        )
    return int(segment)


def hit_counts(
    stream: RequestStream,
    policy: str,
    *,
    max_capacity: int | None = None,
    segment: int | None = None,
    accounting: str = "reference",
    cold_fill: str = "free",
) -> np.ndarray:
    """int64[S, C]: hits per sequence of a cache of every size 1..C on a request stream.

    The array-level core of :func:`hit_curve` (same arguments; ``max_capacity`` defaults to the
    number of keys). -1 marks sizes where pinned accounting does not apply.
    """
    from moesim.kernels import cache_common as codes
    from moesim.kernels.cache_sim import fifo_hit_counts
    from moesim.kernels.cache_stack import lru_hit_counts, stack_hit_counts

    policy = _check_choice("policy", policy, POLICIES)
    segment = _check_segment(policy, segment)
    mode = codes.ACCOUNTING_CODES[_check_choice("accounting", accounting, ACCOUNTING)]
    cold_free = _check_choice("cold_fill", cold_fill, COLD_FILL) == "free"
    capacity = stream.num_keys if max_capacity is None else max_capacity
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise ConfigError(f"max_capacity: expected a number of cache slots >= 1, got {capacity!r}")
    capacity = int(capacity)
    longest = int(stream.requests_per_sequence().max(initial=0))
    if longest > codes.MAX_SEQUENCE_REQUESTS:
        raise ConfigError(
            f"trace: a sequence has {longest} requests, more than the kernels' {codes.MAX_SEQUENCE_REQUESTS}; "
            f"split it into several sequences"
        )
    args = (stream.keys, stream.group_offsets)
    if policy == "lru":
        return lru_hit_counts(*args, stream.seq_group_offsets, stream.num_keys, capacity, mode, cold_free)
    if policy == "fifo":
        return fifo_hit_counts(*args, stream.seq_group_offsets, stream.num_keys, capacity, mode, cold_free)
    return stack_hit_counts(
        *args,
        stream.group_token,
        stream.seq_group_offsets,
        stream.num_keys,
        capacity,
        codes.POLICY_CODES[policy],
        mode,
        cold_free,
        1 if segment is None else segment,
    )


def hit_curve(
    trace: Trace,
    policy: str,
    *,
    level: str = "layer",
    layer: int | None = None,
    segment: int | None = None,
    accounting: str = "reference",
    cold_fill: str = "free",
) -> HitCurve:
    """Hit rate of an expert cache of every size under an eviction policy.

    Parameters
    ----------
    trace : Trace
        Routing trace; every sequence starts with an empty cache.
    policy : {"lru", "lfu", "fifo", "belady", "sch"}
        Eviction policy. LFU counts a key's requests since the start of its sequence (kept across
        evictions), ties to the older last request; Belady evicts the key needed farthest in the
        future; SCH the key with the fewest requests in the next ``segment`` tokens (the current
        one included, served requests excluded), ties to the least recent (spec 3.2).
    level : {"layer", "model"}
        One layer's experts (needs ``layer``), or every MoE layer in one shared cache
        (key = ``layer_index * E + expert``, sizes up to E * L).
    layer : int, optional
        Index into the trace's MoE layers, 0..L-1 (layer level only).
    segment : int, optional
        SCH's window in tokens (>= 1); required for ``"sch"`` and only for it.
    accounting : {"reference", "request", "pinned"}
        ``"reference"`` reproduces the paper's code: requests are judged against the cache at the
        start of their group (a token; at model level all its layers together) while evictions
        happen one request at a time. ``"request"``: the flattened stream, each request judged
        when it is served (what libCacheSim computes). ``"pinned"``: a group (a token's experts at
        one layer) is looked up together and its misses are loaded without evicting experts the
        group needs; sizes below k are not applicable. At model level ``"request"`` and
        ``"pinned"`` go through a token's layers in order (a forward pass).
    cold_fill : {"free", "miss"}
        ``"free"`` (the paper's rule) counts a first request that fills an empty slot as a hit,
        so the rate at C is 1; ``"miss"`` counts every first request as a miss.

    Returns
    -------
    HitCurve

    Notes
    -----
    Reproduces Liang et al., "Not All Models Suit Expert Offloading: On Local Routing Consistency of
    Mixture-of-Expert Models" (arXiv 2505.16056, 2025): SCH (``41_sch_calc.py``) and the LRU, LFU and
    Belady curves (``50_chr_calc.py``) under ``accounting="reference", cold_fill="free"``.
    LRU, LFU, Belady and SCH are priority-stack algorithms (Mattson et al., "Evaluation techniques for
    storage hierarchies", IBM Systems Journal 1970) and are computed for all sizes in one pass;
    Belady's policy is from Belady, IBM Systems Journal 1966. Sequences without requests get no
    weight in :attr:`HitCurve.rate`.
    """
    _check_trace(trace)
    policy = _check_choice("policy", policy, POLICIES)
    segment = _check_segment(policy, segment)
    level = _check_choice("level", level, LEVELS)
    accounting = _check_choice("accounting", accounting, ACCOUNTING)
    cold_fill = _check_choice("cold_fill", cold_fill, COLD_FILL)
    if level == "model" and layer is not None:
        raise ConfigError(f"layer: level 'model' pools every MoE layer, got layer={layer!r}; drop layer")
    if level == "layer" and layer is None:
        raise ConfigError(
            f"layer: level 'layer' needs a layer index in 0..{trace.num_layers - 1}; pass layer=... "
            f"or use level='model'"
        )
    grouping = "token" if accounting == "reference" else "layer"
    stream = RequestStream.from_trace(trace, level=level, layer=layer, grouping=grouping)
    hits = hit_counts(stream, policy, segment=segment, accounting=accounting, cold_fill=cold_fill)
    num_requests = stream.requests_per_sequence()
    active = trace.top_k * (trace.num_layers if level == "model" else 1)
    sizes = np.arange(1, stream.num_keys + 1, dtype=np.int64)
    used = num_requests > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (hits[used] / num_requests[used, None]).mean(axis=0) if used.any() else np.full(len(sizes), np.nan)
    rate = np.where((hits >= 0).all(axis=0), rate, np.nan)
    return HitCurve(
        policy=policy,
        level=level,
        layer=None if layer is None else int(layer),
        segment=None if segment is None else int(segment),
        accounting=accounting,
        cold_fill=cold_fill,
        cache_sizes=_readonly(sizes),
        active_experts=int(active),
        rho=_readonly(sizes / active),
        hits=_readonly(hits),
        num_requests=_readonly(num_requests),
        rate=_readonly(rate),
    )

