"""The on-disk trace contract (Arrow IPC / Parquet), versioned.

One row per token, rows of a sequence contiguous and in execution order:

=================== ================================================= ========
column              type                                              required
=================== ================================================= ========
seq_id              int64                                             yes
position            int32  (token position in its sequence)           yes
phase               int8   (0 = prefill, 1 = decode)                  yes
experts             fixed_size_list<fixed_size_list<int16, k>, L>     yes
weights             fixed_size_list<fixed_size_list<float32, k>, L>   no
predicted_experts   fixed_size_list<fixed_size_list<int16, k'>, L>    no
router_logits       fixed_size_list<fixed_size_list<float16, E>, L>   no
=================== ================================================= ========

``experts[t, l, j]`` is the j-th routed expert (descending router score) of token t at the trace's
l-th MoE layer, -1 for an empty slot. ``predicted_experts[t, l]`` is a guess of ``experts[t, l]``
made before layer l ran (e.g. layer l's router applied to layer l-1's hidden state), -1 where none.
Schema metadata holds ``moesim.format_version`` (an integer, checked before anything else) and
``moesim.trace`` (JSON: num_experts, top_k, num_layers, model, moe_layers and free-form metadata).
Fixed-size lists make ``[T, L, k]`` a zero-copy reshape of the leaf buffer.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

FORMAT_VERSION = 1
VERSION_KEY = b"moesim.format_version"
METADATA_KEY = b"moesim.trace"

PHASES = ("prefill", "decode")
PHASE_CODES = {name: code for code, name in enumerate(PHASES)}

REQUIRED_COLUMNS = ("seq_id", "position", "phase", "experts")
OPTIONAL_COLUMNS = ("weights", "predicted_experts", "router_logits")

# Columns of scalar type and the dtype each must have.
SCALAR_TYPES = {"seq_id": pa.int64(), "position": pa.int32(), "phase": pa.int8()}
# Nested columns: leaf type and which trace dimension is the inner list size.
NESTED_TYPES = {
    "experts": (pa.int16(), "top_k"),
    "weights": (pa.float32(), "top_k"),
    "predicted_experts": (pa.int16(), None),
    "router_logits": (pa.float16(), "num_experts"),
}
# Metadata keys the format owns; everything else is the user's.
RESERVED_KEYS = ("format_version", "num_experts", "top_k", "num_layers", "model", "moe_layers")


def nested_type(leaf: pa.DataType, inner: int, num_layers: int) -> pa.DataType:
    return pa.list_(pa.list_(leaf, inner), num_layers)


def arrow_schema(
    *,
    num_layers: int,
    top_k: int,
    num_experts: int,
    columns: tuple[str, ...],
    metadata_json: str,
    predicted_width: int | None = None,
) -> pa.Schema:
    """The Arrow schema for a trace with the given shape and optional columns."""
    fields = [pa.field(name, SCALAR_TYPES[name], nullable=False) for name in SCALAR_TYPES]
    for name in ("experts",) + OPTIONAL_COLUMNS:
        if name not in columns:
            continue
        leaf, inner_dim = NESTED_TYPES[name]
        inner = {"top_k": top_k, "num_experts": num_experts, None: predicted_width}[inner_dim]
        fields.append(pa.field(name, nested_type(leaf, inner, num_layers), nullable=False))
    return pa.schema(
        fields,
        metadata={VERSION_KEY: str(FORMAT_VERSION).encode(), METADATA_KEY: metadata_json.encode()},
    )


def encode_metadata(header: dict[str, Any]) -> str:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False)
