"""Preset :class:`ModelSpec` s of real MoE models.

Each preset copies the architecture numbers of the model's Hugging Face ``config.json`` (the
repository is in ``hf_repo`` and in the comment above it) and, where the authors publish them, the
total / active parameter counts. The configs were read from the collection distributed with
ljcleo/moe-lrc (MIT, commit 7b3ca46); the five marked "abbreviated" were checked against the
models' own published configs. Nothing here reads files at run time.

Left out on purpose: JetMoE-8B (mixture-of-attention-heads experts, which this spec does not
model), Yuan2.0-M32 (localized-filtering convolutional attention and an attention router),
OpenMoE-8B (its published 11.86B count is not reproducible from the config alone), and the
encoder-decoder Switch Transformers and NLLB-MoE.
"""

from __future__ import annotations

from moesim.models.spec import ModelSpec, moe_layer_indices
from moesim.policies.registry import Registry

MODELS: Registry[ModelSpec] = Registry("model preset")


def register_model(spec: ModelSpec, *, aliases: tuple[str, ...] = ()) -> ModelSpec:
    """Add ``spec`` under ``spec.name`` (``ValueError`` if the name is taken)."""
    return MODELS.register(spec.name, aliases=aliases)(spec)


def get_model(name: object, *, field: str = "model") -> ModelSpec:
    """The preset called ``name`` (case-insensitive; ``_`` and ``-`` alike; aliases accepted).

    Raises
    ------
    ConfigError
        ``model: unknown model preset 'x'; use one of mixtral-8x7b, ...``.
    """
    return MODELS.get(name, field=field)


def list_models() -> tuple[str, ...]:
    """Preset names in registration order."""
    return MODELS.names()


def _all(num_layers: int) -> tuple[int, ...]:
    return tuple(range(num_layers))


# fmt: off
# ---------------------------------------------------------------------------- Mistral
# mistralai/Mixtral-8x7B-v0.1 config.json; 46.7B total / 12.9B active per token: Mistral AI,
# "Mixtral of experts" (2023-12-11) and Jiang et al. 2024 (arXiv:2401.04088).
register_model(ModelSpec(
    name="mixtral-8x7b", architecture="mixtral", hf_repo="mistralai/Mixtral-8x7B-v0.1",
    num_layers=32, hidden_size=4096, vocab_size=32000, moe_layers=_all(32),
    num_experts=8, top_k=2, expert_ffn_size=14336, router_norm_topk=True,
    num_heads=32, num_kv_heads=8, head_dim=128,
    published_total_params=46.7e9, published_active_params=12.9e9,
), aliases=("mixtral", "mixtral-8x7b-v0.1", "mixtral-8x7b-instruct"))

# mistralai/Mixtral-8x22B-v0.1 config.json (abbreviated copy); 141B / 39B: Mistral AI, "Cheaper,
# Better, Faster, Stronger" (2024-04-17).
register_model(ModelSpec(
    name="mixtral-8x22b", architecture="mixtral", hf_repo="mistralai/Mixtral-8x22B-v0.1",
    num_layers=56, hidden_size=6144, vocab_size=32768, moe_layers=_all(56),
    num_experts=8, top_k=2, expert_ffn_size=16384, router_norm_topk=True,
    num_heads=48, num_kv_heads=8, head_dim=128,
    published_total_params=141e9, published_active_params=39e9,
), aliases=("mixtral-8x22b-v0.1",))

# ---------------------------------------------------------------------------- AllenAI
# allenai/OLMoE-1B-7B-0125 config.json (checkpoint stored in float32; served in bf16);
# 6.92B total (moe-lrc index.jsonl), 1.3B active (Muennighoff et al. 2024, arXiv:2409.02060).
# Its q/k RMSNorms (65k parameters) are not modelled.
register_model(ModelSpec(
    name="olmoe-1b-7b", architecture="olmoe", hf_repo="allenai/OLMoE-1B-7B-0125",
    num_layers=16, hidden_size=2048, vocab_size=50304, moe_layers=_all(16),
    num_experts=64, top_k=8, expert_ffn_size=1024,
    num_heads=16, num_kv_heads=16, head_dim=128,
    published_total_params=6.92e9, published_active_params=1.3e9,
), aliases=("olmoe", "olmoe-1b-7b-0125", "olmoe-1b-7b-0924"))

