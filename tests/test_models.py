"""Model specs: hand-computed parameters, bytes, FLOPs and KV sizes; validation; presets; CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moesim.cli import main
from moesim.errors import ConfigError
from moesim.models import (
    ModelSpec,
    WeightFormat,
    get_format,
    get_model,
    list_formats,
    list_models,
    model_from_config,
    moe_layer_indices,
    register_model,
)

MIXTRAL = {
    "hidden": 4096,
    "ffn": 14336,
    "layers": 32,
    "experts": 8,
    "vocab": 32000,
    "heads": 32,
    "kv_heads": 8,
    "head_dim": 128,
}


# ------------------------------------------------------------------ parameters against published counts
def mixtral_params_by_hand() -> tuple[int, int]:
    """Mixtral-8x7B from its config.json, matrix by matrix."""
    h, f, n, e, v = MIXTRAL["hidden"], MIXTRAL["ffn"], MIXTRAL["layers"], MIXTRAL["experts"], MIXTRAL["vocab"]
    q, kv = MIXTRAL["heads"] * MIXTRAL["head_dim"], MIXTRAL["kv_heads"] * MIXTRAL["head_dim"]
    expert = 3 * h * f
    attention = h * q + 2 * h * kv + q * h
    per_layer = attention + e * h + 2 * h  # + router + 2 RMSNorms
    total = n * (per_layer + e * expert) + 2 * v * h + h  # embedding, LM head, final norm
    active = total - n * (e - 2) * expert
    return total, active


def test_mixtral_parameters_match_hand_arithmetic_exactly():
    spec = get_model("mixtral-8x7b")
    total, active = mixtral_params_by_hand()
    assert spec.total_params == total == 46_702_792_704
    assert spec.active_params == active
    assert spec.expert_params == 3 * 4096 * 14336


@pytest.mark.parametrize("name", [n for n in list_models() if get_model(n).published_total_params])
def test_total_params_within_one_percent_of_published(name):
    spec = get_model(name)
    assert spec.total_params == pytest.approx(spec.published_total_params, rel=0.01)


# Published active counts and whether the publisher counted the input-embedding table. They are
# quoted to 2-3 significant digits, so a count is accepted within 1 % or within one unit of the
# published figure's last digit, whichever is wider (Qwen3-30B-A3B: 3.353B quoted as "3.3B";
# DeepSeek-V3: 36.63B without the embedding quoted as "37B").
PUBLISHED_ACTIVE = {
    "mixtral-8x7b": ("12.9", True),  # Mistral AI, "Mixtral of experts"
    "mixtral-8x22b": ("39", True),  # Mistral AI, Mixtral 8x22B announcement
    "qwen3-30b-a3b": ("3.3", True),  # Qwen3 model card
    "qwen3-235b-a22b": ("22", True),  # Qwen3 model card (configs directory)
    "qwen1.5-moe-a2.7b": ("2.7", True),  # model card
    "olmoe-1b-7b": ("1.3", True),  # OLMoE paper
    "phi-3.5-moe": ("6.6", True),  # model card
    "jamba-mini-1.6": ("12", True),  # AI21 model card
    "deepseek-v3": ("37", False),  # DeepSeek-V3 report (configs directory)
    "deepseek-v2-lite": ("2.4", False),  # DeepSeek-V2 report, appendix B
    "gpt-oss-20b": ("3.6", False),  # OpenAI model card (configs directory)
    "gpt-oss-120b": ("5.1", False),  # OpenAI model card (configs directory)
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE))
def test_active_params_match_published(name):
    text, with_embedding = PUBLISHED_ACTIVE[name]
    spec = get_model(name)
    published = float(text) * 1e9
    assert spec.published_active_params == published
    unit = float(Decimal(1).scaleb(Decimal(text).as_tuple().exponent)) * 1e9
    active = spec.active_params if with_embedding else spec.active_params_without_embedding
    assert abs(active - published) <= max(0.01 * published, unit), (active, published)


def test_brief_counts_within_stated_precision():
    # The brief's three models: totals within 1 %; Mixtral's active within 1 % too.
    assert get_model("mixtral-8x7b").total_params / 46.7e9 == pytest.approx(1, abs=0.01)
    assert get_model("mixtral-8x7b").active_params / 12.9e9 == pytest.approx(1, abs=0.01)
    assert get_model("qwen3-30b-a3b").total_params / 30.5e9 == pytest.approx(1, abs=0.01)
    assert get_model("deepseek-v3").total_params / 671e9 == pytest.approx(1, abs=0.01)


# ------------------------------------------------------------------ bytes per format, by hand
def test_mixtral_expert_bytes_per_format_by_hand():
    spec = get_model("mixtral-8x7b")
    h, f = 4096, 14336
    n = 3 * h * f
    rows = 2 * f + h  # gate and up have f output rows, down has h
    assert spec.expert_bytes("bf16") == n * 2 == 3 * 4096 * 14336 * 2
    assert spec.expert_bytes("fp32") == n * 4
    assert spec.expert_bytes("fp8") == n + rows * 4  # fp32 scale per output channel
    assert spec.expert_bytes("int8") == n + rows * 4
    groups_128 = 2 * f * (h // 128) + h * (f // 128)  # groups run along the inputs
    assert spec.expert_bytes("int4") == n // 2 + groups_128 * 4  # fp16 scale + fp16 zero
    assert spec.expert_bytes("int4-awq") == n // 2 + groups_128 * 20 // 8
    assert spec.expert_bytes("mxfp4") == n // 2 + n // 32  # one E8M0 byte per 32
    assert spec.expert_bytes("nf4") == n // 2 + (n // 64) * 4
    tiles = 2 * (f // 128) * (h // 128) + (h // 128) * (f // 128)
    assert spec.expert_bytes("fp8-block") == n + tiles * 4
    # HQQ 2-bit (mixtral-offloading): group 16 with 8-bit scale and zero; scales requantised per 128
    # with an fp16 scale and zero (4 bytes); 4 bytes per matrix for the zeros' own scale and zero.
    blocks = n // 16
    per_matrix_blocks = h * f // 16
    assert spec.expert_bytes("hqq-2bit") == n // 4 + blocks * 2 + 3 * (per_matrix_blocks // 128) * 4 + 3 * 4
    # HQQ 3-bit: ten values per int32
    words = 3 * math.ceil(h * f / 10)
    blocks64 = h * f // 64
    assert spec.expert_bytes("hqq-3bit") == words * 4 + 3 * blocks64 * 2 + 3 * math.ceil(blocks64 / 128) * 4 + 12


def test_gpt_oss_expert_defaults_to_mxfp4_with_bf16_biases():
    spec = get_model("gpt-oss-20b")
    assert spec.default_expert_format == "mxfp4" and spec.weight_format == "bf16"
    h = 2880
    per_matrix = h * h // 2 + h * (h // 32)  # 4-bit values + one scale byte per 32 inputs
    biases = (2 * h + h) * 2  # gate/up and down biases stay bf16
    assert spec.expert_bytes() == 3 * per_matrix + biases
    assert spec.expert_bytes("bf16") == 2 * spec.expert_params


def test_format_bits_per_param():
    expected = {
        "fp32": 32,
        "bf16": 16,
        "fp16": 16,
        "mxfp4": 4.25,
        "int4": 4.25,
        "int4-awq": 4.15625,
        "nf4": 4.5,
        "hqq-2bit": 2 + 16 / 16 + 32 / (16 * 128),
        "hqq-3bit": 3.2 + 16 / 64 + 32 / (64 * 128),
        "hqq-4bit": 4 + 16 / 64 + 32 / (64 * 256),
        "fp8-block": 8 + 32 / 128**2,
    }
    for name, bits in expected.items():
        assert get_format(name).bits_per_param() == pytest.approx(bits, rel=1e-12), name
    assert get_format("fp8").bits_per_param(4096) == 8 + 32 / 4096


@given(rows=st.integers(1, 600), cols=st.integers(1, 600), name=st.sampled_from(list_formats()))
def test_matrix_bytes_cover_values_and_grow_with_shape(rows, cols, name):
    fmt = get_format(name)
    nbytes = fmt.matrix_bytes(rows, cols)
    assert nbytes * 8 >= rows * cols * fmt.value_bits
    assert fmt.matrix_bytes(rows + 1, cols) >= nbytes and fmt.matrix_bytes(rows, cols + 1) >= nbytes


@pytest.mark.parametrize("name", list_formats())
def test_aligned_matrix_costs_its_asymptotic_rate(name):
    fmt = get_format(name)
    rows, cols = 128 * 1280, 128 * 40  # divisible by every block, word and meta-group size
    per_matrix = fmt.tensor_meta_bits if fmt.has_scales else 0
    assert fmt.matrix_bits(rows, cols) - per_matrix == pytest.approx(rows * cols * fmt.bits_per_param(cols), rel=1e-12)


def test_non_expert_bytes_cover_everything_but_routed_experts():
    spec = get_model("mixtral-8x7b")
    counts = spec.byte_counts()
    assert counts.total == spec.total_bytes() == counts.non_expert + counts.routed_experts
    assert counts.routed_experts == 32 * 8 * spec.expert_bytes()
    assert spec.non_expert_bytes() == 2 * (spec.total_params - 32 * 8 * spec.expert_params)
    # Quantising the dense weights leaves embeddings, LM head, norms and routers at 16 bits.
    q = spec.byte_counts("int4")
    assert q.embedding == counts.embedding and q.lm_head == counts.lm_head and q.routers == counts.routers
    assert q.attention < counts.attention / 3
    # DeepSeek-V3 ships FP8 block weights but bf16 embeddings
    v3 = get_model("deepseek-v3").byte_counts()
    assert v3.embedding == 129280 * 7168 * 2
    assert spec.layer_weight_bytes(0) == (spec.non_expert_bytes() - counts.embedding - counts.lm_head - 4096 * 2) // 32


# ------------------------------------------------------------------ KV cache, by hand
def test_kv_bytes_per_token_gqa_and_mla_by_hand():
    assert get_model("mixtral-8x7b").kv_bytes_per_token() == 32 * 2 * 8 * 128 * 2
    assert get_model("qwen3-30b-a3b").kv_bytes_per_token() == 48 * 2 * 4 * 128 * 2
    assert get_model("qwen3-30b-a3b").kv_bytes_per_token("fp8") == 48 * 2 * 4 * 128
    # MLA caches the 512-dim latent plus the 64-dim shared RoPE key per layer
    assert get_model("deepseek-v3").kv_bytes_per_token() == 61 * (512 + 64) * 2 == 70272
    assert get_model("deepseek-v2-lite").kv_bytes_per_token() == 27 * (512 + 64) * 2
    assert get_model("olmoe").kv_bytes(4096) == 4096 * 16 * 2 * 16 * 128 * 2


def test_kv_bytes_cap_sliding_window_layers_and_add_mamba_state():
    gpt = get_model("gpt-oss-20b")
    per_layer_token = 2 * 8 * 64 * 2
    assert gpt.kv_bytes(1000) == 12 * 1000 * per_layer_token + 12 * 128 * per_layer_token
    assert gpt.kv_bytes(100) == 24 * 100 * per_layer_token
    assert gpt.kv_bytes(0) == 0
    jamba = get_model("jamba-mini-1.6")
    state = 28 * 8192 * (4 + 16) * 2
    assert jamba.kv_bytes(1000) == 4 * 1000 * 2 * 8 * 128 * 2 + state
    assert jamba.state_bytes_per_sequence == state
    assert jamba.kv_bytes_per_token() == 4 * 2 * 8 * 128 * 2


# ------------------------------------------------------------------ FLOPs
def test_flops_per_token_by_hand_for_mixtral():
    spec = get_model("mixtral-8x7b")
    fb = spec.flops_per_token(1000)
    assert spec.expert_flops_per_token == 2 * 3 * 4096 * 14336
    assert fb.routed_experts == 32 * 2 * spec.expert_flops_per_token
    assert fb.attention_projections == 32 * 2 * (2 * 4096 * 4096 + 2 * 4096 * 1024)
    assert fb.attention_scores == 32 * 4 * 32 * 128 * 1000
    assert fb.router == 32 * 2 * 4096 * 8
    assert fb.lm_head == 2 * 4096 * 32000
    assert fb.dense_ffn == fb.shared_experts == fb.mamba == 0
    assert fb.total == pytest.approx(2 * spec.active_params_without_embedding + fb.attention_scores, rel=1e-4)


def test_mla_scores_use_the_absorbed_latent_form():
    spec = get_model("deepseek-v3")
    fb = spec.flops_per_token(10)
    assert fb.attention_scores == 61 * 10 * 2 * 128 * (2 * 512 + 64)
    assert fb.dense_ffn == 3 * 2 * 3 * 7168 * 18432
    assert fb.shared_experts == 58 * 2 * 3 * 7168 * 2048


def step_total(spec, batch, contexts):
    flops = sum(spec.dense_layer_flops(j, batch_size=batch, context_len=contexts) for j in range(spec.num_moe_layers))
    return flops + spec.head_flops(batch, context_len=contexts)


@pytest.mark.parametrize("name", list_models())
def test_every_preset_is_consistent(name):
    spec = get_model(name)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.with_overrides() == spec
    counts = spec.param_counts
    assert counts.total == spec.total_params and counts.routed_experts == (
        spec.num_moe_layers * spec.num_experts * spec.expert_params
    )
    assert 0 < spec.active_params_without_embedding <= spec.active_params < spec.total_params
    assert spec.expert_bytes("bf16") == 2 * spec.expert_params
    # the per-MoE-layer segments cover every model layer exactly once
    covered = [layer for j in range(spec.num_moe_layers) for layer in spec.segment_layers(j)]
    tail = [i for i in range(spec.num_layers) if i > spec.moe_layers[-1]]
    assert sorted(covered + tail) == list(range(spec.num_layers))
    for context in (1, 300, 20000):
        routed = spec.num_moe_layers * spec.top_k * spec.expert_flops_per_token
        assert step_total(spec, 1, context) + routed == pytest.approx(spec.flops_per_token(context).total, rel=1e-12)


def test_step_costs_scale_with_batch_and_accept_per_token_contexts():
    spec = get_model("gpt-oss-20b")
    contexts = np.array([5, 100, 129, 4000])
    per_token = sum(step_total(spec, 1, int(c)) for c in contexts)
    assert step_total(spec, 4, contexts) == pytest.approx(per_token, rel=1e-12)
    assert step_total(spec, 4, list(contexts)) == step_total(spec, 4, contexts)
    assert step_total(spec, 3, 50) == pytest.approx(3 * step_total(spec, 1, 50), rel=1e-12)
    # bytes: KV is read per attended key; GPT-OSS layer 0 slides over 128 keys, layer 1 attends to all
    kv = 2 * 8 * 64 * 2
    assert spec.dense_layer_bytes(0, context_len=1000) == spec.dense_layer_bytes(0, context_len=999)
    assert spec.dense_layer_bytes(1, context_len=2000) - spec.dense_layer_bytes(1, context_len=1000) == 1000 * kv


def test_dense_bytes_read_weights_once_and_kv_per_key():
    spec = get_model("mixtral-8x7b")
    kv = 2 * 8 * 128 * 2
    weights = spec.layer_weight_bytes(5)
    assert spec.dense_layer_bytes(5, batch_size=1, context_len=0) == weights + kv
    assert spec.dense_layer_bytes(5, batch_size=8, context_len=100) == weights + 8 * (100 + 1) * kv
    assert spec.dense_layer_bytes(5, batch_size=2, context_len=[10, 20]) == weights + (30 + 2) * kv
    emb_row = 4096 * 2
    assert spec.dense_layer_bytes(0, batch_size=3) == spec.layer_weight_bytes(0) + 3 * kv + 3 * emb_row
    assert spec.head_bytes() == 32000 * 4096 * 2 + 4096 * 2
    assert spec.dense_layer_bytes(5, fmt="int4") < weights


def test_step_sliding_window_caps_keys():
    spec = get_model("gpt-oss-20b")
    sliding, full = spec.layers[0], spec.layers[1]
    assert sliding.window == 128 and full.window is None
    score = 4 * 64 * 64
    assert spec.dense_layer_flops(0, context_len=1000) - spec.dense_layer_flops(0, context_len=0) == 128 * score
    assert spec.dense_layer_flops(1, context_len=1000) - spec.dense_layer_flops(1, context_len=0) == 1000 * score


def test_step_argument_errors_name_the_argument():
    spec = get_model("olmoe")
    with pytest.raises(ConfigError, match=r"^moe_layer: expected a MoE-layer \(trace-layer\) index in 0..15, got 16$"):
        spec.dense_layer_flops(16)
    with pytest.raises(ConfigError, match=r"^context_len: expected one value per token \(2\), got shape \(3,\)$"):
        spec.dense_layer_flops(0, batch_size=2, context_len=[1, 2, 3])
    with pytest.raises(ConfigError, match="^batch_size: expected an integer >= 1, got 0$"):
        spec.dense_layer_bytes(0, batch_size=0)
    with pytest.raises(ConfigError, match="^context_len: expected non-negative integers"):
        spec.head_flops(2, context_len=[-1, 3])
    with pytest.raises(ConfigError, match="^kv_format: unknown KV-cache format 'int4'; use one of bf16, fp16, fp32"):
        spec.kv_bytes(10, "int4")


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"top_k": 0}, "model.top_k: expected 1..num_experts (64), got 0"),
        ({"top_k": 65}, "model.top_k: expected 1..num_experts (64), got 65"),
        ({"num_experts": 0}, "model.num_experts: expected an integer >= 1, got 0"),
        ({"moe_layers": [3, 3]}, "model.moe_layers: expected strictly increasing layer indices, got 3 then 3"),
        ({"moe_layers": [0, 16]}, "model.moe_layers: layer 16 at position 1 is >= num_layers (16); indices run 0..15"),
        ({"moe_layers": []}, "model.moe_layers: expected at least one layer index in 0..15, got an empty list"),
        ({"moe_layers": list(range(1, 16))}, "model.dense_ffn_size: layers 0 are not in moe_layers"),
        ({"weight_format": "int3"}, "model.weight_format: unknown weight format 'int3'; use one of fp32, bf16"),
        ({"expert_format": "fp9"}, "model.expert_format: unknown weight format 'fp9'"),
        ({"num_kv_heads": 5}, "model.num_kv_heads: expected a divisor of num_heads (16), got 5"),
        ({"kv_lora_rank": 512}, "model.qk_nope_head_dim: multi-head latent attention needs all of"),
        ({"q_lora_rank": 64}, "model.q_lora_rank: only used with multi-head latent attention"),
        ({"sliding_layers": [1]}, "model.sliding_window: expected a window length >= 1"),
        ({"router_num_groups": 3}, "model.router_num_groups: expected a divisor of num_experts (64), got 3"),
        ({"router_num_groups": 64}, "model.top_k: expected <= router_topk_groups x experts per group (1), got 8"),
        ({"num_layers": "16"}, "model.num_layers: expected an integer, got '16'"),
        ({"gated_ffn": 1}, "model.gated_ffn: expected true or false, got 1"),
        ({"norm": "batchnorm"}, "model.norm: expected one of rmsnorm, layernorm, got 'batchnorm'"),
        ({"num_shared_experts": 2}, "model.shared_expert_ffn_size: expected >= 1 with num_shared_experts = 2, got 0"),
        ({"mamba_layers": [1]}, "model.mamba_d_state: expected >= 1 because mamba_layers is set, got 0"),
        ({"tpo_k": 2}, "model.tpo_k: unknown field"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_field(overrides, message):
    spec = get_model("olmoe")  # 16 layers, 64 experts, top-8, 16 heads
    with pytest.raises(ConfigError) as info:
        spec.with_overrides(**overrides)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text


def test_construction_paths_all_validate():
    spec = get_model("olmoe")
    with pytest.raises(ConfigError, match=r"^model\.top_k: expected 1\.\.num_experts \(64\), got 0$"):
        dataclasses.replace(spec, top_k=0)
    with pytest.raises(ConfigError, match=r"^model\.top_k: "):
        ModelSpec(**{**spec.to_dict(), "top_k": 0})
    # head_dim given explicitly: hidden_size need not be a multiple of num_heads
    assert spec.with_overrides(hidden_size=2050).hidden_size == 2050
    with pytest.raises(ConfigError, match=r"^model\.head_dim: hidden_size \(2050\) is not a multiple of num_heads"):
        spec.with_overrides(hidden_size=2050, head_dim=None)


def test_unknown_names_fail_listing_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"^model: unknown model preset 'mixtrall'; use one of mixtral-8x7b, "
        r".*did you mean 'mixtral-8x7b'",
    ):
        get_model("mixtrall")
    with pytest.raises(ConfigError, match=r"^weight_format: unknown weight format 'int3'; use one of .*hqq-2bit"):
        get_format("int3")
    with pytest.raises(ConfigError, match=r"^scenario\.model\.top_k: expected 1..num_experts \(8\), got 9$"):
        model_from_config({"preset": "mixtral-8x7b", "top_k": 9}, where="scenario.model")
    with pytest.raises(ConfigError, match=r"^scenario\.model\.preset: unknown model preset 'x'"):
        model_from_config({"preset": "x"}, where="scenario.model")
    with pytest.raises(ConfigError, match=r"^m\.num_layers: required field is missing"):
        model_from_config({"name": "x"}, where="m")
    with pytest.raises(ConfigError, match=r"^model: expected a preset name"):
        model_from_config(5)


def test_names_and_aliases_resolve():
    assert get_model("Mixtral-8x7B").name == "mixtral-8x7b"
    assert get_model("mixtral").name == "mixtral-8x7b"
    assert get_model("gpt_oss_20b").name == "gpt-oss-20b"
    assert get_format("bfloat16").name == "bf16"
    assert model_from_config({"preset": "qwen3-30b-a3b", "top_k": 4}).top_k == 4
    with pytest.raises(ValueError, match="already registered"):
        register_model(get_model("mixtral-8x7b"))


def test_overrides_and_granularity_keep_the_counts_they_should():
    base = get_model("qwen3-30b-a3b")
    fine = base.with_granularity(4)
    assert (fine.num_experts, fine.top_k, fine.expert_ffn_size) == (512, 32, 192)
    router_growth = 48 * 3 * 128 * 2048
    assert fine.total_params - base.total_params == router_growth
    assert fine.active_params - base.active_params == router_growth
    assert fine.top_k * fine.expert_flops_per_token == base.top_k * base.expert_flops_per_token
    with pytest.raises(ConfigError, match="^granularity: expert_ffn_size \\(768\\) is not divisible by 5"):
        base.with_granularity(5)
    v3 = get_model("deepseek-v3").with_granularity(2)
    assert (v3.router_num_groups, v3.top_k, v3.num_experts) == (8, 16, 512)
    assert moe_layer_indices(8, first_dense=1) == (1, 2, 3, 4, 5, 6, 7)
    assert moe_layer_indices(8, every=2, offset=1) == (1, 3, 5, 7)


def test_custom_format_registers_and_applies():
    fmt = WeightFormat(name="test-int6-g64", value_bits=6, word_bits=24, block_cols=64, scale_bits=16)
    assert fmt.values_per_word == 4 and fmt.bits_per_param() == 6 + 16 / 64
    spec = get_model("olmoe")
    assert spec.expert_bytes(fmt) == 3 * (2048 * 1024 * 6 // 8 + (2048 * 1024 // 64) * 2)
    with pytest.raises(ConfigError, match=r"^format\['bad'\]\.word_bits: expected a container width in 12..64 bits"):
        WeightFormat(name="bad", value_bits=12, word_bits=8)


# ------------------------------------------------------------------ random specs
@st.composite
def model_specs(draw):
    num_layers = draw(st.integers(1, 6))
    moe = sorted(draw(st.sets(st.integers(0, num_layers - 1), min_size=1)))
    num_experts = draw(st.integers(1, 16))
    heads = draw(st.sampled_from([1, 2, 4, 8]))
    kind = draw(st.sampled_from(["gqa", "mla", "mamba"]))
    fields = {
        "name": "random",
        "num_layers": num_layers,
        "hidden_size": 64 * draw(st.integers(1, 4)),
        "vocab_size": draw(st.integers(1, 500)),
        "moe_layers": tuple(moe),
        "num_experts": num_experts,
        "top_k": draw(st.integers(1, num_experts)),
        "expert_ffn_size": draw(st.integers(1, 300)),
        "num_shared_experts": draw(st.integers(0, 2)),
        "shared_expert_ffn_size": draw(st.integers(1, 100)),
        "dense_ffn_size": draw(st.integers(1, 300)),
        "gated_ffn": draw(st.booleans()),
        "expert_bias": draw(st.booleans()),
        "num_heads": heads,
        "num_kv_heads": draw(st.sampled_from([h for h in (1, 2, 4, 8) if heads % h == 0])),
        "head_dim": draw(st.integers(1, 64)),
        "tie_word_embeddings": draw(st.booleans()),
        "norm": draw(st.sampled_from(["rmsnorm", "layernorm"])),
        "weight_format": draw(st.sampled_from(list_formats())),
        "expert_format": draw(st.sampled_from(list_formats())),
    }
    if kind == "mla":
        fields.update(
            kv_lora_rank=draw(st.integers(1, 64)),
            qk_nope_head_dim=draw(st.integers(1, 32)),
            qk_rope_head_dim=draw(st.integers(1, 16)),
            v_head_dim=draw(st.integers(1, 32)),
            q_lora_rank=draw(st.none() | st.integers(1, 64)),
        )
    if kind == "mamba" and num_layers > 1:
        fields.update(mamba_layers=(0,), mamba_d_state=4, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=8)
    elif draw(st.booleans()):
        fields.update(sliding_window=draw(st.integers(1, 50)), sliding_layers=(num_layers - 1,))
    return ModelSpec(**fields)


@given(spec=model_specs(), context=st.integers(0, 200), batch=st.integers(1, 4))
def test_random_specs_keep_the_simulator_contract(spec, context, batch):
    routed = spec.num_moe_layers * spec.top_k * spec.expert_flops_per_token
    assert step_total(spec, 1, context) + routed == pytest.approx(spec.flops_per_token(context).total, rel=1e-12)
    assert step_total(spec, batch, context) == pytest.approx(batch * step_total(spec, 1, context), rel=1e-12)
    counts = spec.param_counts
    assert counts.total == spec.total_params >= spec.active_params
    assert spec.byte_counts().total == spec.total_bytes()
    assert spec.kv_bytes(context + 1) >= spec.kv_bytes(context)
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@given(spec=model_specs(), seed=st.integers(0, 2**32 - 1), num_steps=st.integers(1, 6))
def test_step_costs_equal_the_per_call_methods_exactly(spec, seed, num_steps):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 5, num_steps)
    contexts = rng.integers(0, 120, tokens.sum())
    logits = rng.integers(0, 2, num_steps) * tokens
    fmt = str(rng.choice(list_formats()))
    costs = spec.step_costs(tokens, contexts, logit_tokens=logits, fmt=fmt, kv_format="fp8")
    assert costs.dense_flops.shape == costs.dense_bytes.shape == (num_steps, spec.num_moe_layers)
    offsets = np.concatenate([[0], np.cumsum(tokens)])
    for s in range(num_steps):
        batch, ctx = int(tokens[s]), contexts[offsets[s] : offsets[s + 1]]
        for j in range(spec.num_moe_layers):
            assert costs.dense_flops[s, j] == spec.dense_layer_flops(j, batch_size=batch, context_len=ctx)
            assert costs.dense_bytes[s, j] == spec.dense_layer_bytes(
                j, batch_size=batch, context_len=ctx, fmt=fmt, kv_format="fp8"
            )
        kwargs = {"context_len": ctx, "logit_tokens": int(logits[s])}
        assert costs.head_flops[s] == spec.head_flops(batch, **kwargs)
        assert costs.head_bytes[s] == spec.head_bytes(batch, fmt=fmt, kv_format="fp8", **kwargs)


def test_step_costs_head_needs_logit_tokens_and_validates_inputs():
    spec = get_model("mixtral-8x7b")
    costs = spec.step_costs([3, 1], [5, 6, 7, 8], logit_tokens=[0, 1])
    assert costs.head_flops.tolist() == [0.0, 2 * 4096 * 32000]
    assert costs.head_bytes.tolist() == [0, 32000 * 4096 * 2 + 4096 * 2]
    assert not costs.dense_flops.flags.writeable
    uniform = spec.step_costs([2, 2], 100)
    assert uniform.dense_flops[0, 3] == spec.dense_layer_flops(3, batch_size=2, context_len=100)
    with pytest.raises(ConfigError, match=r"^num_tokens: expected a 1-D array of integers >= 1"):
        spec.step_costs([0, 1], [1])
    with pytest.raises(ConfigError, match=r"^context_len: expected one value per token \(4\), got shape \(3,\)$"):
        spec.step_costs([3, 1], [5, 6, 7])
    with pytest.raises(ConfigError, match=r"^logit_tokens: expected one non-negative integer per step \(2\)"):
        spec.step_costs([3, 1], [5, 6, 7, 8], logit_tokens=[1])


# ------------------------------------------------------------------ import cost and CLI
def test_import_does_not_load_numba():
    code = "import sys, moesim.models, moesim.cli.models; sys.exit('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_cli_lists_presets(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["model", "E", "k", "MoE"]
    for name in list_models():
        assert name in out
    row = next(line for line in out.splitlines() if line.startswith("mixtral-8x7b "))
    assert row.split()[1:7] == ["8", "2", "32/32", "46.70B", "12.88B", "bf16"]


def test_cli_json_and_sheet(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(list_models())
    assert main(["models", "deepseek-v3", "--json", "--context", "1", "8192"]) == 0
    sheet = json.loads(capsys.readouterr().out)
    spec = get_model("deepseek-v3")
    assert sheet["params"]["total"] == spec.total_params
    assert sheet["bytes"]["expert"] == spec.expert_bytes("fp8-block")
    assert [f["context_len"] for f in sheet["flops_per_token"]] == [1, 8192]
    assert sheet["kv_bytes_per_token"]["bf16"] == 70272
    assert main(["models", "gpt-oss-20b"]) == 0
    text = capsys.readouterr().out
    assert "experts mxfp4" in text and "window 128 on 12 layers" in text and "hqq-2bit" in text
    assert main(["models", "--formats", "--json"]) == 0
    formats = json.loads(capsys.readouterr().out)
    assert {f["name"]: f["bits_per_param"] for f in formats}["mxfp4"] == 4.25


def test_cli_unknown_model_is_one_line_exit_2(capsys):
    assert main(["models", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moesim: error: NAME: unknown model preset 'nope'") and err.count("\n") == 1
