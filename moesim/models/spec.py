"""The MoE architecture description (:class:`ModelSpec`) and everything derived from it.

See :mod:`moesim.models` for the contract the simulator relies on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from moesim import fields as F
from moesim.models.formats import WeightFormat, get_format, kv_bytes_per_element

_WHERE = "model"
ROUTER_SCORING = ("softmax", "sigmoid", "sparsemixer")
NORMS = ("rmsnorm", "layernorm")
# Selective-scan work per (d_inner x d_state) element per token: exp(dt*A) (2), dt*B*x (2),
# h = dA*h + dBx (2), y += C*h (2). Gu & Dao 2023, Mamba (arXiv:2312.00752), Algorithm 2.
MAMBA_SCAN_FLOPS_PER_STATE = 8


@dataclass(frozen=True)
class _Weights:
    """Quantisable matrices ``(out, in)`` plus small tensors kept unquantised (norms, biases, routers)."""

    matrices: tuple[tuple[int, int], ...] = ()
    vectors: int = 0

    def __add__(self, other: _Weights) -> _Weights:
        return _Weights(self.matrices + other.matrices, self.vectors + other.vectors)

    def times(self, count: int) -> _Weights:
        return _Weights(self.matrices * count, self.vectors * count)

    @property
    def matrix_params(self) -> int:
        return sum(rows * cols for rows, cols in self.matrices)

    @property
    def params(self) -> int:
        return self.matrix_params + self.vectors

    def nbytes(self, fmt: WeightFormat) -> int:
        return sum(fmt.matrix_bytes(rows, cols) for rows, cols in self.matrices) + self.vectors * fmt.vector_bytes


@dataclass(frozen=True)
class LayerSpec:
    """One decoder layer: its token mixer and its feed-forward block.

    Attributes
    ----------
    index : int
        Model-layer index.
    mixer : str
        ``"attention"`` (GQA/MHA or MLA) or ``"mamba"``.
    window : int or None
        Sliding-window length of an attention layer (keys it attends to at most), None for full.
    ffn : str
        ``"moe"`` or ``"dense"``.
    moe_index : int or None
        Position of the layer in ``ModelSpec.moe_layers`` (the trace-layer index), None if dense.
    """

    index: int
    mixer: str
    window: int | None
    ffn: str
    moe_index: int | None


@dataclass(frozen=True)
class ComponentCounts:
    """Parameters or bytes of a model, by component (ints)."""

    embedding: int
    lm_head: int
    attention: int
    mamba: int
    norms: int
    routers: int
    dense_ffn: int
    shared_experts: int
    routed_experts: int

    @property
    def non_expert(self) -> int:
        """Everything except the routed experts (what stays resident on the GPU)."""
        return self.total - self.routed_experts

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in dataclasses.fields(self))

    def as_dict(self) -> dict[str, int]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(non_expert=self.non_expert, total=self.total)
        return out


@dataclass(frozen=True)
class FlopsBreakdown:
    """FLOPs (multiply and add counted separately) to decode one token, by component.

    ``routed_experts`` is ``top_k`` experts in every MoE layer; ``attention_scores`` is the
    ``QK^T`` and ``AV`` work at the context length the breakdown was made for.
    """

    context_len: int
    attention_projections: float
    attention_scores: float
    mamba: float
    dense_ffn: float
    shared_experts: float
    routed_experts: float
    router: float
    lm_head: float

    @property
    def attention(self) -> float:
        return self.attention_projections + self.attention_scores

    @property
    def total(self) -> float:
        return (
            self.attention
            + self.mamba
            + self.dense_ffn
            + self.shared_experts
            + self.routed_experts
            + self.router
            + self.lm_head
        )

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(attention=self.attention, total=self.total)
        return out


@dataclass(frozen=True)
class _Segment:
    """Non-routed work between two MoE layers' experts (or after the last one: the tail)."""

    layers: tuple[int, ...]
    flops_per_token: float  # projections, FFNs, routers, mamba: independent of context
    weights: _Weights  # transformer-block weights (weight_format)
    windows: tuple[tuple[int | None, float, int], ...]  # (window, score FLOPs/key, KV elements/key)
    state_elements: int  # mamba conv + SSM state per sequence


@dataclass(frozen=True)
class _CostTable:
    """Per-segment coefficients of the step-cost formulas (segment ``num_moe_layers`` is the tail)."""

    windows: tuple[int | None, ...]
    flops_per_token: np.ndarray  # float [L+1]
    score_per_key: np.ndarray  # float [W, L+1]
    kv_per_key: np.ndarray  # int [W, L+1] cached elements per attended key
    state_elements: np.ndarray  # int [L+1] Mamba state elements per sequence
    weight_bytes: np.ndarray  # int [L+1]
    head_weight_bytes: int
    head_flops_per_logit: float
    embedding_row_bytes: int
    kv_element_bytes: int