# ---------------------------------------------------------------------------- Qwen
# Qwen/Qwen1.5-MoE-A2.7B config.json: one shared expert of 5632 (= 4 x 1408) with a sigmoid
# gate; q/k/v biases. 14.32B total (index.jsonl), 2.7B active (model card).
register_model(ModelSpec(
    name="qwen1.5-moe-a2.7b", architecture="qwen2_moe", hf_repo="Qwen/Qwen1.5-MoE-A2.7B",
    num_layers=24, hidden_size=2048, vocab_size=151936, moe_layers=_all(24),
    num_experts=60, top_k=4, expert_ffn_size=1408,
    num_shared_experts=1, shared_expert_ffn_size=5632, shared_expert_gate=True,
    num_heads=16, num_kv_heads=16, head_dim=128, qkv_bias=True,
    published_total_params=14.32e9, published_active_params=2.7e9,
), aliases=("qwen1.5-moe",))

# Qwen/Qwen2-57B-A14B config.json: shared expert 20480 with gate; GQA 28/4. 57.41B total
# (index.jsonl), 14B active (model card).
register_model(ModelSpec(
    name="qwen2-57b-a14b", architecture="qwen2_moe", hf_repo="Qwen/Qwen2-57B-A14B",
    num_layers=28, hidden_size=3584, vocab_size=151936, moe_layers=_all(28),
    num_experts=64, top_k=8, expert_ffn_size=2560,
    num_shared_experts=1, shared_expert_ffn_size=20480, shared_expert_gate=True,
    num_heads=28, num_kv_heads=4, head_dim=128, qkv_bias=True,
    published_total_params=57.41e9, published_active_params=14e9,
), aliases=("qwen2-moe",))

# Qwen/Qwen3-30B-A3B config.json; 30.5B total / 3.3B active (Qwen3 model card).
# Per-head q/k RMSNorms (12k parameters) are not modelled.
register_model(ModelSpec(
    name="qwen3-30b-a3b", architecture="qwen3_moe", hf_repo="Qwen/Qwen3-30B-A3B",
    num_layers=48, hidden_size=2048, vocab_size=151936, moe_layers=_all(48),
    num_experts=128, top_k=8, expert_ffn_size=768, router_norm_topk=True,
    num_heads=32, num_kv_heads=4, head_dim=128,
    published_total_params=30.5e9, published_active_params=3.3e9,
), aliases=("qwen3-moe",))

# Qwen/Qwen3-235B-A22B config.json (abbreviated copy); 235B / 22B (Qwen3 model card).
register_model(ModelSpec(
    name="qwen3-235b-a22b", architecture="qwen3_moe", hf_repo="Qwen/Qwen3-235B-A22B",
    num_layers=94, hidden_size=4096, vocab_size=151936, moe_layers=_all(94),
    num_experts=128, top_k=8, expert_ffn_size=1536, router_norm_topk=True,
    num_heads=64, num_kv_heads=4, head_dim=128,
    published_total_params=235e9, published_active_params=22e9,
))

# ---------------------------------------------------------------------------- DeepSeek
# deepseek-ai/deepseek-moe-16b-base config.json: first layer dense (10944), 2 shared + 64 routed
# experts of 1408, top-6 (Dai et al. 2024, arXiv:2401.06066). 16.38B total (index.jsonl).
register_model(ModelSpec(
    name="deepseek-moe-16b", architecture="deepseek", hf_repo="deepseek-ai/deepseek-moe-16b-base",
    num_layers=28, hidden_size=2048, vocab_size=102400, moe_layers=moe_layer_indices(28, first_dense=1),
    num_experts=64, top_k=6, expert_ffn_size=1408, num_shared_experts=2, shared_expert_ffn_size=1408,
    dense_ffn_size=10944, num_heads=16, num_kv_heads=16, head_dim=128,
    published_total_params=16.38e9,
), aliases=("deepseekmoe-16b", "deepseek-moe"))

# deepseek-ai/DeepSeek-V2-Lite config.json: MLA without query compression (q_lora_rank null).
# 15.71B total (index.jsonl), 2.4B active (DeepSeek-V2 paper, arXiv:2405.04434, appendix B).
register_model(ModelSpec(
    name="deepseek-v2-lite", architecture="deepseek_v2", hf_repo="deepseek-ai/DeepSeek-V2-Lite",
    num_layers=27, hidden_size=2048, vocab_size=102400, moe_layers=moe_layer_indices(27, first_dense=1),
    num_experts=64, top_k=6, expert_ffn_size=1408, num_shared_experts=2, shared_expert_ffn_size=1408,
    dense_ffn_size=10944, num_heads=16,
    kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    published_total_params=15.71e9, published_active_params=2.4e9,
))

