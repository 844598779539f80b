"""Supported MoE architectures: where each one's router is and how it ranks experts.

Every supported transformers implementation (5.x) has a router module whose forward returns
``(router_logits, top_k_weights, top_k_index)`` and whose output feeds the experts module
unchanged, so hooking that output records exactly the experts the model used, with the model's
own rules (normalised top-k, group-limited routing, score-correction bias, sparsemixer). An
:class:`ArchSpec` names those modules and says how the router ranks experts, so the recorded
top-k is put in descending router score even where the router returns it unsorted
(``torch.topk(sorted=False)`` in DeepSeek-V2/V3).

Adding an architecture is one :func:`register_architecture` call here plus a tiny-config test.
Nothing in this module imports torch at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from moesim.capture import _deps
from moesim.errors import CaptureError
from moesim.policies.registry import Registry


def _zero(config: Any) -> int:
    return 0


def _none(config: Any) -> int | None:
    return None


def _intermediate(config: Any) -> int | None:
    return getattr(config, "intermediate_size", None)


def _moe_intermediate(config: Any) -> int | None:
    return getattr(config, "moe_intermediate_size", None)


@dataclass(frozen=True)
class ArchSpec:
    """How to find and read the routers of one transformers MoE architecture.

    Attributes
    ----------
    model_type : str
        ``config.model_type`` of the architecture.
    label : str
        Human name, e.g. ``"Mixtral"``.
    router_classes, experts_classes : tuple of str
        Class names (matched along the MRO) of the router and routed-experts modules.
    routing : callable
        ``(config, router) -> dict`` describing the routing rule, recorded in trace metadata.
    selection_score : callable or None
        ``(router, router_logits) -> scores`` the router ranks experts by, when that is not the
        logits themselves (every softmax/top-k router ranks like its logits).
    num_shared_experts, shared_expert_ffn_size, expert_ffn_size : callable
        ``config -> int`` (or None when not applicable).
    """

    model_type: str
    label: str
    router_classes: tuple[str, ...]
    experts_classes: tuple[str, ...]
    routing: Callable[[Any, Any], dict[str, Any]]
    selection_score: Callable[[Any, Any], Any] | None = None
    num_shared_experts: Callable[[Any], int] = _zero
    shared_expert_ffn_size: Callable[[Any], int | None] = _none
    expert_ffn_size: Callable[[Any], int | None] = _intermediate


ARCHITECTURES: Registry[ArchSpec] = Registry("MoE architecture")


def register_architecture(spec: ArchSpec) -> ArchSpec:
    """Add ``spec`` to the supported architectures (keyed by its ``model_type``)."""
    return ARCHITECTURES.register(spec.model_type)(spec)


def supported_architectures() -> tuple[str, ...]:
    """``model_type`` of every supported architecture, in registration order."""
    return tuple(spec.model_type for _, spec in ARCHITECTURES.items())


def _supported_listing() -> str:
    return ", ".join(f"{spec.label} ({spec.model_type})" for _, spec in ARCHITECTURES.items())


# ---------------------------------------------------------------------- routing descriptions
def _softmax_topk(config: Any, router: Any) -> dict[str, Any]:
    normalised = bool(getattr(router, "norm_topk_prob", True))
    return {
        "scores": "softmax over all experts' router logits",
        "selection": "top-k of the scores",
        "weights": "selected softmax probabilities" + (", renormalised to sum to 1" if normalised else ""),
    }


def _topk_then_softmax(config: Any, router: Any) -> dict[str, Any]:
    return {
        "scores": "router logits",
        "selection": "top-k of the logits",
        "weights": "softmax over the k selected logits",
    }


def _deepseek_v2(config: Any, router: Any) -> dict[str, Any]:
    method = getattr(router, "topk_method", "greedy")
    out = {
        "scores": "softmax over all experts' router logits",
        "selection": "top-k of the scores"
        if method == "greedy"
        else (
            f"group-limited: experts in {router.num_group} groups, top-{router.topk_group} groups by "
            f"their best expert score, then top-k within those groups"
        ),
        "weights": f"selected softmax probabilities x routed_scaling_factor ({router.routed_scaling_factor}); "
        "not renormalised",
        "topk_method": method,
    }
    return out


def _deepseek_v3(config: Any, router: Any) -> dict[str, Any]:
    normalised = bool(getattr(router, "norm_topk_prob", False))
    return {
        "scores": "sigmoid of the router logits",
        "selection": (
            f"score + e_score_correction_bias; {router.num_group} groups ranked by the sum of their top-2 "
            f"biased scores, top-{router.topk_group} groups kept, then top-k biased scores"
        ),
        "weights": "unbiased sigmoid scores of the selected experts"
        + (", renormalised to sum to 1" if normalised else "")
        + f", x routed_scaling_factor ({router.routed_scaling_factor})",
        "ranking": "experts are listed by descending biased score (the score that selected them)",
    }


def _sparsemixer(config: Any, router: Any) -> dict[str, Any]:
    return {
        "scores": "router logits",
        "selection": "sparsemixer (eval mode): first expert = argmax, second = argmax of the rest",
        "weights": "per pick, softmax over the logits within 2*router_jitter_noise "
        f"({getattr(router, 'router_jitter_noise', None)}) of that pick (relative), taken at the pick",
        "ranking": "pick order (descending logit)",
    }


def _deepseek_v3_scores(router: Any, logits: Any) -> Any:
    # The same ops as DeepseekV3TopkRouter.forward (and GLM-4-MoE's copy of it), so the ranking
    # is bit-identical to the choice.
    return logits.sigmoid() + router.e_score_correction_bias


def _n_shared(config: Any) -> int:
    return int(getattr(config, "n_shared_experts", 0) or 0)


def _one_shared(size_key: str) -> dict[str, Callable[[Any], Any]]:
    """Fields for a block with one shared expert of FFN size ``config.<size_key>`` (0 = none)."""
    return {
        "num_shared_experts": lambda config: 1 if getattr(config, size_key, 0) else 0,
        "shared_expert_ffn_size": lambda config: getattr(config, size_key, None),
    }


MIXTRAL = ArchSpec(
    model_type="mixtral",
    label="Mixtral",
    router_classes=("MixtralTopKRouter",),
    experts_classes=("MixtralExperts",),
    routing=_softmax_topk,
)
QWEN2_MOE = ArchSpec(
    model_type="qwen2_moe",
    label="Qwen2-MoE",
    router_classes=("Qwen2MoeTopKRouter",),
    experts_classes=("Qwen2MoeExperts",),
    routing=_softmax_topk,
    expert_ffn_size=_moe_intermediate,
    **_one_shared("shared_expert_intermediate_size"),
)
DEEPSEEK_V2 = ArchSpec(
    model_type="deepseek_v2",
    label="DeepSeek-V2",
    router_classes=("DeepseekV2TopkRouter",),
    experts_classes=("DeepseekV2Experts",),
    routing=_deepseek_v2,
    num_shared_experts=_n_shared,
    shared_expert_ffn_size=_moe_intermediate,
    expert_ffn_size=_moe_intermediate,
)
DEEPSEEK_V3 = replace(
    DEEPSEEK_V2,
    model_type="deepseek_v3",
    label="DeepSeek-V3",
    router_classes=("DeepseekV3TopkRouter",),
    experts_classes=("DeepseekV3Experts",),
    routing=_deepseek_v3,
    selection_score=_deepseek_v3_scores,
)
GRANITE_MOE = ArchSpec(
    model_type="granitemoe",
    label="Granite-MoE",
    router_classes=("GraniteMoeTopKRouter",),
    experts_classes=("GraniteMoeExperts",),
    routing=_topk_then_softmax,
)

for _spec in (
    MIXTRAL,
    QWEN2_MOE,
    replace(
        QWEN2_MOE,
        model_type="qwen3_moe",
        label="Qwen3-MoE",
        router_classes=("Qwen3MoeTopKRouter",),
        experts_classes=("Qwen3MoeExperts",),
        num_shared_experts=_zero,
        shared_expert_ffn_size=_none,
    ),
    replace(
        MIXTRAL,
        model_type="olmoe",
        label="OLMoE",
        router_classes=("OlmoeTopKRouter",),
        experts_classes=("OlmoeExperts",),
    ),
    DEEPSEEK_V2,
    DEEPSEEK_V3,
    replace(
        GRANITE_MOE,
        model_type="gpt_oss",
        label="GPT-OSS",
        router_classes=("GptOssTopKRouter",),
        experts_classes=("GptOssExperts",),
    ),
    replace(
        MIXTRAL,
        model_type="phimoe",
        label="Phi-MoE",
        router_classes=("PhimoeTopKRouter",),
        experts_classes=("PhimoeExperts",),
        routing=_sparsemixer,
    ),
    GRANITE_MOE,
    replace(
        GRANITE_MOE,
        model_type="granitemoeshared",
        label="Granite-MoE-Shared",
        router_classes=("GraniteMoeSharedTopKRouter",),
        experts_classes=("GraniteMoeSharedExperts",),
        **_one_shared("shared_intermediate_size"),
    ),
    replace(
        DEEPSEEK_V3,
        model_type="glm4_moe",
        label="GLM-4-MoE",
        router_classes=("Glm4MoeTopkRouter",),
        experts_classes=("Glm4MoeExperts",),
    ),
    replace(
        QWEN2_MOE,
        model_type="qwen3_next",
        label="Qwen3-Next",
        router_classes=("Qwen3NextTopKRouter",),
        experts_classes=("Qwen3NextExperts",),
    ),
):
    register_architecture(_spec)


# ---------------------------------------------------------------------- model inspection
@dataclass(frozen=True, eq=False)
class MoELayout:
    """Where a loaded model's MoE layers and routers are.

    Attributes
    ----------
    arch : ArchSpec
    num_model_layers : int
        Decoder layers of the model.
    moe_layers, dense_layers : tuple of int
        Model layer indices with routed experts, and without (dense FFN).
    num_experts, top_k : int
        Routed experts per MoE layer and experts chosen per token.
    num_shared_experts : int
        Always-active experts per MoE layer (recorded in metadata, never as routed experts).
    routers, experts : tuple of torch.nn.Module
        Router and routed-experts module of each MoE layer, in layer order.
    """

    arch: ArchSpec
    num_model_layers: int
    moe_layers: tuple[int, ...]
    dense_layers: tuple[int, ...]
    num_experts: int
    top_k: int
    num_shared_experts: int
    routers: tuple[Any, ...] = field(repr=False)
    experts: tuple[Any, ...] = field(repr=False)
    config: Any = field(repr=False, default=None)

    def metadata(self) -> dict[str, Any]:
        """Model-structure metadata for the trace header (JSON-serialisable)."""
        config = self.config
        out: dict[str, Any] = {
            "architecture": self.arch.model_type,
            "num_model_layers": self.num_model_layers,
            "dense_layers": list(self.dense_layers),
            "num_shared_experts": self.num_shared_experts,
            "shared_expert_ffn_size": self.arch.shared_expert_ffn_size(config) if self.num_shared_experts else None,
            "expert_ffn_size": self.arch.expert_ffn_size(config),
            "hidden_size": getattr(config, "hidden_size", None),
            "routing": self.arch.routing(config, self.routers[0]),
        }
        out.update(_expert_size(self.experts[0], self.num_experts))
        return out


def architecture_of(model: Any) -> ArchSpec:
    """The :class:`ArchSpec` of a loaded model (by ``config.model_type``, else by module classes).

    Raises
    ------
    CaptureError
        Naming the model's architecture and every supported one.
    """
    config = getattr(model, "config", None)
    return _spec_for(
        getattr(config, "model_type", None),
        name=getattr(config, "name_or_path", None) or type(model).__name__,
        class_names=lambda: {cls.__name__ for module in model.modules() for cls in type(module).__mro__},
    )


def check_supported(config: Any, name: str | None = None) -> ArchSpec:
    """Check a model's config before its weights are loaded (same errors as :func:`architecture_of`)."""
    return _spec_for(getattr(config, "model_type", None), name=name or getattr(config, "name_or_path", "model"))


