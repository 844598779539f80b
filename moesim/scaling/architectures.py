"""Architectures under a joint budget: FLOPs per token, active parameters, total parameters.

:func:`enumerate_architectures` lists the MoE configurations (layers, hidden size, experts,
expert size, top-k, shared experts) of a search space whose three numbers all lie within a
tolerance of the budgets; :func:`run_architectures` simulates a representative of each
(experts, top-k, shared) family on a machine, with synthetic traces fitted to a real trace and
rescaled to the configuration, and ranks them by decode tokens/s when offloaded.

Every configuration is a :class:`~moesim.models.ModelSpec` built from a *template* (a preset that
supplies the vocabulary, attention style, FFN gating, norms and weight formats) and every count
that decides feasibility is the spec's own. The search is vectorised: parameters and FLOPs are
affine in the expert size, so for each (layers, width, E, k, shared) the expert size that meets the
total-parameter budget is solved for, rounded, and the active-parameter and FLOPs budgets checked;
survivors are then rebuilt as specs and checked exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from moesim import fields as F
from moesim.errors import ConfigError
from moesim.models import ModelSpec, get_model
from moesim.scaling import dataset
from moesim.scaling.config import (
    AnalysisFile,
    as_list,
    int_list,
    require,
    take,
    take_ints,
)
from moesim.scaling.runner import SimPoint, run_points
from moesim.scaling.traces import TraceFamily
from moesim.scenario import apply_overrides

ANALYSIS = "architectures"
SCHEMA_VERSION = 1
_SUFFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}


def parse_count(value: object, field: str) -> float:
    """A count such as ``3.3e9``, ``"3.3B"``, ``"3.3G"`` or ``"800M"`` (B = billion) as a float > 0."""
    if isinstance(value, bool):
        F.fail(field, f"expected a count such as 3.3e9 or '3.3B', got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and value.strip() and value.strip()[-1:] in _SUFFIX and value.strip()[:-1]:
        text = value.strip()
        try:
            number = float(text[:-1]) * _SUFFIX[text[-1]]
        except ValueError:
            F.fail(field, f"expected a count such as 3.3e9 or '3.3B', got {value!r}")
    else:
        try:
            number = float(str(value))
        except ValueError:
            F.fail(field, f"expected a count such as 3.3e9 or '3.3B', got {value!r}")
    if not math.isfinite(number) or number <= 0:
        F.fail(field, f"expected a positive count, got {value!r}")
    return number


@dataclass(frozen=True, kw_only=True)
class ArchitectureBudget:
    """The three budgets and how closely a configuration must meet each.

    ``flops_per_token`` counts one decoded token attending to ``context_len`` keys (attention
    scores included); ``active_params`` includes the embedding table (:attr:`ModelSpec.active_params`);
    a configuration passes when each of its numbers is within ``tolerance`` (relative) of its budget.
    """

    flops_per_token: float
    active_params: float
    total_params: float
    context_len: int = 4096
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        for name in ("flops_per_token", "active_params", "total_params"):
            F.set_field(self, name, parse_count(getattr(self, name), f"budget.{name}"))
        F.set_field(self, "context_len", F.check_int("budget.context_len", self.context_len, minimum=0))
        F.set_field(
            self,
            "tolerance",
            F.check_real("budget.tolerance", self.tolerance, minimum=0.0, maximum=1.0, exclusive_minimum=True),
        )
        if self.active_params > self.total_params:
            F.fail("budget.active_params", f"{self.active_params:.4g} exceeds total_params ({self.total_params:.4g})")

    def deviations(self, spec: ModelSpec) -> dict[str, float]:
        """Relative deviation of ``spec`` from each budget (signed)."""
        return {
            "flops_per_token": spec.flops_per_token(self.context_len).total / self.flops_per_token - 1.0,
            "active_params": spec.active_params / self.active_params - 1.0,
            "total_params": spec.total_params / self.total_params - 1.0,
        }

    def satisfied_by(self, spec: ModelSpec) -> bool:
        return all(abs(v) <= self.tolerance for v in self.deviations(spec).values())

    def as_dict(self) -> dict[str, float]:
        return {
            "flops_per_token": self.flops_per_token,
            "active_params": self.active_params,
            "total_params": self.total_params,
            "context_len": self.context_len,
            "tolerance": self.tolerance,
        }


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """The configurations considered.

    Parameters
    ----------
    template : str
        Model preset supplying vocabulary, attention style (head size, query heads per unit of
        width, query heads per KV head), FFN gating, biases, norms and formats.
    num_layers, hidden_sizes : tuple of int
        Depths and widths tried (every layer is a MoE layer).
    num_experts, top_k, num_shared_experts : tuple of int
        Routed experts, experts per token, always-active experts (each the size of a routed one).
    ffn_multiple : int
        Expert intermediate sizes are multiples of this.
    """

    template: str = "qwen3-30b-a3b"
    num_layers: tuple[int, ...] = tuple(range(8, 129, 4))
    hidden_sizes: tuple[int, ...] = tuple(range(1024, 16385, 256))
    num_experts: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    top_k: tuple[int, ...] = (1, 2, 4, 6, 8)
    num_shared_experts: tuple[int, ...] = (0, 1, 2)
    ffn_multiple: int = 64

    def __post_init__(self) -> None:
        get_model(self.template, field="space.template")
        for name in ("num_layers", "hidden_sizes", "num_experts", "top_k"):
            F.set_field(self, name, int_list(f"space.{name}", getattr(self, name)))
        F.set_field(
            self, "num_shared_experts", int_list("space.num_shared_experts", self.num_shared_experts, minimum=0)
        )
        F.set_field(self, "ffn_multiple", F.check_int("space.ffn_multiple", self.ffn_multiple, minimum=1))

    def as_dict(self) -> dict[str, Any]:
        return {name: (list(v) if isinstance(v, tuple) else v) for name, v in self.__dict__.items()}


@dataclass(frozen=True)
class Candidate:
    """A configuration within budget: its spec and relative deviation from each budget."""

    spec: ModelSpec
    deviations: dict[str, float]

    @property
    def distance(self) -> float:
        """The largest absolute relative deviation."""
        return max(abs(v) for v in self.deviations.values())

    @property
    def family(self) -> tuple[int, int, int]:
        return self.spec.num_experts, self.spec.top_k, self.spec.num_shared_experts

    def labels(self, budget: ArchitectureBudget) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": spec.name,
            "num_layers": spec.num_layers,
            "hidden_size": spec.hidden_size,
            "num_heads": spec.num_heads,
            "num_kv_heads": spec.effective_num_kv_heads,
            "num_experts": spec.num_experts,
            "top_k": spec.top_k,
            "num_shared_experts": spec.num_shared_experts,
            "expert_ffn_size": spec.expert_ffn_size,
            "total_params": spec.total_params,
            "active_params": spec.active_params,
            "flops_per_token": spec.flops_per_token(budget.context_len).total,
            "expert_bytes": spec.expert_bytes(),
            "total_bytes": spec.total_bytes(),
            "non_expert_bytes": spec.non_expert_bytes(),
            "dev_flops_per_token": self.deviations["flops_per_token"],
            "dev_active_params": self.deviations["active_params"],
            "dev_total_params": self.deviations["total_params"],
            "budget_distance": self.distance,
        }


def _shape(template: ModelSpec, hidden: int) -> tuple[int, int, int] | None:
    """(heads, kv_heads, head_dim) at width ``hidden`` in the template's proportions, or None."""
    head_dim = template.effective_head_dim
    heads_exact = template.num_heads * hidden / template.hidden_size
    heads = round(heads_exact)
    group = template.num_heads // template.effective_num_kv_heads
    if heads < 1 or abs(heads - heads_exact) > 1e-9 or heads % group:
        return None
    return heads, heads // group, head_dim


