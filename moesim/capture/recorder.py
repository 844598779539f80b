"""Forward hooks that record what every router of a model decided, one record per model forward.

The hooks only read: they return nothing, so the model computes exactly what it computes without
them. Per forward they keep, for each MoE layer, the router's selected experts re-ordered by
descending router score (a stable sort, so ties keep the router's own order and already-sorted
output is unchanged), the gate weights in the same order, optionally the logits, and optionally
the speculative guess (see :mod:`moesim.capture`). Tensors stay on the device until the forward
ends and then move to the host in one transfer per column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moesim.capture.architectures import MoELayout
from moesim.errors import CaptureError


@dataclass(frozen=True)
class ForwardRecord:
    """Routing of one model forward over ``batch_size x num_tokens`` token slots.

    Arrays are numpy, rows in the router's (batch-major) order: row ``b * num_tokens + s``.
    ``experts``/``weights``/``predicted`` are ``[L, B*S, k]``, ``logits`` ``[L, B*S, E]``.
    ``predicted[0]`` is all -1 (nothing runs before the first MoE layer's router).
    """

    batch_size: int
    num_tokens: int
    experts: Any
    weights: Any
    logits: Any | None
    predicted: Any | None


class RoutingRecorder:
    """Context manager installing the hooks on ``model`` (the module whose forward generate calls).

    Parameters
    ----------
    model : torch.nn.Module
    layout : MoELayout
        From :func:`moesim.capture.architectures.inspect_model`.
    logits, speculative : bool
        Also keep router logits (float16) / the speculative next-layer guess.
    """

    def __init__(self, model: Any, layout: MoELayout, *, logits: bool = False, speculative: bool = False):
        self.model = model
        self.layout = layout
        self.keep_logits = logits
        self.speculative = speculative
        self.records: list[ForwardRecord] = []
        self._handles: list[Any] = []
        self._shape: tuple[int, int] | None = None
        self._layer_of = {id(router): i for i, router in enumerate(layout.routers)}
        self._pending: dict[str, list[Any]] = {}

    # ------------------------------------------------------------------ install / remove
    def __enter__(self) -> RoutingRecorder:
        self._handles.append(self.model.register_forward_pre_hook(self._begin, with_kwargs=True))
        self._handles.append(self.model.register_forward_hook(self._end, with_kwargs=True))
        for router in self.layout.routers:
            self._handles.append(router.register_forward_hook(self._on_router, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._shape = None

    # ------------------------------------------------------------------ hooks
    def _begin(self, module: Any, args: tuple, kwargs: dict) -> None:
        inputs = kwargs.get("input_ids")
        if inputs is None and args:
            inputs = args[0]
        if inputs is None:
            inputs = kwargs.get("inputs_embeds")
        if inputs is None or inputs.dim() < 2:
            raise CaptureError(
                "capture: the model was called without input_ids or inputs_embeds of shape [batch, tokens]"
            )
        self._shape = (int(inputs.shape[0]), int(inputs.shape[1]))
        num_layers = len(self.layout.routers)
        self._pending = {
            "experts": [None] * num_layers,
            "weights": [None] * num_layers,
            "logits": [None] * num_layers,
            "predicted": [None] * num_layers,
        }

    def _on_router(self, router: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if self._shape is None:
            return  # a router called outside a model forward (e.g. by user code) is not ours to record
        layer = self._layer_of[id(router)]
        if self._pending["experts"][layer] is not None:
            raise CaptureError(
                f"capture: the router of model layer {self.layout.moe_layers[layer]} ran twice in one forward; "
                f"this model's MoE forward is not supported"
            )
        experts, weights, logits = self._ranked(router, output)
        self._pending["experts"][layer] = experts
        self._pending["weights"][layer] = weights
        if self.keep_logits:
            self._pending["logits"][layer] = logits.reshape(-1, logits.shape[-1]).half()
        if self.speculative and layer + 1 < len(self.layout.routers):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            following = self.layout.routers[layer + 1]
            # .forward, not __call__: our own hooks (and transformers' output recorders) must not see
            # this extra call; device-placement wrappers (accelerate) patch .forward and still apply.
            guess = following.forward(_to_module_device(hidden, following))
            self._pending["predicted"][layer + 1] = self._ranked(following, guess)[0]

    def _end(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        import torch

        batch_size, num_tokens = self._shape
        self._shape = None
        rows = batch_size * num_tokens
        experts = self._pending["experts"]
        missing = [self.layout.moe_layers[i] for i, e in enumerate(experts) if e is None]
        if missing:
            raise CaptureError(
                f"capture: the routers of model layers {missing} did not run in a forward; the MoE block's "
                f"forward was replaced (e.g. a fused hub kernel via use_kernels=True); load the model without it"
            )
        bad = [self.layout.moe_layers[i] for i, e in enumerate(experts) if e.shape[0] != rows]
        if bad:
            raise CaptureError(
                f"capture: routers of model layers {bad} saw {experts[0].shape[0]} token rows, expected "
                f"{batch_size} x {num_tokens}; this model's MoE forward is not supported"
            )

        def host(tensors: list[Any], fill: int | None = None) -> Any:
            if fill is not None:
                template = experts[0]
                tensors = [torch.full_like(template, fill) if t is None else t for t in tensors]
            return torch.stack([t.to(tensors[0].device) for t in tensors]).cpu().numpy()

        self.records.append(
            ForwardRecord(
                batch_size=batch_size,
                num_tokens=num_tokens,
                experts=host(experts),
                weights=host(self._pending["weights"]),
                logits=host(self._pending["logits"]) if self.keep_logits else None,
                predicted=host(self._pending["predicted"], fill=-1) if self.speculative else None,
            )
        )
        self._pending = {}

    # ------------------------------------------------------------------ helpers
    def _ranked(self, router: Any, output: Any) -> tuple[Any, Any, Any]:
        """(experts int16, weights float32, logits) with experts in descending router score."""
        import torch

        if not isinstance(output, (tuple, list)) or len(output) < 3:
            raise CaptureError(
                f"capture: {type(router).__name__} returned {type(output).__name__}, expected "
                f"(router_logits, weights, indices); this transformers version is not supported"
            )
        logits, weights, indices = output[0], output[1], output[2]
        logits = logits.reshape(-1, logits.shape[-1])
        indices = indices.reshape(logits.shape[0], -1)
        weights = weights.reshape(logits.shape[0], -1)
        score = self.layout.arch.selection_score
        scores = logits if score is None else score(router, logits)
        order = torch.sort(scores.gather(1, indices), dim=1, descending=True, stable=True).indices
        return (
            indices.gather(1, order).to(torch.int16),
            weights.gather(1, order).to(torch.float32),
            logits,
        )


def _to_module_device(tensor: Any, module: Any) -> Any:
    if getattr(module, "_hf_hook", None) is not None:
        return tensor  # accelerate moves inputs itself (and may hold weights off-device)
    for parameter in module.parameters():
        if parameter.device.type != "meta":
            return tensor.to(parameter.device)
    return tensor
