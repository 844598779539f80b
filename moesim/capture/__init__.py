"""Record routing traces from Hugging Face transformers MoE models as they really run.

A capture runs ``model.generate`` (greedy) over prompts, batch by batch, with read-only forward
hooks on every MoE layer's router, and writes one trace sequence per prompt:

* **prefill**: one row per prompt token (positions 0..n-1, phase ``prefill``), from the forward
  that processes the prompt; left-padding slots of a batch are never recorded;
* **decode**: one row per generated token that is fed back through the model (positions n, n+1,
  ..., phase ``decode``); the last generated token (or EOS) is never fed back, so a prompt that
  generates g tokens has g-1 decode rows. Rows a finished sequence would get while the rest of
  its batch continues are dropped.

Columns (see ``metadata["columns"]`` of a captured trace for the same definitions):

``experts``
    The experts in the router module's *output*, exactly what the model's experts module was
    given, so each model's own routing rule is respected (normalised top-k, DeepSeek's
    group-limited routing and score-correction bias, Phi-MoE's sparsemixer), listed in
    descending router score: the score the router selected them by (biased sigmoid score for
    DeepSeek-V3, pick order for sparsemixer). Shared experts and dense layers are in metadata
    (``num_shared_experts``, ``dense_layers``; ``moe_layers`` are model layer indices), never
    routed slots.
``weights``
    The gate weights the model multiplies each expert output by (including DeepSeek's
    ``routed_scaling_factor``).
``router_logits`` (``logits=True``)
    The router's raw logits for all experts, float16.
``predicted_experts`` (``speculative=True``)
    For MoE layer l > 0, the experts layer l's router picks (its full routing rule and ranking)
    when applied to the hidden state entering MoE layer l-1's router, i.e. the normalised input of
    the previous MoE block: the speculative guess mixtral-offloading prefetches with (Eliseev &
    Mazur 2023, arXiv:2312.17238). Row l = 0 is -1 (no earlier layer to guess from). The guess is
    computed inside the same forward, from the same hidden state the model used.

Only this package imports torch and transformers, and only when a capture function is called;
a missing install raises :class:`~moesim.errors.MissingExtraError` telling the user to
``pip install 'moesim[capture]'``.
"""

from __future__ import annotations

from moesim.capture.architectures import (
    ARCHITECTURES,
    ArchSpec,
    MoELayout,
    inspect_model,
    register_architecture,
    supported_architectures,
)
from moesim.capture.loading import load_model
from moesim.capture.prompts import Prompt, PromptSet, read_prompts
from moesim.capture.recorder import RoutingRecorder
from moesim.capture.session import (
    CaptureOptions,
    CaptureProgress,
    CaptureResult,
    capture,
    capture_to_file,
    describe_model,
    run_capture,
)

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "CaptureOptions",
    "CaptureProgress",
    "CaptureResult",
    "MoELayout",
    "Prompt",
    "PromptSet",
    "RoutingRecorder",
    "capture",
    "capture_to_file",
    "describe_model",
    "inspect_model",
    "load_model",
    "read_prompts",
    "register_architecture",
    "run_capture",
    "supported_architectures",
]