def _spec(
    template: ModelSpec,
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    experts: int,
    top_k: int,
    shared: int,
    ffn: int,
) -> ModelSpec:
    return template.with_overrides(
        name=f"L{layers}-h{hidden}-E{experts}-k{top_k}-s{shared}-f{ffn}",
        num_layers=layers,
        hidden_size=hidden,
        moe_layers=tuple(range(layers)),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        num_experts=experts,
        top_k=top_k,
        expert_ffn_size=ffn,
        num_shared_experts=shared,
        shared_expert_ffn_size=ffn if shared else 0,
        shared_expert_gate=False,
        dense_ffn_size=0,
        sliding_layers=(),
        sliding_window=None,
        mamba_layers=(),
        router_num_groups=1,
        router_topk_groups=1,
        hf_repo="",
        published_total_params=None,
        published_active_params=None,
        notes="",
    )


def enumerate_architectures(budget: ArchitectureBudget, space: SearchSpace | None = None) -> list[Candidate]:
    """Every configuration of ``space`` within ``budget``, closest first.

    Returns
    -------
    list of Candidate
        Sorted by largest relative deviation, then layers, width, E, k, shared (deterministic).
        Each was rebuilt as a :class:`ModelSpec` and checked with the spec's own counts.

    Notes
    -----
    For fixed (L, h, E, k, s) the total parameters are affine in the expert intermediate size f
    (``B + L E r + L (E p(f) + s m(f))`` with routers r and expert parameters p, shared m), so f
    is solved from the total budget and rounded to ``ffn_multiple``; the active parameters
    (``k`` routed instead of ``E``) and FLOPs (2 per matrix parameter used, plus attention
    scores over ``context_len`` keys) then decide. Coefficients come from specs built at two
    expert sizes, never from a separate formula.
    """
    space = space or SearchSpace()
    template = get_model(space.template, field="space.template")
    context = budget.context_len
    combos = np.array(
        [(e, k, s) for e in space.num_experts for k in space.top_k for s in space.num_shared_experts if k <= e],
        dtype=np.int64,
    ).reshape(-1, 3)
    if not len(combos):
        F.fail("space.top_k", "no top_k is <= any num_experts; widen the search space")
    E, K, S = (combos[:, i].astype(np.float64) for i in range(3))
    # The coarse check uses a wider tolerance so that rounding f cannot drop a configuration the
    # exact check would keep.
    slack = budget.tolerance + 0.01
    found: list[tuple[int, int, int, int, int, int, int, int, int]] = []
    for hidden in space.hidden_sizes:
        shape = _shape(template, hidden)
        if shape is None:
            continue
        heads, kv_heads, head_dim = shape
        for layers in space.num_layers:
            # Specs at f = 1 and f = 2 with one routed expert, top-1, no shared: everything is affine in f.
            one = _spec(template, layers, hidden, heads, kv_heads, head_dim, 1, 1, 0, 1)
            two = _spec(template, layers, hidden, heads, kv_heads, head_dim, 1, 1, 0, 2)
            p1 = two.expert_params - one.expert_params  # expert params per unit of f
            p0 = one.expert_params - p1
            m1 = (two.expert_flops_per_token - one.expert_flops_per_token) / 2.0  # matrix params per unit of f
            router = one.param_counts.routers / layers  # one expert's router row (+ bias)
            base = one.total_params - layers * (router + one.expert_params)
            flops1 = one.flops_per_token(context).total
            base_flops = flops1 - 2.0 * layers * hidden - layers * one.expert_flops_per_token
            router_flops = 2.0 * hidden
            f_real = (budget.total_params - base - layers * E * (router + p0)) / (layers * (E * p1 + S * m1))
            f = np.maximum(np.round(f_real / space.ffn_multiple), 1) * space.ffn_multiple
            total = base + layers * E * (router + p0 + p1 * f) + layers * S * m1 * f
            active = total - layers * (E - K) * (p0 + p1 * f)
            flops = base_flops + layers * E * router_flops + layers * (K + S) * 2.0 * m1 * f
            ok = (
                (np.abs(total / budget.total_params - 1) <= slack)
                & (np.abs(active / budget.active_params - 1) <= slack)
                & (np.abs(flops / budget.flops_per_token - 1) <= slack)
                & (f_real > 0)
            )
            for i in np.flatnonzero(ok):
                found.append((layers, hidden, heads, kv_heads, head_dim, int(E[i]), int(K[i]), int(S[i]), int(f[i])))
    candidates = []
    for layers, hidden, heads, kv_heads, head_dim, experts, top_k, shared, ffn in found:
        try:
            spec = _spec(template, layers, hidden, heads, kv_heads, head_dim, experts, top_k, shared, ffn)
        except ConfigError:
            continue  # e.g. a head layout the template's attention cannot take
        deviations = budget.deviations(spec)
        if all(abs(v) <= budget.tolerance for v in deviations.values()):
            candidates.append(Candidate(spec=spec, deviations=deviations))
    candidates.sort(key=lambda c: (c.distance, c.spec.num_layers, c.spec.hidden_size, *c.family))
    return candidates