@dataclass(frozen=True)
class StepCosts:
    """Non-routed costs of ``S`` steps (:meth:`ModelSpec.step_costs`); read-only arrays.

    Attributes
    ----------
    dense_flops, dense_bytes : ``[S, num_moe_layers]`` float64 / int64
        :meth:`ModelSpec.dense_layer_flops` / :meth:`ModelSpec.dense_layer_bytes` of every step and MoE layer.
    head_flops, head_bytes : ``[S]`` float64 / int64
        :meth:`ModelSpec.head_flops` / :meth:`ModelSpec.head_bytes` of every step.
    """

    dense_flops: np.ndarray
    dense_bytes: np.ndarray
    head_flops: np.ndarray
    head_bytes: np.ndarray


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A decoder-only Mixture-of-Experts language model, as the simulator needs it.

    Frozen and keyword-only; every field is validated on construction (:class:`ConfigError` with a
    dotted path such as ``model.top_k``). Vary it with :meth:`with_overrides`
    (or ``dataclasses.replace``), build it from TOML/JSON with :meth:`from_dict`.

    Parameters
    ----------
    name : str
        Preset name or any label (``"mixtral-8x7b"``).
    num_layers, hidden_size, vocab_size : int
        Decoder layers, model width, vocabulary.
    moe_layers : tuple of int
        Model-layer indices whose FFN is a routed MoE block (strictly increasing); the others have
        a dense FFN of ``dense_ffn_size``. See :func:`moe_layer_indices` for the usual patterns.
    num_experts, top_k : int
        Routed experts per MoE layer and experts chosen per token.
    expert_ffn_size : int
        Intermediate size of one routed expert.
    num_shared_experts, shared_expert_ffn_size : int
        Always-active experts per MoE layer and the intermediate size of *each*.
    shared_expert_gate : bool
        A sigmoid gate ``hidden -> 1`` scales the shared experts' output (Qwen-MoE).
    dense_ffn_size : int
        Intermediate size of the FFN of non-MoE layers (required when there are any).
    gated_ffn : bool
        Three matrices per FFN (gate, up, down; SwiGLU) rather than two (up, down).
    expert_bias, router_bias : bool
        Biases on the expert matrices (GPT-OSS) / on the router logits or its score correction.
    activation : str
        FFN activation, informative (``"silu"``, ``"gelu"``, ``"relu"``).
    router_scoring : str
        ``"softmax"``, ``"sigmoid"`` (DeepSeek-V3) or ``"sparsemixer"`` (Phi-3.5-MoE, GRIN).
    router_norm_topk : bool
        The k selected weights are renormalised to sum to 1.
    router_num_groups, router_topk_groups : int
        Group-limited routing (DeepSeek-V3: 8 groups, experts picked from the best 4).
    num_heads : int
        Query heads.
    num_kv_heads : int or None
        Key/value heads (GQA); None means ``num_heads`` (MHA). Ignored for MLA.
    head_dim : int or None
        Per-head dimension; None means ``hidden_size // num_heads``. Ignored for MLA.
    qkv_bias, out_bias : bool
        Biases on the q/k/v projections and on the output projection.
    q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim : int or None
        Multi-head latent attention (DeepSeek-V2/V3). Set ``kv_lora_rank`` and the three head
        dims to use MLA; ``q_lora_rank`` None means queries are projected directly.
    sliding_window : int or None
        Window length of the layers in ``sliding_layers``.
    sliding_layers : tuple of int
        Attention layers that use the sliding window (GPT-OSS: every other layer).
    mamba_layers : tuple of int
        Layers whose token mixer is a Mamba block instead of attention (Jamba).
    mamba_d_state, mamba_d_conv, mamba_expand, mamba_dt_rank : int
        Mamba block sizes (``d_inner = mamba_expand * hidden_size``).
    tie_word_embeddings, lm_head_bias : bool
        LM head shares the embedding matrix; LM head has a bias.
    norm : str
        ``"rmsnorm"`` (weight only) or ``"layernorm"`` (weight and bias).
    weight_format : str
        Default format of non-expert matrices (attention, dense and shared FFNs).
    expert_format : str or None
        Default format of routed experts; None means ``weight_format``. GPT-OSS ships MXFP4 experts.
    embedding_format : str
        Format of the embedding table and LM head (quantisers leave them at 16 bits).
    architecture, hf_repo, notes : str
        HF ``model_type``, the repository the numbers come from, free text.
    published_total_params, published_active_params : float or None
        Counts the model's authors publish, for checks and display.
    """

    name: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    moe_layers: tuple[int, ...]
    num_experts: int
    top_k: int
    expert_ffn_size: int
    num_shared_experts: int = 0
    shared_expert_ffn_size: int = 0
    shared_expert_gate: bool = False
    dense_ffn_size: int = 0
    gated_ffn: bool = True
    expert_bias: bool = False
    activation: str = "silu"
    router_scoring: str = "softmax"
    router_norm_topk: bool = False
    router_num_groups: int = 1
    router_topk_groups: int = 1
    router_bias: bool = False
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    qkv_bias: bool = False
    out_bias: bool = False
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] = ()
    mamba_layers: tuple[int, ...] = ()
    mamba_d_state: int = 0
    mamba_d_conv: int = 0
    mamba_expand: int = 0
    mamba_dt_rank: int = 0
    tie_word_embeddings: bool = False
    lm_head_bias: bool = False
    norm: str = "rmsnorm"
    weight_format: str = "bf16"
    expert_format: str | None = None
    embedding_format: str = "bf16"
    architecture: str = ""
    hf_repo: str = ""
    published_total_params: float | None = None
    published_active_params: float | None = None
    notes: str = ""
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        w = _WHERE
        F.check_str(f"{w}.name", self.name)
        num_layers = F.check_int(f"{w}.num_layers", self.num_layers, minimum=1)
        for name in ("hidden_size", "vocab_size", "num_experts", "expert_ffn_size", "num_heads"):
            F.set_field(self, name, F.check_int(f"{w}.{name}", getattr(self, name), minimum=1))
        F.set_field(self, "num_layers", num_layers)
        moe = F.check_layer_indices(f"{w}.moe_layers", self.moe_layers, num_layers, allow_empty=False)
        F.set_field(self, "moe_layers", moe)
        num_experts = self.num_experts
        F.set_field(
            self,
            "top_k",
            F.check_int(
                f"{w}.top_k", self.top_k, minimum=1, maximum=num_experts, expected=f"1..num_experts ({num_experts})"
            ),
        )
        for name in ("num_shared_experts", "shared_expert_ffn_size", "dense_ffn_size"):
            F.set_field(self, name, F.check_int(f"{w}.{name}", getattr(self, name), minimum=0))
        if self.num_shared_experts and not self.shared_expert_ffn_size:
            F.fail(
                f"{w}.shared_expert_ffn_size",
                f"expected >= 1 with num_shared_experts = {self.num_shared_experts}, got 0",
            )
        dense = [i for i in range(num_layers) if i not in set(moe)]
        if dense and not self.dense_ffn_size:
            F.fail(
                f"{w}.dense_ffn_size",
                f"layers {_short_list(dense)} are not in moe_layers, so they need a dense FFN size "
                f">= 1, got 0; set dense_ffn_size or list them in moe_layers",
            )
        for name in (
            "shared_expert_gate",
            "gated_ffn",
            "expert_bias",
            "router_norm_topk",
            "router_bias",
            "qkv_bias",
            "out_bias",
            "tie_word_embeddings",
            "lm_head_bias",
        ):
            F.check_bool(f"{w}.{name}", getattr(self, name))
        F.check_str(f"{w}.activation", self.activation)
        F.check_str(f"{w}.router_scoring", self.router_scoring, choices=ROUTER_SCORING)
        F.check_str(f"{w}.norm", self.norm, choices=NORMS)
        self._check_router_groups()
        self._check_attention()
        self._check_mixers()
        F.set_field(self, "weight_format", get_format(self.weight_format, field=f"{w}.weight_format").name)
        F.set_field(self, "embedding_format", get_format(self.embedding_format, field=f"{w}.embedding_format").name)
        if self.expert_format is not None:
            F.set_field(self, "expert_format", get_format(self.expert_format, field=f"{w}.expert_format").name)
        for name in ("architecture", "hf_repo", "notes"):
            F.check_str(f"{w}.{name}", getattr(self, name), allow_empty=True)
        for name in ("published_total_params", "published_active_params"):
            if getattr(self, name) is not None:
                F.set_field(
                    self, name, F.check_real(f"{w}.{name}", getattr(self, name), minimum=0, exclusive_minimum=True)
                )

    def _check_router_groups(self) -> None:
        w = _WHERE
        groups = F.check_int(f"{w}.router_num_groups", self.router_num_groups, minimum=1, maximum=self.num_experts)
        if self.num_experts % groups:
            F.fail(f"{w}.router_num_groups", f"expected a divisor of num_experts ({self.num_experts}), got {groups}")
        topk_groups = F.check_int(
            f"{w}.router_topk_groups",
            self.router_topk_groups,
            minimum=1,
            maximum=groups,
            expected=f"1..router_num_groups ({groups})",
        )
        reachable = topk_groups * (self.num_experts // groups)
        if self.top_k > reachable:
            F.fail(
                f"{w}.top_k",
                f"expected <= router_topk_groups x experts per group ({reachable}), "
                f"got {self.top_k}; raise router_topk_groups",
            )
        F.set_field(self, "router_num_groups", groups)
        F.set_field(self, "router_topk_groups", topk_groups)

    def _check_attention(self) -> None:
        w = _WHERE
        mla_fields = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        given = [name for name in mla_fields if getattr(self, name) is not None]
        if given and len(given) != len(mla_fields):
            missing = [name for name in mla_fields if name not in given]
            F.fail(
                f"{w}.{missing[0]}",
                f"multi-head latent attention needs all of {', '.join(mla_fields)}; "
                f"{', '.join(given)} given, {', '.join(missing)} missing",
            )
        for name in (*mla_fields, "q_lora_rank"):
            F.set_field(self, name, F.check_optional_int(f"{w}.{name}", getattr(self, name)))
        if self.q_lora_rank is not None and not given:
            F.fail(
                f"{w}.q_lora_rank",
                "only used with multi-head latent attention; set kv_lora_rank, "
                "qk_nope_head_dim, qk_rope_head_dim and v_head_dim, or drop it",
            )
        if not given:
            kv = F.check_optional_int(f"{w}.num_kv_heads", self.num_kv_heads)
            if kv is not None and self.num_heads % kv:
                F.fail(f"{w}.num_kv_heads", f"expected a divisor of num_heads ({self.num_heads}), got {kv}")
            F.set_field(self, "num_kv_heads", kv)
            head_dim = F.check_optional_int(f"{w}.head_dim", self.head_dim)
            if head_dim is None and self.hidden_size % self.num_heads:
                F.fail(
                    f"{w}.head_dim",
                    f"hidden_size ({self.hidden_size}) is not a multiple of num_heads "
                    f"({self.num_heads}); give head_dim explicitly",
                )
            F.set_field(self, "head_dim", head_dim)

    def _check_mixers(self) -> None:
        w = _WHERE
        mamba = F.check_layer_indices(f"{w}.mamba_layers", self.mamba_layers, self.num_layers)
        F.set_field(self, "mamba_layers", mamba)
        if len(mamba) == self.num_layers:
            F.fail(f"{w}.mamba_layers", "every layer is a Mamba layer; keep at least one attention layer")
        for name in ("mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_dt_rank"):
            value = F.check_int(f"{w}.{name}", getattr(self, name), minimum=0)
            if mamba and not value:
                F.fail(f"{w}.{name}", f"expected >= 1 because mamba_layers is set, got {value}")
            F.set_field(self, name, value)
        window = F.check_optional_int(f"{w}.sliding_window", self.sliding_window)
        F.set_field(self, "sliding_window", window)
        sliding = F.check_layer_indices(f"{w}.sliding_layers", self.sliding_layers, self.num_layers)
        if sliding and window is None:
            F.fail(f"{w}.sliding_window", "expected a window length >= 1 because sliding_layers is set, got None")
        clash = sorted(set(sliding) & set(mamba))
        if clash:
            F.fail(
                f"{w}.sliding_layers",
                f"layer {clash[0]} is also a Mamba layer; sliding windows apply to attention layers only",
            )
        F.set_field(self, "sliding_layers", sliding)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = _WHERE) -> ModelSpec:
        """Build from a mapping (TOML table, JSON object); unknown keys and bad values name ``where.field``."""
        return F.build(cls, data, where, default_prefix=_WHERE)

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-friendly values (inverse of :meth:`from_dict`)."""
        return {f.name: F.to_plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}

    def with_overrides(self, **fields: Any) -> ModelSpec:
        """A validated copy with ``fields`` replaced (``ConfigError`` for unknown fields or bad values)."""
        return F.replace_checked(self, _WHERE, _WHERE, fields)

    def with_granularity(self, factor: int) -> ModelSpec:
        """Fine-grained expert segmentation: each routed expert split into ``factor`` smaller ones.

        ``num_experts`` and ``top_k`` are multiplied and ``expert_ffn_size`` divided by ``factor``,
        so total and active parameters stay the same (bar the router, which grows ``factor`` times).

        Notes
        -----
        Dai et al. 2024, DeepSeekMoE (arXiv:2401.06066); Krajewski et al. 2024, "Scaling Laws for
        Fine-Grained Mixture of Experts" (arXiv:2402.07871), granularity G.
        """
        factor = F.check_int("granularity", factor, minimum=1)
        if self.expert_ffn_size % factor:
            F.fail(
                "granularity",
                f"expert_ffn_size ({self.expert_ffn_size}) is not divisible by {factor}; pick a divisor of it",
            )
        # Router groups keep their number (each now holds factor times the experts), so group-limited
        # routing still reaches top_k * factor experts.
        return self.with_overrides(
            num_experts=self.num_experts * factor,
            top_k=self.top_k * factor,
            expert_ffn_size=self.expert_ffn_size // factor,
        )

    # ------------------------------------------------------------------ structure
    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def effective_num_kv_heads(self) -> int:
        """KV heads actually used (``num_heads`` for MHA and for MLA, whose cache is a shared latent)."""
        if self.uses_mla:
            return self.num_heads
        return self.num_kv_heads if self.num_kv_heads is not None else self.num_heads

    @property
    def effective_head_dim(self) -> int:
        """Query/key head dimension (``qk_nope + qk_rope`` for MLA)."""
        if self.uses_mla:
            return int(self.qk_nope_head_dim) + int(self.qk_rope_head_dim)  # type: ignore[arg-type]
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layers)

    @property
    def default_expert_format(self) -> str:
        return self.expert_format or self.weight_format

    @cached_property
    def layers(self) -> tuple[LayerSpec, ...]:
        """Per-layer structure, in execution order."""
        moe_index = {layer: j for j, layer in enumerate(self.moe_layers)}
        mamba, sliding = set(self.mamba_layers), set(self.sliding_layers)
        return tuple(
            LayerSpec(
                index=i,
                mixer="mamba" if i in mamba else "attention",
                window=self.sliding_window if i in sliding else None,
                ffn="moe" if i in moe_index else "dense",
                moe_index=moe_index.get(i),
            )
            for i in range(self.num_layers)
        )

    # ------------------------------------------------------------------ weights per component
    def _ffn(self, ffn_size: int, bias: bool) -> _Weights:
        h = self.hidden_size
        if self.gated_ffn:
            matrices = ((ffn_size, h), (ffn_size, h), (h, ffn_size))
            vectors = 2 * ffn_size + h if bias else 0
        else:
            matrices = ((ffn_size, h), (h, ffn_size))
            vectors = ffn_size + h if bias else 0
        return _Weights(matrices, vectors)

    @cached_property
    def _expert(self) -> _Weights:
        return self._ffn(self.expert_ffn_size, self.expert_bias)

    @cached_property
    def _shared(self) -> _Weights:
        gate = _Weights((), self.hidden_size if self.shared_expert_gate and self.num_shared_experts else 0)
        return self._ffn(self.shared_expert_ffn_size, False).times(self.num_shared_experts) + gate

    @cached_property
    def _dense_ffn(self) -> _Weights:
        return self._ffn(self.dense_ffn_size, False)

    @cached_property
    def _router(self) -> _Weights:
        # Routers stay at 16 bits in every quantised checkpoint (GPTQ/AWQ/HQQ "gate", GPT-OSS, DeepSeek FP8).
        return _Weights((), self.num_experts * self.hidden_size + (self.num_experts if self.router_bias else 0))

    @cached_property
    def _attention(self) -> _Weights:
        h, heads = self.hidden_size, self.num_heads
        if self.uses_mla:
            nope, rope = int(self.qk_nope_head_dim), int(self.qk_rope_head_dim)  # type: ignore[arg-type]
            kv_rank, v_dim = int(self.kv_lora_rank), int(self.v_head_dim)  # type: ignore[arg-type]
            if self.q_lora_rank is None:
                q = _Weights(((heads * (nope + rope), h),))
            else:
                q = _Weights(((self.q_lora_rank, h), (heads * (nope + rope), self.q_lora_rank)), self.q_lora_rank)
            kv = _Weights(((kv_rank + rope, h), (heads * (nope + v_dim), kv_rank)), kv_rank)
            out = _Weights(((h, heads * v_dim),), h if self.out_bias else 0)
            return q + kv + out
        kv_heads, head_dim = self.effective_num_kv_heads, self.effective_head_dim
        q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
        bias = (q_dim + 2 * kv_dim if self.qkv_bias else 0) + (h if self.out_bias else 0)
        return _Weights(((q_dim, h), (kv_dim, h), (kv_dim, h), (h, q_dim)), bias)

    @property
    def _mamba_d_inner(self) -> int:
        return self.mamba_expand * self.hidden_size

    @cached_property
    def _mamba(self) -> _Weights:
        h, d_inner = self.hidden_size, self._mamba_d_inner
        d_state, dt_rank = self.mamba_d_state, self.mamba_dt_rank
        matrices = ((2 * d_inner, h), (dt_rank + 2 * d_state, d_inner), (d_inner, dt_rank), (h, d_inner))
        # depthwise conv weight + bias, dt_proj bias, A_log, D (Jamba's dt/B/C norms, 288 params, omitted)
        vectors = d_inner * self.mamba_d_conv + d_inner + d_inner + d_inner * d_state + d_inner
        return _Weights(matrices, vectors)

    @property
    def _norm_params(self) -> int:
        return self.hidden_size * (2 if self.norm == "layernorm" else 1)

    def _mixer(self, layer: LayerSpec) -> _Weights:
        return self._mamba if layer.mixer == "mamba" else self._attention

    def _layer_weights(self, layer: LayerSpec) -> _Weights:
        """Everything of a layer except its routed experts."""
        ffn = self._router + self._shared if layer.ffn == "moe" else self._dense_ffn
        return self._mixer(layer) + ffn + _Weights((), 2 * self._norm_params)

    @cached_property
    def _head(self) -> _Weights:
        """Final norm and LM head (the LM head is the embedding matrix when tied)."""
        lm_head = () if self.tie_word_embeddings else ((self.vocab_size, self.hidden_size),)
        bias = self.vocab_size if self.lm_head_bias else 0
        return _Weights(lm_head, bias + self._norm_params)

    # ------------------------------------------------------------------ parameters
    @cached_property
    def param_counts(self) -> ComponentCounts:
        """Parameters by component."""
        layers = self.layers
        num_attn = sum(layer.mixer == "attention" for layer in layers)
        num_mamba = self.num_layers - num_attn
        num_moe, num_dense = self.num_moe_layers, self.num_layers - self.num_moe_layers
        return ComponentCounts(
            embedding=self.vocab_size * self.hidden_size,
            lm_head=(0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size)
            + (self.vocab_size if self.lm_head_bias else 0),
            attention=num_attn * self._attention.params,
            mamba=num_mamba * self._mamba.params if num_mamba else 0,
            norms=(2 * self.num_layers + 1) * self._norm_params,
            routers=num_moe * self._router.params,
            dense_ffn=num_dense * self._dense_ffn.params,
            shared_experts=num_moe * self._shared.params,
            routed_experts=num_moe * self.num_experts * self._expert.params,
        )

    @property
    def total_params(self) -> int:
        """All parameters (the embedding counted once when tied)."""
        return self.param_counts.total

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert (matrices and any biases)."""
        return self._expert.params

    @property
    def shared_expert_params(self) -> int:
        """Parameters of all shared experts of one MoE layer (with their gate)."""
        return self._shared.params

    @property
    def active_params(self) -> int:
        """Parameters a token uses: all but the ``num_experts - top_k`` unused experts per MoE layer.

        The embedding table is included, the convention of the Mixtral (12.9B) and Qwen model cards;
        :attr:`active_params_without_embedding` is the one OpenAI (GPT-OSS) and DeepSeek use.
        """
        return self.total_params - self.num_moe_layers * (self.num_experts - self.top_k) * self.expert_params

    @property
    def active_params_without_embedding(self) -> int:
        """:attr:`active_params` minus the input embedding table (kept when tied: it is the LM head)."""
        return self.active_params - (0 if self.tie_word_embeddings else self.param_counts.embedding)

    # ------------------------------------------------------------------ bytes
    def _fmt(self, fmt: str | WeightFormat | None, default: str, field: str) -> WeightFormat:
        return get_format(default if fmt is None else fmt, field=field)

    def expert_bytes(self, fmt: str | WeightFormat | None = None) -> int:
        """Bytes of one routed expert in ``fmt`` (default :attr:`default_expert_format`), scales included."""
        fmt = self._fmt(fmt, self.default_expert_format, "expert_format")
        return self._expert.nbytes(fmt)

    def shared_expert_bytes(self, fmt: str | WeightFormat | None = None) -> int:
        """Bytes of all shared experts of one MoE layer (and their gate) in ``fmt`` (default weight_format)."""
        return self._shared.nbytes(self._fmt(fmt, self.weight_format, "weight_format"))

    def byte_counts(
        self,
        fmt: str | WeightFormat | None = None,
        expert_fmt: str | WeightFormat | None = None,
        embedding_fmt: str | WeightFormat | None = None,
    ) -> ComponentCounts:
        """Bytes by component: non-expert matrices in ``fmt``, routed experts in ``expert_fmt``,
        embedding and LM head in ``embedding_fmt`` (defaults: the spec's formats).

        Norms, biases and routers are stored at ``fmt.vector_bytes`` (2, or 4 for fp32).
        """
        key = ("bytes", _fmt_key(fmt), _fmt_key(expert_fmt), _fmt_key(embedding_fmt))
        if key not in self._memo:
            dense = self._fmt(fmt, self.weight_format, "weight_format")
            expert = self._fmt(expert_fmt, self.default_expert_format, "expert_format")
            emb = self._fmt(embedding_fmt, self.embedding_format, "embedding_format")
            layers = self.layers
            num_attn = sum(layer.mixer == "attention" for layer in layers)
            num_mamba = self.num_layers - num_attn
            num_moe, num_dense = self.num_moe_layers, self.num_layers - self.num_moe_layers
            lm_head = _Weights(
                () if self.tie_word_embeddings else ((self.vocab_size, self.hidden_size),),
                self.vocab_size if self.lm_head_bias else 0,
            )
            self._memo[key] = ComponentCounts(
                embedding=emb.matrix_bytes(self.vocab_size, self.hidden_size),
                lm_head=lm_head.nbytes(emb),
                attention=num_attn * self._attention.nbytes(dense),
                mamba=num_mamba * self._mamba.nbytes(dense) if num_mamba else 0,
                norms=(2 * self.num_layers + 1) * self._norm_params * dense.vector_bytes,
                routers=num_moe * self._router.nbytes(dense),
                dense_ffn=num_dense * self._dense_ffn.nbytes(dense),
                shared_experts=num_moe * self._shared.nbytes(dense),
                routed_experts=num_moe * self.num_experts * self._expert.nbytes(expert),
            )
        return self._memo[key]

    def non_expert_bytes(self, fmt: str | WeightFormat | None = None) -> int:
        """Bytes of everything that is not a routed expert: embeddings, attention, norms, routers,
        dense FFNs, shared experts, LM head (matrices in ``fmt``, embeddings in ``embedding_format``)."""
        return self.byte_counts(fmt).non_expert

    def total_bytes(self, fmt: str | WeightFormat | None = None, expert_fmt: str | WeightFormat | None = None) -> int:
        """Bytes of the whole model (routed experts in ``expert_fmt``, the rest as :meth:`non_expert_bytes`)."""
        return self.byte_counts(fmt, expert_fmt).total

    def layer_weight_bytes(self, layer: int, fmt: str | WeightFormat | None = None) -> int:
        """Bytes of model layer ``layer`` without its routed experts (mixer, norms, router, shared or dense FFN)."""
        spec = self._layer(layer)
        return self._layer_weights(spec).nbytes(self._fmt(fmt, self.weight_format, "weight_format"))

    # ------------------------------------------------------------------ KV cache
    def _kv_elements_per_token(self, layer: LayerSpec) -> int:
        if layer.mixer == "mamba":
            return 0
        if self.uses_mla:
            return int(self.kv_lora_rank) + int(self.qk_rope_head_dim)  # type: ignore[arg-type]
        return 2 * self.effective_num_kv_heads * self.effective_head_dim

    @property
    def _mamba_state_elements(self) -> int:
        return self._mamba_d_inner * (self.mamba_d_conv + self.mamba_d_state)

    def kv_bytes_per_token(self, kv_format: str = "bf16") -> int:
        """KV-cache bytes one token adds across all layers (no window cap).

        MLA caches the compressed latent and the shared RoPE key (``kv_lora_rank + qk_rope_head_dim``
        per layer, DeepSeek-V2 sec. 2.1.2); GQA caches ``2 * num_kv_heads * head_dim``.
        """
        nbytes = kv_bytes_per_element(kv_format)
        return nbytes * sum(self._kv_elements_per_token(layer) for layer in self.layers)

    def kv_bytes(self, context_len: int, kv_format: str = "bf16") -> int:
        """Cache bytes of one sequence holding ``context_len`` tokens: KV of every attention layer
        (sliding-window layers keep at most ``sliding_window`` tokens) plus Mamba state, if any."""
        context_len = F.check_int("context_len", context_len, minimum=0)
        nbytes = kv_bytes_per_element(kv_format)
        total = 0
        for layer in self.layers:
            kept = context_len if layer.window is None else min(context_len, layer.window)
            total += kept * self._kv_elements_per_token(layer)
        if context_len:
            total += len(self.mamba_layers) * self._mamba_state_elements
        return total * nbytes

    @property
    def state_bytes_per_sequence(self) -> int:
        """Mamba conv + SSM state of one sequence in bf16 (0 without Mamba layers)."""
        return 2 * len(self.mamba_layers) * self._mamba_state_elements

    # ------------------------------------------------------------------ FLOPs
    @property
    def expert_flops_per_token(self) -> float:
        """FLOPs of one routed expert for one token: 2 x its matrix parameters (2*3*hidden*ffn gated)."""
        return 2.0 * self._expert.matrix_params

    def _mixer_flops(self, layer: LayerSpec) -> float:
        if layer.mixer == "mamba":
            d_inner = self._mamba_d_inner
            return (
                2.0 * self._mamba.matrix_params
                + 2.0 * d_inner * self.mamba_d_conv
                + MAMBA_SCAN_FLOPS_PER_STATE * d_inner * self.mamba_d_state
            )
        return 2.0 * self._attention.matrix_params

    def _score_flops_per_key(self, layer: LayerSpec) -> float:
        if layer.mixer == "mamba":
            return 0.0
        if self.uses_mla:
            # Absorbed MLA decode (DeepSeek-V2 sec. 2.1.3): scores over kv_lora + rope dims, values
            # over the kv_lora latent; the absorbed W_UK / W_UV products are the kv_b projection.
            rank, rope = int(self.kv_lora_rank), int(self.qk_rope_head_dim)  # type: ignore[arg-type]
            return 2.0 * self.num_heads * (2 * rank + rope)
        return 4.0 * self.num_heads * self.effective_head_dim

    def _ffn_flops(self, layer: LayerSpec) -> tuple[float, float, float]:
        """(router, shared experts, dense FFN) FLOPs per token of a layer."""
        if layer.ffn == "moe":
            return 2.0 * self.num_experts * self.hidden_size, 2.0 * self._shared.matrix_params, 0.0
        return 0.0, 0.0, 2.0 * self._dense_ffn.matrix_params

    @property
    def lm_head_flops_per_token(self) -> float:
        return 2.0 * self.vocab_size * self.hidden_size

    def flops_per_token(self, context_len: int = 0) -> FlopsBreakdown:
        """FLOPs to decode one token that attends to ``context_len`` keys (its own included).

        Matmuls count 2 FLOPs per multiply-accumulate; norms, activations and softmax are ignored
        (< 0.1 % of the total). MLA uses the weight-absorbed decode form.

        Notes
        -----
        Kaplan et al. 2020 (arXiv:2001.08361) table 1 for the ``2N + 2 n_layer n_ctx d_attn`` count.
        """
        context_len = F.check_int("context_len", context_len, minimum=0)
        attn_proj = scores = mamba = dense = shared = router = 0.0
        for layer in self.layers:
            if layer.mixer == "mamba":
                mamba += self._mixer_flops(layer)
            else:
                attn_proj += self._mixer_flops(layer)
                keys = context_len if layer.window is None else min(context_len, layer.window)
                scores += keys * self._score_flops_per_key(layer)
            r, s, d = self._ffn_flops(layer)
            router, shared, dense = router + r, shared + s, dense + d
        return FlopsBreakdown(
            context_len=context_len,
            attention_projections=attn_proj,
            attention_scores=scores,
            mamba=mamba,
            dense_ffn=dense,
            shared_experts=shared,
            routed_experts=self.num_moe_layers * self.top_k * self.expert_flops_per_token,
            router=router,
            lm_head=self.lm_head_flops_per_token,
        )

    # ------------------------------------------------------------------ per-step costs (simulator contract)
    def _layer(self, layer: int) -> LayerSpec:
        index = F.check_int(
            "layer",
            layer,
            minimum=0,
            maximum=self.num_layers - 1,
            expected=f"a model layer index in 0..{self.num_layers - 1}",
        )
        return self.layers[index]

    def _segment_of(self, layers: Sequence[LayerSpec]) -> _Segment:
        flops = 0.0
        weights = _Weights()
        windows: dict[int | None, list[float]] = {}
        state = 0
        for layer in layers:
            flops += self._mixer_flops(layer) + sum(self._ffn_flops(layer))
            weights = weights + self._layer_weights(layer)
            if layer.mixer == "mamba":
                state += self._mamba_state_elements
            else:
                entry = windows.setdefault(layer.window, [0.0, 0])
                entry[0] += self._score_flops_per_key(layer)
                entry[1] += self._kv_elements_per_token(layer)
        return _Segment(
            layers=tuple(layer.index for layer in layers),
            flops_per_token=flops,
            weights=weights,
            windows=tuple((window, score, int(kv)) for window, (score, kv) in windows.items()),
            state_elements=state,
        )

    @cached_property
    def _segments(self) -> tuple[_Segment, ...]:
        bounds = [-1, *self.moe_layers]
        segments = [
            self._segment_of(self.layers[bounds[j] + 1 : bounds[j + 1] + 1]) for j in range(self.num_moe_layers)
        ]
        segments.append(self._segment_of(self.layers[self.moe_layers[-1] + 1 :]))  # the tail
        return tuple(segments)

    def segment_layers(self, moe_layer: int) -> tuple[int, ...]:
        """Model layers whose non-expert work :meth:`dense_layer_flops` charges to ``moe_layer``."""
        return self._segments[self._moe_index(moe_layer)].layers

    def _moe_index(self, moe_layer: int) -> int:
        return F.check_int(
            "moe_layer",
            moe_layer,
            minimum=0,
            maximum=self.num_moe_layers - 1,
            expected=f"a MoE-layer (trace-layer) index in 0..{self.num_moe_layers - 1}",
        )

    def _cost_table(self, fmt: str | WeightFormat | None, kv_format: str) -> _CostTable:
        key = ("costs", _fmt_key(fmt), kv_format)
        if key not in self._memo:
            dense = self._fmt(fmt, self.weight_format, "weight_format")
            emb = self._fmt(None, self.embedding_format, "embedding_format")
            segments = self._segments
            windows = tuple(dict.fromkeys(w for seg in segments for w, _, _ in seg.windows))
            score = np.zeros((len(windows), len(segments)))
            kv = np.zeros((len(windows), len(segments)), dtype=np.int64)
            for j, seg in enumerate(segments):
                for window, score_per_key, kv_per_key in seg.windows:
                    score[windows.index(window), j] = score_per_key
                    kv[windows.index(window), j] = kv_per_key
            self._memo[key] = _CostTable(
                windows=windows,
                flops_per_token=np.array([seg.flops_per_token for seg in segments]),
                score_per_key=score,
                kv_per_key=kv,
                state_elements=np.array([seg.state_elements for seg in segments], dtype=np.int64),
                weight_bytes=np.array([seg.weights.nbytes(dense) for seg in segments], dtype=np.int64),
                # A tied LM head has no parameters of its own but still reads the embedding matrix.
                head_weight_bytes=self._head.nbytes(emb)
                + (emb.matrix_bytes(self.vocab_size, self.hidden_size) if self.tie_word_embeddings else 0),
                head_flops_per_logit=self.lm_head_flops_per_token,
                embedding_row_bytes=emb.matrix_bytes(1, self.hidden_size),
                kv_element_bytes=kv_bytes_per_element(kv_format),
            )
        return self._memo[key]

    def dense_layer_flops(
        self, moe_layer: int, *, batch_size: int = 1, context_len: int | Sequence[int] | np.ndarray = 0
    ) -> float:
        """FLOPs of the non-routed work charged to MoE layer ``moe_layer`` for one step.

        That is every model layer after MoE layer ``moe_layer - 1``'s experts up to and including
        MoE layer ``moe_layer``'s router: attention (projections and scores over the context),
        Mamba, dense FFNs, router and shared experts, for ``batch_size`` tokens.

        Parameters
        ----------
        moe_layer : int
            Index into :attr:`moe_layers` (the trace's layer axis).
        batch_size : int
            Tokens processed in the step.
        context_len : int or sequence of int
            Keys each token attends to (its own included): one value for all tokens, or one per
            token (length ``batch_size``), e.g. ``range(p + 1, p + n + 1)`` for a prefill chunk.

        See Also
        --------
        step_costs : the same for every MoE layer and many steps at once.
        """
        return self._step(self._moe_index(moe_layer), batch_size, context_len, 0, None, "bf16")[0]

    def dense_layer_bytes(
        self,
        moe_layer: int,
        *,
        batch_size: int = 1,
        context_len: int | Sequence[int] | np.ndarray = 0,
        fmt: str | WeightFormat | None = None,
        kv_format: str = "bf16",
    ) -> int:
        """Memory traffic (bytes) of the same work as :meth:`dense_layer_flops`.

        Weights are read once per step (in ``fmt``, default ``weight_format``); the KV cache is read
        for every attended key and one entry is written per token; Mamba state is read and written
        once per token (each token its own sequence, as in decode). MoE layer 0 also reads the
        embedding row of each token.
        """
        return self._step(self._moe_index(moe_layer), batch_size, context_len, 0, fmt, kv_format)[1]

    def head_flops(
        self, batch_size: int = 1, *, context_len: int | Sequence[int] | np.ndarray = 0, logit_tokens: int | None = None
    ) -> float:
        """FLOPs after the last MoE layer's experts: any trailing dense layers (for ``batch_size``
        tokens), the final norm and the LM head (for ``logit_tokens``, default ``batch_size``; a
        prefill chunk that does not end its prompt needs none)."""
        return self._step(self.num_moe_layers, batch_size, context_len, logit_tokens, None, "bf16")[0]

    def head_bytes(
        self,
        batch_size: int = 1,
        *,
        context_len: int | Sequence[int] | np.ndarray = 0,
        logit_tokens: int | None = None,
        fmt: str | WeightFormat | None = None,
        kv_format: str = "bf16",
    ) -> int:
        """Bytes read and written by the :meth:`head_flops` work (LM head in ``embedding_format``,
        read only when some token needs logits)."""
        return self._step(self.num_moe_layers, batch_size, context_len, logit_tokens, fmt, kv_format)[1]

    def _step(
        self,
        index: int,
        batch_size: int,
        context_len: object,
        logit_tokens: int | None,
        fmt: str | WeightFormat | None,
        kv_format: str,
    ) -> tuple[float, int]:
        """(FLOPs, bytes) of segment ``index`` for one step; the scalar twin of :meth:`step_costs`."""
        batch = _check_batch(batch_size)
        contexts = _check_contexts(context_len, batch)
        table = self._cost_table(fmt, kv_format)
        flops = batch * float(table.flops_per_token[index])
        kv_elements = 0
        for w, window in enumerate(table.windows):
            keys = _attended_keys(contexts, batch, window)
            flops += keys * float(table.score_per_key[w, index])
            kv_elements += int(table.kv_per_key[w, index]) * (keys + batch)
        kv_elements += 2 * batch * int(table.state_elements[index])
        nbytes = int(table.weight_bytes[index]) + kv_elements * table.kv_element_bytes
        if index == 0:
            nbytes += batch * table.embedding_row_bytes
        if index == self.num_moe_layers:
            logits = batch if logit_tokens is None else F.check_int("logit_tokens", logit_tokens, minimum=0)
            flops += logits * table.head_flops_per_logit
            nbytes += table.head_weight_bytes if logits else 0
        return flops, nbytes

    def step_costs(self, num_tokens: Sequence[int] | np.ndarray, context_lens: Sequence[int] | np.ndarray, *,
                   logit_tokens: Sequence[int] | np.ndarray | None = None, fmt: str | WeightFormat | None = None,
                   kv_format: str = "bf16", read_context_lens: Sequence[int] | np.ndarray | None = None,
                   reads_per_step: Sequence[int] | np.ndarray | None = None) -> StepCosts:
        """Non-routed FLOPs and bytes of many steps at once (vectorised :meth:`dense_layer_flops`,
        :meth:`dense_layer_bytes`, :meth:`head_flops` and :meth:`head_bytes`; equal to them exactly).

        Parameters
        ----------
        num_tokens : int array ``[S]``
            Tokens processed in each step (>= 1).
        context_lens : int array ``[sum(num_tokens)]``
            Keys each token attends to (its own included), step after step.
        logit_tokens : int array ``[S]``, optional
            Tokens per step that need logits (default ``num_tokens``).
        fmt, kv_format : str
            Weight format of the non-expert matrices (default ``weight_format``) and KV-cache format.
        read_context_lens, reads_per_step : int arrays ``[R]`` and ``[S]``, optional
            When given, the KV cache is read ``read_context_lens`` keys at a time, ``reads_per_step``
            reads per step, instead of once per token: e.g. one read per sequence and step, as a
            flash-attention kernel serving a whole prefill chunk does. FLOPs are unchanged.
        """
        batch = np.asarray(num_tokens)
        if batch.ndim != 1 or not np.issubdtype(batch.dtype, np.integer) or (batch.size and batch.min() < 1):
            F.fail(
                "num_tokens",
                f"expected a 1-D array of integers >= 1 (tokens per step), got {batch.dtype} "
                f"array of shape {batch.shape}",
            )
        batch = batch.astype(np.int64)
        contexts = _check_contexts(context_lens, int(batch.sum()))
        if isinstance(contexts, int):  # a scalar for every token of every step
            contexts = np.full(int(batch.sum()), contexts, dtype=np.int64)
        logits = batch if logit_tokens is None else np.asarray(logit_tokens)
        if (
            logits.shape != batch.shape
            or not np.issubdtype(logits.dtype, np.integer)
            or (logits.size and logits.min() < 0)
        ):
            F.fail(
                "logit_tokens",
                f"expected one non-negative integer per step ({len(batch)}), got "
                f"{logits.dtype} array of shape {logits.shape}",
            )
        table = self._cost_table(fmt, kv_format)
        starts = np.concatenate([[0], np.cumsum(batch)[:-1]]).astype(np.int64)
        num_steps, num_segments = len(batch), self.num_moe_layers + 1
        flops = batch[:, None] * table.flops_per_token[None, :]
        kv_elements = np.zeros((num_steps, num_segments), dtype=np.int64)
        read_lens, read_starts = contexts, starts
        if read_context_lens is not None or reads_per_step is not None:
            reads = np.asarray(reads_per_step)
            if reads.shape != batch.shape or not np.issubdtype(reads.dtype, np.integer) or (
                    reads.size and reads.min() < 1):
                F.fail("reads_per_step", f"expected one integer >= 1 per step ({len(batch)}), got "
                                         f"{reads.dtype} array of shape {reads.shape}")
            read_lens = _check_contexts(read_context_lens, int(reads.sum()))
            if isinstance(read_lens, int):
                read_lens = np.full(int(reads.sum()), read_lens, dtype=np.int64)
            read_starts = np.concatenate([[0], np.cumsum(reads)[:-1]]).astype(np.int64)
        for w, window in enumerate(table.windows):
            capped = contexts if window is None else np.minimum(contexts, window)
            keys = np.add.reduceat(capped, starts) if num_steps else np.zeros(0, dtype=np.int64)
            flops = flops + keys[:, None] * table.score_per_key[w][None, :]
            if read_lens is not contexts:
                capped = read_lens if window is None else np.minimum(read_lens, window)
                keys = np.add.reduceat(capped, read_starts) if num_steps else np.zeros(0, dtype=np.int64)
            kv_elements += table.kv_per_key[w][None, :] * (keys + batch)[:, None]
        kv_elements += 2 * batch[:, None] * table.state_elements[None, :]
        nbytes = table.weight_bytes[None, :] + kv_elements * table.kv_element_bytes
        nbytes[:, 0] += batch * table.embedding_row_bytes
        flops[:, -1] += logits * table.head_flops_per_logit
        nbytes[:, -1] += np.where(logits > 0, table.head_weight_bytes, 0)
        return StepCosts(
            dense_flops=_readonly(flops[:, :-1]),
            dense_bytes=_readonly(nbytes[:, :-1]),
            head_flops=_readonly(flops[:, -1]),
            head_bytes=_readonly(nbytes[:, -1]),
        )

    # ------------------------------------------------------------------ display
    def summary(self) -> dict[str, Any]:
        """Headline numbers (the ``moesim models`` table row)."""
        return {
            "name": self.name,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "num_moe_layers": self.num_moe_layers,
            "num_layers": self.num_layers,
            "total_params": self.total_params,
            "active_params": self.active_params,
            "expert_format": self.default_expert_format,
            "expert_bytes": self.expert_bytes(),
            "total_bytes": self.total_bytes(),
        }


def _fmt_key(fmt: object) -> object:
    return fmt.name if isinstance(fmt, WeightFormat) else fmt


def _short_list(values: Sequence[int], limit: int = 6) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _check_batch(batch_size: object) -> int:
    return F.check_int("batch_size", batch_size, minimum=1)


def _check_contexts(context_len: object, batch: int) -> int | np.ndarray:
    if isinstance(context_len, (int, np.integer)) and not isinstance(context_len, bool):
        return F.check_int("context_len", context_len, minimum=0)
    if isinstance(context_len, (str, bytes, bool)):
        F.fail("context_len", f"expected a non-negative integer or one per token, got {context_len!r}")
    try:
        contexts = np.asarray(context_len)
    except (TypeError, ValueError):
        F.fail("context_len", f"expected a non-negative integer or one per token, got {context_len!r}")
    if contexts.ndim != 1 or len(contexts) != batch:
        F.fail("context_len", f"expected one value per token ({batch}), got shape {contexts.shape}")
    if contexts.size and (not np.issubdtype(contexts.dtype, np.integer) or contexts.min() < 0):
        F.fail(
            "context_len",
            f"expected non-negative integers, got {contexts.dtype} values {contexts.min()}..{contexts.max()}",
        )
    return contexts.astype(np.int64, copy=False)


def _attended_keys(contexts: int | np.ndarray, batch: int, window: int | None) -> int:
    if isinstance(contexts, int):
        return batch * (contexts if window is None else min(contexts, window))
    if window is None:
        return int(contexts.sum())
    return int(np.minimum(contexts, window).sum())


def moe_layer_indices(num_layers: int, *, first_dense: int = 0, every: int = 1, offset: int = 0) -> tuple[int, ...]:
    """Layer indices of the usual MoE patterns.

    ``first_dense`` leading dense layers (DeepSeek ``first_k_dense_replace``), then every ``every``-th
    layer starting at ``offset`` past them (Jamba ``expert_layer_period=2, offset=1``; Switch every 2).
    """
    num_layers = F.check_int("num_layers", num_layers, minimum=1)
    first_dense = F.check_int("first_dense", first_dense, minimum=0, maximum=num_layers - 1)
    every = F.check_int("every", every, minimum=1)
    offset = F.check_int("offset", offset, minimum=0)
    return tuple(range(first_dense + offset, num_layers, every))