def _spec_for(model_type: str | None, *, name: str, class_names: Callable[[], set[str]] | None = None) -> ArchSpec:
    if isinstance(model_type, str) and model_type in ARCHITECTURES:
        return ARCHITECTURES.get(model_type)
    if class_names is not None:
        present = class_names()
        for _, spec in ARCHITECTURES.items():
            if present.intersection(spec.router_classes):
                return spec
    raise CaptureError(
        f"model '{name}': architecture {model_type!r} is not supported for routing capture; supported: "
        f"{_supported_listing()}; other models need a router hook in moesim/capture/architectures.py"
    )


def inspect_model(model: Any) -> MoELayout:
    """Find the decoder layers, MoE layers, routers and experts of a transformers MoE model.

    Raises
    ------
    CaptureError
        If the architecture is unsupported, no MoE layer is found, or MoE layers disagree on the
        number of experts or top-k.
    """
    _deps.require()
    spec = architecture_of(model)
    config = model.config
    name = getattr(config, "name_or_path", None) or spec.model_type
    layers = _decoder_layers(model, name)
    moe_layers, dense_layers, routers, experts = [], [], [], []
    for index, layer in enumerate(layers):
        router = _find(layer, spec.router_classes)
        if router is None:
            dense_layers.append(index)
            continue
        block_experts = _find(layer, spec.experts_classes)
        if block_experts is None:
            raise CaptureError(
                f"model '{name}': layer {index} has a {type(router).__name__} but no "
                f"{'/'.join(spec.experts_classes)} module; this transformers version is not supported"
            )
        moe_layers.append(index)
        routers.append(router)
        experts.append(block_experts)
    if not routers:
        raise CaptureError(
            f"model '{name}': no {'/'.join(spec.router_classes)} found in its {len(layers)} layers; "
            f"is it loaded with trust_remote_code (custom modules)? load it with transformers' own implementation"
        )
    num_experts = {
        _router_attr(r, "num_experts", config, ("num_local_experts", "num_experts", "n_routed_experts"))
        for r in routers
    }
    top_k = {_router_attr(r, "top_k", config, ("num_experts_per_tok",)) for r in routers}
    if len(num_experts) != 1 or len(top_k) != 1:
        raise CaptureError(
            f"model '{name}': MoE layers differ in experts {sorted(num_experts)} or top-k {sorted(top_k)}; "
            f"a trace needs the same E and k in every MoE layer"
        )
    return MoELayout(
        arch=spec,
        num_model_layers=len(layers),
        moe_layers=tuple(moe_layers),
        dense_layers=tuple(dense_layers),
        num_experts=num_experts.pop(),
        top_k=top_k.pop(),
        num_shared_experts=spec.num_shared_experts(config),
        routers=tuple(routers),
        experts=tuple(experts),
        config=config,
    )