def representatives(candidates: Sequence[Candidate], limit: int) -> list[Candidate]:
    """The closest configuration of each (E, k, shared) family, closest families first, at most ``limit``."""
    chosen: dict[tuple[int, int, int], Candidate] = {}
    for candidate in candidates:
        chosen.setdefault(candidate.family, candidate)
    return list(chosen.values())[:limit]


CONFIG_HEADERS = ["rank", "config", "L", "h", "E", "k", "shared", "ffn"]


def config_cells(row: dict[str, Any]) -> list[Any]:
    """The identifying cells of a result row, under :data:`CONFIG_HEADERS` (CLI and report tables)."""
    return [
        row["rank"],
        row["name"],
        row["num_layers"],
        row["hidden_size"],
        row["num_experts"],
        row["top_k"],
        row["num_shared_experts"],
        row["expert_ffn_size"],
    ]


LABELS = {
    "rank": pa.int64(),
    "simulated": pa.bool_(),
    "name": pa.string(),
    "num_layers": pa.int64(),
    "hidden_size": pa.int64(),
    "num_heads": pa.int64(),
    "num_kv_heads": pa.int64(),
    "num_experts": pa.int64(),
    "top_k": pa.int64(),
    "num_shared_experts": pa.int64(),
    "expert_ffn_size": pa.int64(),
    "total_params": pa.int64(),
    "active_params": pa.int64(),
    "flops_per_token": pa.float64(),
    "expert_bytes": pa.int64(),
    "total_bytes": pa.int64(),
    "non_expert_bytes": pa.int64(),
    "dev_flops_per_token": pa.float64(),
    "dev_active_params": pa.float64(),
    "dev_total_params": pa.float64(),
    "budget_distance": pa.float64(),
    "trace_source": pa.string(),
}
SCHEMA = dataset.schema(LABELS)
BUDGET_KEYS = ("flops_per_token", "active_params", "total_params", "context_len", "tolerance")
SPACE_KEYS = ("template", "num_layers", "hidden_sizes", "num_experts", "top_k", "num_shared_experts", "ffn_multiple")
RUN_KEYS = ("max_simulations", "sequences", "tokens_per_sequence", "prompt_tokens", "fit_tokens", "workers")
KEYS = BUDGET_KEYS + SPACE_KEYS + RUN_KEYS


