"""Serving cost of MoE models with 4..128 experts at equal predicted quality.

The claim (Yun et al. 2024, "Toward Inference-optimal Mixture-of-Expert Large Language Models",
arXiv:2404.02852): at equal quality, MoEs with few experts serve most cheaply, because more experts
buy quality with parameters that must be held somewhere. Here the "somewhere" is explicit: one GPU
whose memory is split between the resident weights, an expert cache and the KV cache of the batch
(:func:`moesim.sim.memory.plan_memory`), with the rest of the experts offloaded to CPU memory and
fetched on a miss, or (``resident``) every expert on the GPU when it fits.

Quality proxy: a routed-LM scaling law in the number of experts (:class:`QualityLaw`, the form of
Clark et al. 2022 that Yun et al. build on). For each E the analysis solves the law for the
parameters N(E) a token must use to reach the reference model's predicted loss, builds that model
from a template (same depth, width and attention; the expert size chosen so that the active
parameters equal N(E)), finds the batch that fits each memory split, simulates decode throughput
with synthetic routing fitted to a real trace, and prices it: cost per million tokens =
GPU price per hour / 3600 / (tokens/s) x 1e6.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from moesim import fields as F
from moesim.errors import ConfigError
from moesim.models import ModelSpec, get_model
from moesim.scaling import dataset
from moesim.scaling.config import AnalysisFile, int_list, take, take_ints
from moesim.scaling.runner import SimPoint, run_points
from moesim.scaling.traces import TraceFamily
from moesim.scenario import apply_overrides

ANALYSIS = "serving"
SCHEMA_VERSION = 1
MODES = ("offload", "resident")


@dataclass(frozen=True, kw_only=True)
class QualityLaw:
    """``log10 L(N, E) = a log10 N + b log10 Ê + c log10 N log10 Ê + d``, the routed-LM scaling law
    of Clark et al. 2022 (eq. 1), with the saturating expert count
    ``1/Ê = 1/(E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max``.

    N is the parameters a token uses (here: active parameters without the input embedding), E the
    number of experts. Only equal-loss contours are used, never the loss itself.

    The default coefficients are labelled ``clark2022-sbase``: the S-BASE fit of Clark et al.
    (2022, table 1) as entered here, the law Yun et al. (2024) extend. They are inputs: check them
    against the paper, or give your own in the scenario's ``[scaling.quality]`` table, before
    quoting a cost ranking.

    Notes
    -----
    A. Clark et al., "Unified Scaling Laws for Routed Language Models", ICML 2022
    (arXiv:2202.01169). L. Yun et al., "Toward Inference-optimal Mixture-of-Expert Large Language
    Models", arXiv:2404.02852 (2024).
    """

    label: str = "clark2022-sbase"
    a: float = -0.082
    b: float = -0.108
    c: float = 0.009
    d: float = 1.104
    e_start: float = 1.847
    e_max: float = 314.478

    def __post_init__(self) -> None:
        F.check_str("scaling.quality.label", self.label)
        for name in ("a", "b", "c", "d"):
            F.set_field(self, name, F.check_real(f"scaling.quality.{name}", getattr(self, name)))
        F.set_field(
            self, "e_start", F.check_real("scaling.quality.e_start", self.e_start, minimum=1.0, exclusive_minimum=True)
        )
        F.set_field(
            self,
            "e_max",
            F.check_real("scaling.quality.e_max", self.e_max, minimum=self.e_start, exclusive_minimum=True),
        )

    @property
    def formula(self) -> str:
        return (
            "log10 L = a log10 N + b log10 E^ + c log10 N log10 E^ + d; "
            "1/E^ = 1/(E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max"
        )

    def saturated_experts(self, num_experts: float) -> float:
        """Ê for ``num_experts`` (Clark et al.'s saturating transform: E_start at E = 1, E_max as E grows)."""
        offset = 1.0 / (1.0 / self.e_start - 1.0 / self.e_max)
        return 1.0 / (1.0 / (num_experts - 1.0 + offset) + 1.0 / self.e_max)

    def log_loss(self, params: float, num_experts: float) -> float:
        """``log10 L(N, E)``."""
        x, n = math.log10(self.saturated_experts(num_experts)), math.log10(params)
        return self.a * n + self.b * x + self.c * n * x + self.d

    def params_for(self, log_loss: float, num_experts: float) -> float:
        """N with ``log10 L(N, E) = log_loss`` (the law is linear in log10 N at fixed E)."""
        x = math.log10(self.saturated_experts(num_experts))
        slope = self.a + self.c * x
        if slope >= 0:
            raise ConfigError(
                f"scaling.quality: at E={num_experts} the law does not fall with N (a + c log10 E^ = "
                f"{slope:.4g} >= 0), so no model size reaches the target; check the coefficients"
            )
        return 10.0 ** ((log_loss - self.d - self.b * x) / slope)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "d": self.d,
            "e_start": self.e_start,
            "e_max": self.e_max,
            "formula": self.formula,
        }


def quality_params(spec: ModelSpec) -> int:
    """The N of the quality law for ``spec``: active parameters without the input embedding."""
    return spec.active_params_without_embedding


def _variant(template: ModelSpec, num_layers: int, num_experts: int, top_k: int, ffn: int) -> ModelSpec:
    return template.with_overrides(
        name=f"{template.name}-E{num_experts}",
        num_layers=num_layers,
        moe_layers=tuple(range(num_layers)),
        num_experts=num_experts,
        top_k=top_k,
        expert_ffn_size=ffn,
        router_num_groups=1,
        router_topk_groups=1,
        sliding_layers=tuple(i for i in template.sliding_layers if i < num_layers),
        published_total_params=None,
        published_active_params=None,
    )


def equal_quality_family(
    template: ModelSpec, experts: Iterable[int], law: QualityLaw, *, ffn_multiple: int = 64
) -> list[tuple[ModelSpec, float]]:
    """Models shaped like ``template`` with each number of experts, at ``template``'s predicted loss.

    For each E the law gives the parameters per token N(E) that reach the template's predicted
    loss; the model keeps the template's width, attention and top-k (at most E), and its depth and
    expert intermediate size (a multiple of ``ffn_multiple``) are chosen so that its active
    parameters without embedding are nearest N(E) with the expert-size-to-width ratio nearest the
    template's. Returns ``(spec, N(E))`` pairs.

    Raises
    ------
    ConfigError
        When the template has dense (non-MoE) layers, or no depth reaches N(E).
    """
    if template.num_moe_layers != template.num_layers:
        F.fail(
            "scaling.template",
            f"{template.name} has dense layers; use a template with a MoE block in every "
            f"layer (e.g. mixtral-8x7b, llama-moe-v2-3.8b)",
        )
    reference = law.log_loss(quality_params(template), template.num_experts)
    ratio = template.expert_ffn_size / template.hidden_size
    family = []
    for num_experts in experts:
        top_k = min(template.top_k, num_experts)
        target = law.params_for(reference, num_experts)
        best: tuple[float, int, int] | None = None
        for layers in range(1, 2 * template.num_layers + 1):
            lo = quality_params(_variant(template, layers, num_experts, top_k, ffn_multiple))
            hi = quality_params(_variant(template, layers, num_experts, top_k, 2 * ffn_multiple))
            units = round((target - lo) / (hi - lo)) + 1  # active parameters are affine in the expert size
            if units < 1:
                continue
            ffn = units * ffn_multiple
            score = abs(math.log(ffn / template.hidden_size / ratio))
            key = (score, abs(layers - template.num_layers), layers)
            if best is None or key < (best[0], abs(best[1] - template.num_layers), best[1]):
                best = (score, layers, ffn)
        if best is None:
            F.fail(
                "scaling.experts",
                f"E={num_experts} needs N={target:.4g} parameters per token, less than one "
                f"layer of {template.name} with the smallest experts; use a smaller template",
            )
        family.append((_variant(template, best[1], num_experts, top_k, best[2]), target))
    return family


LABELS = {
    "mode": pa.string(),  # "offload" | "resident"
    "num_experts": pa.int64(),
    "top_k": pa.int64(),
    "expert_ffn_size": pa.int64(),
    "quality_params_target": pa.float64(),
    "active_params": pa.int64(),
    "active_params_without_embedding": pa.int64(),
    "total_params": pa.int64(),
    "total_bytes": pa.int64(),
    "expert_bytes": pa.int64(),
    "batch_size": pa.int64(),
    "max_batch_size": pa.int64(),
    "chosen": pa.bool_(),
    "gpu_price_per_hour": pa.float64(),
    "min_gpus_resident": pa.int64(),
    "trace_source": pa.string(),
}
DERIVED = {
    "cache_bytes": pa.int64(),
    "cost_per_million_tokens": pa.float64(),
}
SCHEMA = dataset.schema(LABELS, extra=DERIVED)
KEYS = (
    "template",
    "experts",
    "batch_sizes",
    "max_batch",
    "gpu_price_per_hour",
    "prompt_tokens",
    "decode_steps",
    "ffn_multiple",
    "quality",
    "fit_tokens",
    "workers",
)


@dataclass(frozen=True, kw_only=True)
class ServingConfig:
    """The ``[scaling]`` table of a serving-cost analysis.

    ``template`` model preset; ``experts`` the family (default 4..128); ``batch_sizes`` tried in each
    memory split (plus the largest that fits, up to ``max_batch``); ``gpu_price_per_hour`` (any
    currency, an input); ``prompt_tokens`` of context before decoding ``decode_steps`` steps;
    ``quality`` the law's coefficients.
    """

    template: str = "llama-moe-v2-3.8b"
    experts: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    max_batch: int = 256
    gpu_price_per_hour: float = 2.0
    prompt_tokens: int = 512
    decode_steps: int = 32
    ffn_multiple: int = 64
    quality: QualityLaw = field(default_factory=QualityLaw)
    fit_tokens: int = 16384
    workers: int = 1

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> ServingConfig:
        take(table, "scaling", KEYS)
        out: dict[str, Any] = {}
        if "template" in table:
            out["template"] = get_model(table["template"], field="scaling.template").name
        if "experts" in table:
            out["experts"] = int_list("scaling.experts", table["experts"])
        if "batch_sizes" in table:
            out["batch_sizes"] = int_list("scaling.batch_sizes", table["batch_sizes"])
        out.update(
            take_ints(
                table,
                {
                    "max_batch": 1,
                    "prompt_tokens": 0,
                    "decode_steps": 1,
                    "ffn_multiple": 1,
                    "fit_tokens": 2,
                    "workers": 1,
                },
            )
        )
        if "gpu_price_per_hour" in table:
            out["gpu_price_per_hour"] = F.check_real(
                "scaling.gpu_price_per_hour", table["gpu_price_per_hour"], minimum=0.0, exclusive_minimum=True
            )
        if "quality" in table:
            quality = table["quality"]
            if not isinstance(quality, dict):
                F.fail("scaling.quality", f"expected a table of law coefficients, got {quality!r}")
            known = ("label", "a", "b", "c", "d", "e_start", "e_max")
            take(dict(quality), "scaling.quality", known)
            out["quality"] = QualityLaw(**quality)
        return cls(**out)


def max_batch_size(spec: ModelSpec, scenario, *, mode: str, context_len: int, limit: int) -> int:
    """The largest batch (<= ``limit``) whose memory plan fits, 0 if none does.

    ``offload`` needs room for at least ``top_k`` cached experts; ``resident`` for all of them.
    Uses :func:`moesim.sim.memory.plan_memory`, the simulator's own planner.
    """
    from moesim.sim.memory import plan_memory

    def fits(batch: int) -> bool:
        try:
            plan_memory(
                spec,
                scenario.hardware,
                capacity="auto" if mode == "offload" else spec.num_experts * spec.num_moe_layers,
                layout="pool",
                reserve_bytes=scenario.cache.reserve_bytes,
                batch_size=batch,
                max_context=context_len,
                kv_format=scenario.workload.kv_format,
                host_capacity=scenario.offload.host_capacity,
                host_reserve_bytes=scenario.offload.host_reserve_bytes,
                has_ssd=scenario.hardware.ssd is not None,
            )
        except ConfigError:
            return False
        return True

    if not fits(1):
        return 0
    low, high = 1, 2
    while high <= limit and fits(high):
        low, high = high, 2 * high
    high = min(high, limit + 1)
    while high - low > 1:  # fits(low) and not fits(high) (or high = limit + 1)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


@dataclass(frozen=True)
class ServingResult:
    """Rows (one per model, mode and batch) with the cheapest batch of each (model, mode) marked
    ``chosen``, the family, the law and notes."""

    table: pa.Table
    law: dict[str, Any]
    family: dict[str, Any]
    settings: dict[str, Any]
    notes: tuple[str, ...] = ()

    def chosen(self) -> list[dict[str, Any]]:
        return [r for r in self.table.to_pylist() if r["chosen"]]

    def document(self) -> dict[str, Any]:
        best = sorted(
            (r for r in self.chosen() if r["cost_per_million_tokens"] is not None),
            key=lambda r: r["cost_per_million_tokens"],
        )
        return {
            "analysis": ANALYSIS,
            "schema_version": SCHEMA_VERSION,
            "settings": self.settings,
            "quality_law": self.law,
            "trace_family": self.family,
            "notes": list(self.notes),
            "cheapest": [
                {
                    k: r[k]
                    for k in ("mode", "num_experts", "batch_size", "decode_tokens_per_s", "cost_per_million_tokens")
                }
                for r in best
            ],
        }

    def write(self, out_dir) -> None:
        dataset.write_dataset(out_dir, self.table, self.document())


def run_serving(
    analysis: AnalysisFile,
    *,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> ServingResult:
    """Run a serving-cost analysis from a loaded scaling scenario (see :class:`ServingConfig`).

    Every (model, mode) is simulated at each configured batch size that fits and at the largest
    that fits; the cheapest per token is marked ``chosen``. ``resident`` rows for a model whose
    weights exceed the GPU are infeasible, with ``min_gpus_resident`` the number of such GPUs its
    weights alone need (multi-GPU serving is not simulated).
    """
    config = ServingConfig.from_table(dict(analysis.table))
    scenario = analysis.scenario
    template = get_model(config.template)
    family_specs = equal_quality_family(template, config.experts, config.quality, ffn_multiple=config.ffn_multiple)
    traces = TraceFamily(analysis.trace_path, fit_tokens=config.fit_tokens, seed=scenario.seed)
    context_len = config.prompt_tokens + config.decode_steps
    gpu_bytes = scenario.hardware.gpu.hbm_bytes
    points, notes = [], []
    for spec, target in family_specs:
        min_gpus = math.ceil(spec.total_bytes() / max(gpu_bytes - scenario.cache.reserve_bytes, 1))
        for mode in MODES:
            limit = max_batch_size(spec, scenario, mode=mode, context_len=context_len, limit=config.max_batch)
            batches = sorted({b for b in config.batch_sizes if b <= limit} | ({limit} if limit else set()))
            if not batches:
                batches = [1]  # simulate anyway: the row records why it does not fit
                if mode == "resident":
                    notes.append(
                        f"E={spec.num_experts}: weights {spec.total_bytes() / 2**30:.1f} GiB do not fit one "
                        f"{scenario.hardware.gpu.name} with the KV cache; resident serving needs >= {min_gpus}"
                    )
            for batch in batches:
                recipe = traces.synthetic(
                    spec.num_experts,
                    spec.top_k,
                    spec.num_moe_layers,
                    num_sequences=batch,
                    tokens_per_sequence=config.decode_steps,
                    prompt_tokens=config.prompt_tokens,
                )
                capacity = "auto" if mode == "offload" else spec.num_experts * spec.num_moe_layers
                raw = apply_overrides(
                    analysis.base,
                    [
                        ("model", spec.to_dict()),
                        ("cache.capacity", capacity),
                        ("cache.layout", "pool"),
                        # Resident means every expert is on the GPU before the first token (preloading the
                        # trace's experts into a cache that holds all of them); offloaded caches start
                        # empty, so short runs include their cold start.
                        ("cache.preload", "popular" if mode == "resident" else "none"),
                        ("workload.batch_size", batch),
                        ("workload.prefill", False),
                        ("workload.max_steps", config.decode_steps),
                    ],
                )
                labels = {
                    "mode": mode,
                    "num_experts": spec.num_experts,
                    "top_k": spec.top_k,
                    "expert_ffn_size": spec.expert_ffn_size,
                    "quality_params_target": float(target),
                    "active_params": spec.active_params,
                    "active_params_without_embedding": spec.active_params_without_embedding,
                    "total_params": spec.total_params,
                    "total_bytes": spec.total_bytes(),
                    "expert_bytes": spec.expert_bytes(),
                    "batch_size": batch,
                    "max_batch_size": limit,
                    "gpu_price_per_hour": config.gpu_price_per_hour,
                    "min_gpus_resident": min_gpus,
                    "trace_source": recipe.kind,
                }
                points.append(SimPoint(scenario=raw, trace=recipe, labels=labels))
    rows = run_points(points, workers=workers or config.workers, executor=executor, address=address, progress=progress)
    for row in rows:
        tokens = row["decode_tokens_per_s"]
        row["cost_per_million_tokens"] = config.gpu_price_per_hour / 3600.0 / tokens * 1e6 if tokens else None
        slots, size = row["mem_cache_slots"], row["mem_expert_bytes"]
        row["cache_bytes"] = None if slots is None else slots * size
        row["chosen"] = False
    for key in {(r["num_experts"], r["mode"]) for r in rows}:
        group = [r for r in rows if (r["num_experts"], r["mode"]) == key and r["cost_per_million_tokens"] is not None]
        if group:
            min(group, key=lambda r: (r["cost_per_million_tokens"], r["batch_size"]))["chosen"] = True
    table = dataset.rows_table(rows, SCHEMA, ANALYSIS, SCHEMA_VERSION)
    settings = {
        "template": template.name,
        "experts": list(config.experts),
        "batch_sizes": list(config.batch_sizes),
        "max_batch": config.max_batch,
        "gpu_price_per_hour": config.gpu_price_per_hour,
        "prompt_tokens": config.prompt_tokens,
        "decode_steps": config.decode_steps,
        "scenario": scenario.name,
        "hardware": scenario.hardware.name,
        "eviction": scenario.cache.eviction,
        "quality_proxy": f"{config.quality.label}: equal predicted loss to {template.name} "
        f"(N = {quality_params(template):.4g}, E = {template.num_experts}); the coefficients are "
        f"inputs, not measurements of these models",
        "cost_formula": "gpu_price_per_hour / 3600 / decode_tokens_per_s * 1e6",
        "cache_start": "resident: every expert on the GPU before the first token; offload: the expert cache "
        "starts empty, so its cold misses are part of the measured decode steps",
    }
    return ServingResult(
        table=table, law=config.quality.as_dict(), family=traces.describe(), settings=settings, notes=tuple(notes)
    )