def _decoder_layers(model: Any, name: str) -> Any:
    import torch

    num_layers = getattr(model.config, "num_hidden_layers", None)
    found = [
        (path, module)
        for path, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList)
        and path.rsplit(".", 1)[-1] == "layers"
        and (num_layers is None or len(module) == num_layers)
    ]
    if not found:
        raise CaptureError(
            f"model '{name}': no decoder 'layers' list with num_hidden_layers ({num_layers}) entries; "
            f"pass the causal-LM model (AutoModelForCausalLM), not a part of it"
        )
    return min(found, key=lambda item: item[0].count("."))[1]


def _find(layer: Any, class_names: tuple[str, ...]) -> Any:
    matches = [module for module in layer.modules() if any(cls.__name__ in class_names for cls in type(module).__mro__)]
    if len(matches) > 1:
        raise CaptureError(f"layer has {len(matches)} {'/'.join(class_names)} modules; expected at most one per layer")
    return matches[0] if matches else None


def _router_attr(router: Any, attr: str, config: Any, config_keys: tuple[str, ...]) -> int:
    value = getattr(router, attr, None)
    for key in config_keys:
        if value is None:
            value = getattr(config, key, None)
    if not isinstance(value, int) or value < 1:
        raise CaptureError(f"router {type(router).__name__}: cannot tell its {attr} (got {value!r})")
    return value


def _expert_size(experts: Any, num_experts: int) -> dict[str, Any]:
    """Parameters and bytes of one routed expert as loaded (stacked [E, ...] tensors)."""
    tensors = list(experts.parameters()) + list(experts.buffers())
    stacked = [t for t in tensors if t.dim() >= 1 and t.shape[0] == num_experts]
    if not stacked or len(stacked) != len(tensors) or not all(t.is_floating_point() for t in stacked):
        return {"expert_params": None, "expert_bytes": None, "expert_dtype": None}
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in stacked})
    return {
        "expert_params": sum(t.numel() for t in stacked) // num_experts,
        "expert_bytes": sum(t.numel() * t.element_size() for t in stacked) // num_experts,
        "expert_dtype": dtypes[0] if len(dtypes) == 1 else "/".join(dtypes),
    }