@dataclass(frozen=True, kw_only=True)
class ArchitecturesConfig:
    """The ``[scaling]`` table of an architectures analysis: budget, search space, how many
    family representatives to simulate and the synthetic workload (``sequences`` of
    ``tokens_per_sequence`` decode tokens after ``prompt_tokens``)."""

    budget: ArchitectureBudget
    space: SearchSpace
    max_simulations: int = 12
    sequences: int = 2
    tokens_per_sequence: int = 128
    prompt_tokens: int = 512
    fit_tokens: int = 16384
    workers: int = 1

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> ArchitecturesConfig:
        take(table, "scaling", KEYS)
        require(
            table,
            ("flops_per_token", "active_params", "total_params"),
            "give the three budgets (e.g. --flops-per-token 9.3e9 --active 3.3e9 --total 30.5e9)",
        )
        budget = ArchitectureBudget(**{k: table[k] for k in BUDGET_KEYS if k in table})
        space_args = {k: table[k] for k in SPACE_KEYS if k in table}
        for k in ("num_layers", "hidden_sizes", "num_experts", "top_k", "num_shared_experts"):
            if k in space_args:
                space_args[k] = tuple(as_list(f"scaling.{k}", space_args[k]))
        out: dict[str, Any] = {"budget": budget, "space": SearchSpace(**space_args)}
        out.update(
            take_ints(
                table,
                {
                    "max_simulations": 0,
                    "sequences": 1,
                    "tokens_per_sequence": 1,
                    "prompt_tokens": 0,
                    "fit_tokens": 2,
                    "workers": 1,
                },
            )
        )
        return cls(**out)


