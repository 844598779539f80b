"""Architecture budget sheets: the three numbers a MoE design is chosen under, and its bytes.

A budget sheet restates what :class:`~moesim.models.ModelSpec` already computes (it is the single
source of truth for parameters, FLOPs and bytes) in the form the scaling analyses compare designs
by: total parameters (memory), active parameters (bandwidth per token) and FLOPs per token at a
context length (compute), plus the bytes of one expert and of the whole model per weight format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from moesim import fields as F
from moesim.models import ModelSpec, get_format

DEFAULT_FORMATS = ("bf16", "fp8", "int4", "mxfp4", "hqq-2bit")


@dataclass(frozen=True, kw_only=True)
class BudgetSheet:
    """The budgets of one architecture (see :func:`budget_sheet`).

    Attributes
    ----------
    model : str
        The spec's name.
    context_len : int
        Keys each decoded token attends to in ``flops_per_token``.
    total_params, active_params, active_params_without_embedding : int
        :attr:`ModelSpec.total_params`, :attr:`ModelSpec.active_params` (embedding included, the
        Mixtral/Qwen convention) and without the input embedding (the GPT-OSS/DeepSeek convention).
    flops_per_token : float
        FLOPs to decode one token at ``context_len`` (attention scores included).
    flops_breakdown : dict
        :meth:`ModelSpec.flops_per_token` by component.
    num_layers, num_moe_layers, hidden_size, num_experts, top_k, num_shared_experts : int
    expert_ffn_size, expert_params : int
        Intermediate size and parameters of one routed expert.
    expert_bytes, total_bytes : dict of str -> int
        One routed expert, and the whole model with its routed experts, in each format (the rest of
        the model in its own ``weight_format``).
    non_expert_bytes : int
        Everything that is not a routed expert, in the spec's formats (what stays on the GPU).
    kv_bytes_per_token : int
        bf16 KV-cache bytes one token adds (no window cap).
    published_total_params, published_active_params : float or None
        What the model's authors publish, when known.
    """

    model: str
    context_len: int
    total_params: int
    active_params: int
    active_params_without_embedding: int
    flops_per_token: float
    flops_breakdown: dict[str, float]
    num_layers: int
    num_moe_layers: int
    hidden_size: int
    num_experts: int
    top_k: int
    num_shared_experts: int
    expert_ffn_size: int
    expert_params: int
    expert_bytes: dict[str, int] = field(default_factory=dict)
    total_bytes: dict[str, int] = field(default_factory=dict)
    non_expert_bytes: int = 0
    kv_bytes_per_token: int = 0
    published_total_params: float | None = None
    published_active_params: float | None = None

    @property
    def total_vs_published(self) -> float | None:
        """``total_params / published_total_params - 1`` (None when nothing is published)."""
        if not self.published_total_params:
            return None
        return self.total_params / self.published_total_params - 1.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping of every attribute, plus ``total_vs_published``."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["total_vs_published"] = self.total_vs_published
        return out

    def rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs for a two-column table."""

        def count(value: float) -> str:
            return f"{value / 1e9:.3f} B" if value >= 1e8 else f"{value / 1e6:.2f} M"

        rows = [
            ("total parameters", count(self.total_params)),
            ("active parameters", count(self.active_params)),
            ("active without embedding", count(self.active_params_without_embedding)),
            (f"FLOPs/token @ {self.context_len} ctx", f"{self.flops_per_token / 1e9:.3f} GFLOP"),
            ("  of which attention scores", f"{self.flops_breakdown['attention_scores'] / 1e9:.3f} GFLOP"),
            ("layers (MoE)", f"{self.num_layers} ({self.num_moe_layers})"),
            ("experts / top-k / shared", f"{self.num_experts} / {self.top_k} / {self.num_shared_experts}"),
            ("expert size (ffn, params)", f"{self.expert_ffn_size}, {count(self.expert_params)}"),
        ]
        if self.published_total_params:
            rows.append(
                ("published total", f"{count(self.published_total_params)} ({100 * self.total_vs_published:+.2f}%)")
            )
        if self.published_active_params:
            rows.append(("published active", count(self.published_active_params)))
        for fmt, nbytes in self.expert_bytes.items():
            rows.append(
                (f"{fmt}: expert / model", f"{nbytes / 2**20:.2f} MiB / {self.total_bytes[fmt] / 2**30:.2f} GiB")
            )
        rows.append(("non-expert bytes", f"{self.non_expert_bytes / 2**30:.2f} GiB"))
        rows.append(("KV bytes per token (bf16)", f"{self.kv_bytes_per_token / 2**10:.1f} KiB"))
        return rows


def budget_sheet(spec: ModelSpec, *, context_len: int = 4096, formats: Sequence[str] = DEFAULT_FORMATS) -> BudgetSheet:
    """Total and active parameters, FLOPs per token and bytes per weight format of ``spec``.

    Parameters
    ----------
    spec : ModelSpec
        Any model spec (a preset from :func:`moesim.models.get_model` or a variant).
    context_len : int
        Keys each decoded token attends to (its own included) when counting attention FLOPs.
    formats : sequence of str
        Weight formats (:func:`moesim.models.list_formats`) to give expert and model bytes in; the
        spec's own expert format is always added.

    Returns
    -------
    BudgetSheet

    Notes
    -----
    Every number is the spec's own (:attr:`ModelSpec.total_params`,
    :meth:`ModelSpec.flops_per_token`, :meth:`ModelSpec.expert_bytes`); nothing is re-derived here,
    so the sheet cannot drift from what the simulator charges. FLOPs count a multiply-add as 2
    (Kaplan et al. 2020, table 1).
    """
    if not isinstance(spec, ModelSpec):
        F.fail("model", f"expected a ModelSpec (e.g. moesim.get_model('mixtral-8x7b')), got {type(spec).__name__}")
    context_len = F.check_int("context_len", context_len, minimum=0)
    names = list(dict.fromkeys([spec.default_expert_format, *(get_format(f, field="formats").name for f in formats)]))
    flops = spec.flops_per_token(context_len)
    return BudgetSheet(
        model=spec.name,
        context_len=context_len,
        total_params=spec.total_params,
        active_params=spec.active_params,
        active_params_without_embedding=spec.active_params_without_embedding,
        flops_per_token=flops.total,
        flops_breakdown=flops.as_dict(),
        num_layers=spec.num_layers,
        num_moe_layers=spec.num_moe_layers,
        hidden_size=spec.hidden_size,
        num_experts=spec.num_experts,
        top_k=spec.top_k,
        num_shared_experts=spec.num_shared_experts,
        expert_ffn_size=spec.expert_ffn_size,
        expert_params=spec.expert_params,
        expert_bytes={name: spec.expert_bytes(name) for name in names},
        total_bytes={name: spec.total_bytes(expert_fmt=name) for name in names},
        non_expert_bytes=spec.non_expert_bytes(),
        kv_bytes_per_token=spec.kv_bytes_per_token(),
        published_total_params=spec.published_total_params,
        published_active_params=spec.published_active_params,
    )