# deepseek-ai/DeepSeek-V3 config.json (abbreviated copy): 3 dense layers, 256 routed + 1 shared,
# sigmoid scores with a correction bias, group-limited routing (8 groups, best 4), MLA. Released in
# FP8 with 128x128 block scales (embeddings, norms and router in bf16). 671B / 37B (arXiv:2412.19437);
# the 14B multi-token-prediction module is not part of those counts and not modelled.
register_model(ModelSpec(
    name="deepseek-v3", architecture="deepseek_v3", hf_repo="deepseek-ai/DeepSeek-V3",
    num_layers=61, hidden_size=7168, vocab_size=129280, moe_layers=moe_layer_indices(61, first_dense=3),
    num_experts=256, top_k=8, expert_ffn_size=2048, num_shared_experts=1, shared_expert_ffn_size=2048,
    dense_ffn_size=18432, router_scoring="sigmoid", router_norm_topk=True, router_bias=True,
    router_num_groups=8, router_topk_groups=4, num_heads=128,
    q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    weight_format="fp8-block",
    published_total_params=671e9, published_active_params=37e9,
), aliases=("deepseek-v3-base", "deepseek-r1"))

# ---------------------------------------------------------------------------- OpenAI
# openai/gpt-oss-20b config.json (abbreviated copy): biases on attention, experts and router;
# sliding window 128 on even layers (layer_types alternate sliding/full); experts stored in MXFP4,
# the rest in bf16. 20.9B total / 3.6B active (OpenAI gpt-oss model card, 2025), whose active count
# excludes the embedding table. Attention sinks (64 per layer) are not modelled.
_GPT_OSS = {
    "architecture": "gpt_oss", "hidden_size": 2880, "vocab_size": 201088, "top_k": 4, "expert_ffn_size": 2880,
    "expert_bias": True, "router_bias": True, "router_norm_topk": True, "activation": "swiglu-clamped",
    "num_heads": 64, "num_kv_heads": 8, "head_dim": 64, "qkv_bias": True, "out_bias": True, "sliding_window": 128,
    "expert_format": "mxfp4",
}
register_model(ModelSpec(
    name="gpt-oss-20b", hf_repo="openai/gpt-oss-20b", num_layers=24, moe_layers=_all(24), num_experts=32,
    sliding_layers=tuple(range(0, 24, 2)),
    published_total_params=20.9e9, published_active_params=3.6e9, **_GPT_OSS,
))
# openai/gpt-oss-120b config.json (abbreviated copy); 116.8B / 5.1B (model card).
register_model(ModelSpec(
    name="gpt-oss-120b", hf_repo="openai/gpt-oss-120b", num_layers=36, moe_layers=_all(36), num_experts=128,
    sliding_layers=tuple(range(0, 36, 2)),
    published_total_params=116.8e9, published_active_params=5.1e9, **_GPT_OSS,
))

# ---------------------------------------------------------------------------- Microsoft
# microsoft/Phi-3.5-MoE-instruct config.json: LayerNorm, biases on attention and LM head,
# SparseMixer routing, sliding_window 131072 on every layer (as configured). 41.87B total
# (index.jsonl), 6.6B active (model card).
_PHI_MOE = {
    "architecture": "phimoe", "num_layers": 32, "hidden_size": 4096, "vocab_size": 32064, "moe_layers": _all(32),
    "num_experts": 16, "top_k": 2, "expert_ffn_size": 6400, "router_scoring": "sparsemixer",
    "num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "qkv_bias": True, "out_bias": True, "lm_head_bias": True,
    "norm": "layernorm", "sliding_layers": _all(32),
}
register_model(ModelSpec(
    name="phi-3.5-moe", hf_repo="microsoft/Phi-3.5-MoE-instruct", sliding_window=131072,
    published_total_params=41.87e9, published_active_params=6.6e9, **_PHI_MOE,
), aliases=("phi3.5-moe", "phi-3.5-moe-instruct"))
# microsoft/GRIN-MoE config.json: the Phi-3.5-MoE architecture with sliding_window 2047.
# 41.87B total (index.jsonl), 6.6B active (model card).
register_model(ModelSpec(
    name="grin-moe", hf_repo="microsoft/GRIN-MoE", sliding_window=2047,
    published_total_params=41.87e9, published_active_params=6.6e9, **_PHI_MOE,
))