@dataclass(frozen=True)
class ArchitecturesResult:
    """All configurations within budget (one row each; ``simulated`` marks the family
    representatives that were simulated, ``rank`` their order by decode tokens/s)."""

    table: pa.Table
    num_candidates: int
    family: dict[str, Any]
    settings: dict[str, Any]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def ranked(self) -> list[dict[str, Any]]:
        rows = [r for r in self.table.to_pylist() if r["simulated"]]
        return sorted(rows, key=lambda r: (r["rank"] is None, r["rank"] or 0))

    def document(self) -> dict[str, Any]:
        return {
            "analysis": ANALYSIS,
            "schema_version": SCHEMA_VERSION,
            "settings": self.settings,
            "num_candidates": self.num_candidates,
            "trace_family": self.family,
            "notes": list(self.notes),
        }

    def write(self, out_dir) -> None:
        dataset.write_dataset(out_dir, self.table, self.document())


def run_architectures(
    analysis: AnalysisFile,
    *,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> ArchitecturesResult:
    """Enumerate the configurations within budget and simulate one per (E, k, shared) family.

    Each simulated configuration replays a synthetic trace from the routing process fitted to the
    scenario's real trace, rescaled to its E, k and layers (the rule is in the result), on the
    scenario's machine with ``cache.capacity`` as the scenario says (``"auto"``: what GPU memory
    leaves after the non-expert weights, KV cache, staging and reserve). Configurations that do not
    fit the machine are ranked last with the reason.
    """
    config = ArchitecturesConfig.from_table(dict(analysis.table))
    scenario = analysis.scenario
    candidates = enumerate_architectures(config.budget, config.space)
    chosen = representatives(candidates, config.max_simulations)
    notes = []
    if not candidates:
        notes.append(
            "no configuration of the search space meets the three budgets within the tolerance; widen "
            "the tolerance or the space (layers, widths, experts)"
        )
    family = TraceFamily(analysis.trace_path, fit_tokens=config.fit_tokens, seed=scenario.seed)
    points = []
    for candidate in chosen:
        spec = candidate.spec
        recipe = family.synthetic(
            spec.num_experts,
            spec.top_k,
            spec.num_moe_layers,
            num_sequences=config.sequences,
            tokens_per_sequence=config.tokens_per_sequence,
            prompt_tokens=config.prompt_tokens,
        )
        labels = {**candidate.labels(config.budget), "simulated": True, "trace_source": recipe.kind}
        points.append(
            SimPoint(scenario=apply_overrides(analysis.base, [("model", spec.to_dict())]), trace=recipe, labels=labels)
        )
    rows = run_points(points, workers=workers or config.workers, executor=executor, address=address, progress=progress)
    order = sorted(
        range(len(rows)), key=lambda i: (rows[i]["status"] != "ok", -(rows[i]["decode_tokens_per_s"] or 0.0), i)
    )
    for rank, i in enumerate(order, 1):
        rows[i]["rank"] = rank
    simulated = {candidate.spec.name for candidate in chosen}
    rows += [
        {**c.labels(config.budget), "simulated": False, "status": "not simulated", "reason": "", "trace_source": None}
        for c in candidates
        if c.spec.name not in simulated
    ]
    table = dataset.rows_table(rows, SCHEMA, ANALYSIS, SCHEMA_VERSION)
    settings = {
        "budget": config.budget.as_dict(),
        "space": config.space.as_dict(),
        "max_simulations": config.max_simulations,
        "sequences": config.sequences,
        "tokens_per_sequence": config.tokens_per_sequence,
        "prompt_tokens": config.prompt_tokens,
        "scenario": scenario.name,
        "hardware": scenario.hardware.name,
        "cache_capacity": scenario.cache.capacity,
        "eviction": scenario.cache.eviction,
        "batch_size": scenario.workload.batch_size,
        "selection": "one configuration per (experts, top-k, shared) family: the one closest to the budgets "
        "(smallest largest relative deviation); families in that order",
    }
    return ArchitecturesResult(
        table=table, num_candidates=len(candidates), family=family.describe(), settings=settings, notes=tuple(notes)
    )
