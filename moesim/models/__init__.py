"""MoE architecture specs: parameters, bytes per weight format, FLOPs and KV-cache size.

:class:`ModelSpec` is a frozen description of a decoder-only MoE model; presets of real models come
from :func:`get_model` / :func:`list_models` (``"mixtral-8x7b"``, ``"qwen3-30b-a3b"``,
``"gpt-oss-20b"``, ...), and any field can be varied with :meth:`ModelSpec.with_overrides`.
Storage formats (bf16, fp8, int4, MXFP4, HQQ 2/3-bit, ...) are in :mod:`moesim.models.formats`.

Contract with the simulator
---------------------------
The trace's layer axis ``j`` runs over ``spec.moe_layers`` (``j = 0 .. num_moe_layers - 1``). One
decode step for a batch is, in order::

    for j in range(spec.num_moe_layers):
        dense work  dense_layer_flops(j, batch_size=B, context_len=C)   FLOPs
                    dense_layer_bytes(j, batch_size=B, context_len=C)   bytes read + written
        experts     for each distinct expert e used at layer j by the batch:
                    expert_bytes()            bytes of e (to fetch on a miss, or read from HBM)
                    expert_flops_per_token    FLOPs per token routed to e
    head            head_flops(B) / head_bytes(B)

* ``dense_layer_*(j)`` covers every model layer after MoE layer ``j - 1``'s experts up to and
  including MoE layer ``j``'s router (:meth:`ModelSpec.segment_layers` lists them): attention
  (projections and ``QK^T``/``AV`` over the context, sliding windows capped), Mamba blocks, dense
  FFNs of non-MoE layers, norms, the router and the shared experts; ``j = 0`` also reads the
  embedding rows. Bytes are the weights (read once per step, in ``weight_format``) plus the KV cache
  read for every attended key and written once per token (in ``kv_format``), plus Mamba state.
* ``head_*`` covers any layers after the last MoE layer, the final norm and the LM head
  (``batch_size`` = tokens that need logits).
* ``context_len`` is the number of keys each token attends to, its own included: one int for all
  tokens or one per token (a prefill chunk of ``n`` tokens after ``p`` cached ones:
  ``range(p + 1, p + n + 1)``).
* Summed over ``j`` and the head, plus ``top_k * expert_flops_per_token`` per MoE layer, the FLOPs
  equal :meth:`ModelSpec.flops_per_token` for a batch of one (the tests hold them equal).
* :meth:`ModelSpec.step_costs` computes all of the above for ``S`` steps at once (arrays
  ``[S, num_moe_layers]`` and ``[S]``), exactly equal to the per-call methods; use it to fill a
  whole trace's cost tables.

All sizes are ints in bytes, FLOPs are floats (a multiply-add is 2 FLOPs). Units: see ``moesim.units``.
"""

from moesim.models.formats import (
    FORMATS,
    KV_FORMATS,
    WeightFormat,
    get_format,
    kv_bytes_per_element,
    list_formats,
    list_kv_formats,
    register_format,
)
from moesim.models.presets import MODELS, get_model, list_models, register_model
from moesim.models.resolve import model_from_config
from moesim.models.spec import (
    ComponentCounts,
    FlopsBreakdown,
    LayerSpec,
    ModelSpec,
    StepCosts,
    moe_layer_indices,
)

__all__ = [
    "FORMATS",
    "KV_FORMATS",
    "MODELS",
    "ComponentCounts",
    "FlopsBreakdown",
    "LayerSpec",
    "ModelSpec",
    "StepCosts",
    "WeightFormat",
    "get_format",
    "get_model",
    "kv_bytes_per_element",
    "list_formats",
    "list_kv_formats",
    "list_models",
    "model_from_config",
    "moe_layer_indices",
    "register_format",
    "register_model",
]