# ---------------------------------------------------------------------------- others
# ai21labs/AI21-Jamba-Mini-1.6 config.json: attention every 8th layer from 4, Mamba elsewhere;
# MoE every 2nd layer from 1, dense 14336 FFN elsewhere. 51.57B total (index.jsonl), 12B active
# (AI21 model card).
register_model(ModelSpec(
    name="jamba-mini-1.6", architecture="jamba", hf_repo="ai21labs/AI21-Jamba-Mini-1.6",
    num_layers=32, hidden_size=4096, vocab_size=65536, moe_layers=moe_layer_indices(32, every=2, offset=1),
    num_experts=16, top_k=2, expert_ffn_size=14336, dense_ffn_size=14336,
    num_heads=32, num_kv_heads=8, head_dim=128,
    mamba_layers=tuple(i for i in range(32) if i % 8 != 4),
    mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=256,
    published_total_params=51.57e9, published_active_params=12e9,
), aliases=("jamba-mini", "jamba-1.5-mini"))

# openbmb/MiniCPM-MoE-8x2B config.json: shared input/output embedding (MiniCPM ties them).
# 13.87B total (index.jsonl).
register_model(ModelSpec(
    name="minicpm-moe-8x2b", architecture="minicpm", hf_repo="openbmb/MiniCPM-MoE-8x2B",
    num_layers=40, hidden_size=2304, vocab_size=122753, moe_layers=_all(40),
    num_experts=8, top_k=2, expert_ffn_size=5760, num_heads=36, num_kv_heads=36, head_dim=64,
    tie_word_embeddings=True,
    published_total_params=13.87e9,
), aliases=("minicpm-moe",))

# xverse/XVERSE-MoE-A4.2B config.json: 2 shared + 64 routed experts of 1728, top-6, MHA with
# 80-dim heads. 25.78B total (index.jsonl), 4.2B active (model card).
register_model(ModelSpec(
    name="xverse-moe-a4.2b", architecture="xverse", hf_repo="xverse/XVERSE-MoE-A4.2B",
    num_layers=28, hidden_size=2560, vocab_size=100534, moe_layers=_all(28),
    num_experts=64, top_k=6, expert_ffn_size=1728, num_shared_experts=2, shared_expert_ffn_size=1728,
    num_heads=32, num_kv_heads=32, head_dim=80,
    published_total_params=25.78e9, published_active_params=4.2e9,
), aliases=("xverse-moe",))

# ibm/PowerMoE-3b config.json (granitemoe): 40 experts of 512, top-8, tied embeddings.
# 3.3B total (index.jsonl).
register_model(ModelSpec(
    name="powermoe-3b", architecture="granitemoe", hf_repo="ibm/PowerMoE-3b",
    num_layers=32, hidden_size=1536, vocab_size=49152, moe_layers=_all(32),
    num_experts=40, top_k=8, expert_ffn_size=512, num_heads=24, num_kv_heads=8, head_dim=64,
    tie_word_embeddings=True,
    published_total_params=3.3e9,
))

# llama-moe/LLaMA-MoE-v1-3_5B-4_16 config.json: LLaMA-2-7B FFNs split into 16 experts of 688,
# top-4 (its MLP router's 256-parameter second layer is not modelled). 6.74B total (index.jsonl),
# 3.5B active (the name).
register_model(ModelSpec(
    name="llama-moe-3.5b", architecture="llama_moe", hf_repo="llama-moe/LLaMA-MoE-v1-3_5B-4_16",
    num_layers=32, hidden_size=4096, vocab_size=32000, moe_layers=_all(32),
    num_experts=16, top_k=4, expert_ffn_size=688, num_heads=32, num_kv_heads=32, head_dim=128,
    published_total_params=6.74e9, published_active_params=3.5e9,
), aliases=("llama-moe-v1-3.5b",))

# llama-moe/LLaMA-MoE-v2-3_8B-2_8-sft config.json (Mixtral layout from LLaMA-3-8B): 8 experts of
# 1792, top-2. 8.03B total (index.jsonl), 3.8B active (the name).
register_model(ModelSpec(
    name="llama-moe-v2-3.8b", architecture="mixtral", hf_repo="llama-moe/LLaMA-MoE-v2-3_8B-2_8-sft",
    num_layers=32, hidden_size=4096, vocab_size=128256, moe_layers=_all(32),
    num_experts=8, top_k=2, expert_ffn_size=1792, num_heads=32, num_kv_heads=8, head_dim=128,
    published_total_params=8.03e9, published_active_params=3.8e9,
))
# fmt: on
