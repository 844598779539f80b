"""Trace capture from Hugging Face MoE models (moesim.capture), on tiny random-weight models.

The reference for every architecture is written here from the transformers source, in numpy, and
applied to logits recomputed from the hidden states each router received (captured by the test's
own pre-hooks): it is not the code path the capture records, so the two can disagree.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from moesim.errors import CaptureError, ConfigError, MissingExtraError, TraceError

pytestmark = pytest.mark.capture

VOCAB = 128
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)
MLA = dict(num_key_value_heads=4, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)
# model_type -> (config overrides, expected moe_layers, expected num_shared_experts)
ARCHS = {
    "mixtral": (dict(num_local_experts=8, num_experts_per_tok=2), [0, 1, 2], 0),
    "qwen2_moe": (
        dict(
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=24,
            mlp_only_layers=[0],
            norm_topk_prob=False,
        ),
        [1, 2],
        1,
    ),
    "qwen3_moe": (
        dict(
            num_experts=8,
            num_experts_per_tok=3,
            moe_intermediate_size=16,
            mlp_only_layers=[1],
            head_dim=8,
            norm_topk_prob=True,
        ),
        [0, 2],
        0,
    ),
    "olmoe": (dict(num_experts=8, num_experts_per_tok=2), [0, 1, 2], 0),
    "deepseek_v2": (
        dict(
            **MLA,
            n_routed_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            n_shared_experts=2,
            first_k_dense_replace=1,
            topk_method="group_limited_greedy",
            n_group=4,
            topk_group=2,
            q_lora_rank=None,
            routed_scaling_factor=1.5,
        ),
        [1, 2],
        2,
    ),
    "deepseek_v3": (
        dict(
            **MLA,
            n_routed_experts=8,
            num_experts_per_tok=3,
            moe_intermediate_size=16,
            n_shared_experts=1,
            first_k_dense_replace=1,
            n_group=4,
            topk_group=2,
            q_lora_rank=16,
            routed_scaling_factor=2.5,
        ),
        [1, 2],
        1,
    ),
    "gpt_oss": (
        dict(
            num_local_experts=8,
            num_experts_per_tok=2,
            head_dim=8,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        ),
        [0, 1, 2],
        0,
    ),
    "phimoe": (dict(num_local_experts=8, num_experts_per_tok=2), [0, 1, 2], 0),
    "granitemoe": (dict(num_local_experts=8, num_experts_per_tok=2), [0, 1, 2], 0),
    "granitemoeshared": (dict(num_local_experts=8, num_experts_per_tok=2, shared_intermediate_size=24), [0, 1, 2], 1),
    "glm4_moe": (
        dict(
            n_routed_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            n_shared_experts=1,
            first_k_dense_replace=1,
            n_group=2,
            topk_group=1,
            routed_scaling_factor=2.0,
            head_dim=8,
        ),
        [1, 2],
        1,
    ),
    "qwen3_next": (
        dict(
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=24,
            head_dim=8,
            layer_types=["linear_attention", "full_attention", "linear_attention"],
            linear_num_value_heads=2,
            linear_num_key_heads=2,
            linear_key_head_dim=8,
            linear_value_head_dim=8,
            mlp_only_layers=[],
        ),
        [0, 1, 2],
        1,
    ),
}
PROMPTS = [[5, 17, 33, 9, 61, 20, 8], [40, 11, 90], [77, 3, 54, 23, 12]]


# ---------------------------------------------------------------------- tiny models
@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(1)  # deterministic and no oversubscription on small CI machines
    transformers.logging.set_verbosity_error()
    return torch, transformers


def tiny_model(hf, model_type: str, seed: int = 0, **overrides):
    """A seeded random-weight model whose routers have well-separated logits and real biases."""
    torch, transformers = hf
    from moesim.capture import inspect_model

    config = transformers.AutoConfig.for_model(model_type, **{**COMMON, **ARCHS[model_type][0], **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for router in inspect_model(model).routers:
            # Default init (std 0.02) gives near-tied logits; a float-rounding tie would make the
            # reference and the model disagree for reasons that have nothing to do with capture.
            router.weight.copy_(torch.randn(router.weight.shape, generator=generator))
            if getattr(router, "bias", None) is not None:
                router.bias.copy_(torch.randn(router.bias.shape, generator=generator))
            if hasattr(router, "e_score_correction_bias"):
                # Large enough to change which experts win, so ranking by weight would be wrong.
                router.e_score_correction_bias.copy_(0.3 * torch.randn(router.num_experts, generator=generator))
    return model


def generate_plain(hf, model, prompt, options):
    """Tokens ``model.generate`` produces without any capture hooks (same generation config)."""
    torch, _ = hf
    from moesim.capture.session import _generation_config

    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), generation_config=_generation_config(model, None, options)
        )
    return out[0, len(prompt) :].tolist()


class RouterInputs:
    """The test's own record of every hidden state each router was called with (pre-hooks)."""

    def __init__(self, routers):
        self.inputs = {i: [] for i in range(len(routers))}
        self.handles = [
            router.register_forward_pre_hook(lambda m, args, i=i: self.inputs[i].append(args[0].detach().clone()))
            for i, router in enumerate(routers)
        ]

    def rows(self, layer):
        hidden = [x.reshape(-1, x.shape[-1]) for x in self.inputs[layer]]
        return np.concatenate([h.float().numpy() for h in hidden])

    def remove(self):
        for handle in self.handles:
            handle.remove()


# ---------------------------------------------------------------------- reference routing (numpy)
def softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top(scores, k):
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


def take(values, index):
    return np.take_along_axis(values, index, axis=-1)


def reference_logits(hf, router, hidden):
    torch, _ = hf
    weight = router.weight.detach()
    bias = getattr(router, "bias", None)
    x = torch.from_numpy(hidden).to(weight.dtype)
    return torch.nn.functional.linear(x, weight, None if bias is None else bias.detach()).float().numpy()


def reference_route(model_type, router, logits):
    """(experts in router ranking, gate weights) per row, from the transformers source's rules."""
    logits = logits.astype(np.float64)
    k = router.top_k
    if model_type in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "qwen3_next"):
        probs = softmax(logits)
        idx = top(probs, k)
        weights = take(probs, idx)
        if getattr(router, "norm_topk_prob", True):
            weights = weights / weights.sum(-1, keepdims=True)
        return idx, weights
    if model_type in ("gpt_oss", "granitemoe", "granitemoeshared"):
        idx = top(logits, k)
        return idx, softmax(take(logits, idx))
    if model_type == "deepseek_v2":
        probs = softmax(logits)
        num, groups = len(probs), router.num_group
        best = probs.reshape(num, groups, -1).max(-1)
        keep = np.zeros_like(best, dtype=bool)
        np.put_along_axis(keep, top(best, router.topk_group), True, axis=-1)
        masked = np.where(np.repeat(keep, probs.shape[1] // groups, axis=1), probs, 0.0)
        idx = top(masked, k)
        return idx, take(probs, idx) * router.routed_scaling_factor
    if model_type in ("deepseek_v3", "glm4_moe"):
        scores = 1.0 / (1.0 + np.exp(-logits))
        biased = scores + router.e_score_correction_bias.numpy().astype(np.float64)
        num, groups = len(scores), router.num_group
        group_score = np.sort(biased.reshape(num, groups, -1), axis=-1)[..., -2:].sum(-1)
        keep = np.zeros_like(group_score, dtype=bool)
        np.put_along_axis(keep, top(group_score, router.topk_group), True, axis=-1)
        masked = np.where(np.repeat(keep, scores.shape[1] // groups, axis=1), biased, -np.inf)
        idx = top(masked, k)
        weights = take(scores, idx)
        if router.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
        return idx, weights * router.routed_scaling_factor
    if model_type == "phimoe":
        eps = router.router_jitter_noise
        picks, weights, scores = [], [], logits.copy()
        for _ in range(2):
            best = scores.max(-1, keepdims=True)
            pick = scores.argmax(-1)[:, None]
            factor = np.maximum(np.abs(logits), best)
            gated = np.where((best - logits) / factor > 2 * eps, -np.inf, scores)
            picks.append(pick)
            weights.append(take(softmax(gated), pick))
            np.put_along_axis(scores, pick, -np.inf, axis=-1)
        return np.concatenate(picks, -1), np.concatenate(weights, -1)
    raise AssertionError(model_type)


# ---------------------------------------------------------------------- per-architecture capture
def test_every_supported_architecture_is_tested():
    from moesim.capture import supported_architectures

    assert set(supported_architectures()) == set(ARCHS)


@pytest.mark.parametrize("model_type", list(ARCHS))
def test_capture_matches_model_routing(hf, tmp_path, model_type):
    from moesim import read_trace, write_trace
    from moesim.capture import CaptureOptions, capture, inspect_model

    model = tiny_model(hf, model_type)
    layout = inspect_model(model)
    _, expected_moe_layers, expected_shared = ARCHS[model_type]
    assert list(layout.moe_layers) == expected_moe_layers
    options = CaptureOptions(max_new_tokens=5, logits=True, speculative=True)
    plain = [generate_plain(hf, model, prompt, options) for prompt in PROMPTS]

    seen = []
    generate = model.generate
    model.generate = lambda *a, **kw: seen.append(generate(*a, **kw)) or seen[-1]
    router_inputs = RouterInputs(layout.routers)
    try:
        trace = capture(model, PROMPTS, options=options)
    finally:
        router_inputs.remove()
        del model.generate
    assert all(not router._forward_hooks for router in layout.routers), "capture left hooks behind"

    # Hooks do not change what the model generates.
    assert [out[0, len(p) :].tolist() for out, p in zip(seen, PROMPTS, strict=True)] == plain

    # Shape, phases, positions, metadata.
    assert list(trace.moe_layers) == expected_moe_layers
    assert trace.metadata["num_shared_experts"] == expected_shared
    assert trace.metadata["dense_layers"] == [i for i in range(3) if i not in expected_moe_layers]
    assert trace.top_k == ARCHS[model_type][0]["num_experts_per_tok"]
    assert list(trace.sequence_ids) == [0, 1, 2]
    for seq, prompt, tokens in zip(trace.sequences(), PROMPTS, plain, strict=True):
        decode_rows = len(tokens) - 1
        assert list(seq.phases) == [0] * len(prompt) + [1] * decode_rows
        assert list(seq.positions) == list(range(len(prompt) + decode_rows))

    # Batch size 1: the forwards' router inputs, in order, are the trace's rows.
    rows = trace.num_tokens
    for layer, router in enumerate(layout.routers):
        hidden = router_inputs.rows(layer)
        assert len(hidden) >= rows
        logits = reference_logits(hf, router, hidden[:rows])
        experts, weights = reference_route(model_type, router, logits)
        np.testing.assert_array_equal(trace.experts[:, layer], experts)
        np.testing.assert_allclose(trace.weights[:, layer], weights, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(trace.router_logits[:, layer].astype(np.float32), logits, rtol=2e-3, atol=2e-3)
        if layer == 0:
            assert (trace.predicted_experts[:, 0] == -1).all()
        else:
            guess_logits = reference_logits(hf, router, router_inputs.rows(layer - 1)[:rows])
            np.testing.assert_array_equal(
                trace.predicted_experts[:, layer], reference_route(model_type, router, guess_logits)[0]
            )

    # The trace validates and survives a round trip.
    path = write_trace(trace, tmp_path / "t.parquet")
    assert read_trace(path).equals(trace)


@pytest.mark.parametrize("model_type", ["mixtral", "deepseek_v3", "phimoe", "qwen3_next"])
def test_batched_capture_attributes_rows_to_prompts(hf, model_type):
    """Left padding is never recorded and each row lands on its own prompt."""
    from moesim.capture import CaptureOptions, capture

    model = tiny_model(hf, model_type)
    alone = capture(model, PROMPTS, options=CaptureOptions(max_new_tokens=4, speculative=True))
    batched = capture(model, PROMPTS, options=CaptureOptions(max_new_tokens=4, speculative=True, batch_size=3))
    np.testing.assert_array_equal(batched.seq_ids, alone.seq_ids)
    np.testing.assert_array_equal(batched.positions, alone.positions)
    np.testing.assert_array_equal(batched.phases, alone.phases)
    np.testing.assert_array_equal(batched.experts, alone.experts)
    np.testing.assert_array_equal(batched.predicted_experts, alone.predicted_experts)
    np.testing.assert_allclose(batched.weights, alone.weights, rtol=1e-4, atol=1e-6)


def test_unsorted_router_output_is_ranked_by_router_score(hf):
    """On CUDA, DeepSeek's topk(sorted=False) returns experts in no particular order."""
    from moesim.capture import CaptureOptions, capture, inspect_model

    model = tiny_model(hf, "deepseek_v2")
    options = CaptureOptions(max_new_tokens=3, speculative=True)
    expected = capture(model, PROMPTS[:2], options=options)
    for router in inspect_model(model).routers:

        def reversed_output(hidden, original=router.forward):
            logits, weights, index = original(hidden)
            return logits, weights.flip(-1), index.flip(-1)

        router.forward = reversed_output
    got = capture(model, PROMPTS[:2], options=options)
    np.testing.assert_array_equal(got.experts, expected.experts)
    np.testing.assert_array_equal(got.weights, expected.weights)
    np.testing.assert_array_equal(got.predicted_experts, expected.predicted_experts)


def test_finished_sequence_stops_recording_while_batch_continues(hf):
    from moesim.capture import CaptureOptions, capture

    model = tiny_model(hf, "mixtral")
    options = CaptureOptions(max_new_tokens=6)
    plain = [generate_plain(hf, model, prompt, options) for prompt in PROMPTS]
    # Make one prompt's second generated token the EOS, a token another prompt never emits.
    candidates = [
        (a, b)
        for a in range(len(PROMPTS))
        for b in range(len(PROMPTS))
        if a != b and plain[a][1] not in plain[a][:1] + plain[b]
    ]
    assert candidates, "no prompt pair where one stops early and the other does not; change the seed"
    a, b = candidates[0]
    first, second = PROMPTS[a], PROMPTS[b]
    model.generation_config.eos_token_id = plain[a][1]

    trace = capture(model, [first, second], options=CaptureOptions(max_new_tokens=6, batch_size=2))
    short, long = trace.sequences()
    assert short.num_tokens == len(first) + 1  # generated [t0, EOS]: only t0 is fed back
    assert long.num_tokens == len(second) + 5
    alone = capture(model, [second], options=CaptureOptions(max_new_tokens=6))
    np.testing.assert_array_equal(long.experts, alone.experts)

    forced = capture(model, [first], options=CaptureOptions(max_new_tokens=6, ignore_eos=True))
    assert forced.num_tokens == len(first) + 5
    assert forced.metadata["capture"]["settings"]["ignore_eos"] is True


def test_capture_metadata_records_provenance_and_structure(hf):
    from moesim.capture import CaptureOptions, capture

    model = tiny_model(hf, "deepseek_v3")
    trace = capture(model, PROMPTS[:1], options=CaptureOptions(max_new_tokens=2), model_name="tiny/dsv3")
    meta = trace.metadata
    assert trace.model == "tiny/dsv3"
    assert meta["source"] == "huggingface-capture"
    assert meta["architecture"] == "deepseek_v3"
    assert meta["num_model_layers"] == 3 and meta["dense_layers"] == [0]
    assert meta["expert_ffn_size"] == 16 and meta["shared_expert_ffn_size"] == 16
    # gate_up [2*16, 32] + down [32, 16] per expert, float32
    assert meta["expert_params"] == 2 * 16 * 32 + 32 * 16
    assert meta["expert_bytes"] == 4 * meta["expert_params"]
    assert "e_score_correction_bias" in meta["routing"]["selection"]
    capture_info = meta["capture"]
    torch, transformers = hf
    assert capture_info["transformers_version"] == transformers.__version__
    assert capture_info["torch_version"] == torch.__version__
    assert capture_info["dtype"] == "float32" and capture_info["device"] == "cpu"
    assert capture_info["settings"]["decoding"] == "greedy"
    assert capture_info["started_at_utc"].endswith("+00:00")
    assert set(meta["columns"]) == {"experts", "weights"}


def test_training_mode_and_unsupported_architecture_are_refused(hf):
    torch, transformers = hf
    from moesim.capture import capture

    model = tiny_model(hf, "olmoe").train()
    with pytest.raises(CaptureError, match="training mode"):
        capture(model, PROMPTS[:1])
    config = transformers.AutoConfig.for_model("llama", **{k: v for k, v in COMMON.items()})
    dense = transformers.AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(CaptureError) as info:
        capture(dense, PROMPTS[:1])
    message = str(info.value)
    assert "'llama' is not supported" in message and "\n" not in message
    for name in ARCHS:
        assert f"({name})" in message


def test_router_bypassed_by_a_fused_kernel_is_an_error(hf):
    """A fused MoE kernel that skips the router module must not yield a silently partial trace."""
    torch, _ = hf
    from moesim.capture import capture

    model = tiny_model(hf, "mixtral")
    model.model.layers[1].mlp.forward = torch.zeros_like
    with pytest.raises(CaptureError, match=r"routers of model layers \[1\] did not run"):
        capture(model, PROMPTS[:1])


def test_bad_options_and_prompt_tokens(hf):
    from moesim.capture import CaptureOptions, capture

    with pytest.raises(ConfigError, match="max_new_tokens: expected an integer >= 1, got 0"):
        CaptureOptions(max_new_tokens=0)
    with pytest.raises(ConfigError, match="batch_size"):
        CaptureOptions(batch_size=True)
    model = tiny_model(hf, "olmoe")
    with pytest.raises(CaptureError, match=r"prompt 1: token id 500 >= the model's vocabulary size 128"):
        capture(model, [[3, 4], [5, 500]])
    with pytest.raises(CaptureError, match="prompt 0: is text but no tokenizer"):
        capture(model, ["hello"])


# ---------------------------------------------------------------------- streaming and resume
def _strip_session(metadata):
    capture_info = dict(metadata["capture"])
    capture_info.pop("sessions")
    capture_info.pop("started_at_utc")
    return {**metadata, "capture": capture_info}


def test_resume_after_crash_equals_uninterrupted_run(hf, tmp_path):
    from moesim import read_trace
    from moesim.capture import CaptureOptions, PromptSet, capture_to_file
    from moesim.trace.io import journal_dir

    model = tiny_model(hf, "qwen2_moe")
    prompts = PromptSet.from_prompts(PROMPTS + [[9, 8, 7, 6], [30, 31]], source="prompts.jsonl")
    options = CaptureOptions(max_new_tokens=3, batch_size=2, logits=True, speculative=True)

    full = capture_to_file(model, prompts, tmp_path / "full.parquet", options=options)
    assert (full.prompts_captured, full.prompts_resumed) == (5, 0)

    out = tmp_path / "resumed.parquet"

    def crash_after_three(progress):
        if progress.prompts_done == 3:  # prompt 2 is durable, prompt 3 (same batch) is not
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        capture_to_file(model, prompts, out, options=options, progress=crash_after_three)
    assert journal_dir(out).is_dir() and not out.exists()
    partial = sorted(journal_dir(out).glob("part-*.arrow"))
    assert len(partial) == 3

    with pytest.raises(TraceError, match="interrupted write"):
        capture_to_file(model, prompts, out, options=options)
    with pytest.raises(CaptureError, match="setting 'max_new_tokens' was 3, now 4"):
        capture_to_file(
            model,
            prompts,
            out,
            options=CaptureOptions(max_new_tokens=4, batch_size=2, logits=True, speculative=True),
            resume=True,
        )

    done = []
    result = capture_to_file(model, prompts, out, options=options, resume=True, progress=done.append)
    assert (result.prompts_captured, result.prompts_resumed) == (2, 3)
    assert [p.seq_id for p in done] == [3, 4] and done[-1].prompts_done == 5
    assert not journal_dir(out).exists()

    expected, resumed = read_trace(tmp_path / "full.parquet"), read_trace(out)
    for name in ("experts", "weights", "seq_ids", "positions", "phases", "predicted_experts", "router_logits"):
        a, b = getattr(expected, name), getattr(resumed, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert _strip_session(resumed.metadata) == _strip_session(expected.metadata)
    sessions = resumed.metadata["capture"]["sessions"]
    assert [s["prompts_done_before"] for s in sessions] == [0, 3]

    # Resuming a finished capture does nothing.
    again = capture_to_file(model, prompts, out, options=options, resume=True)
    assert (again.prompts_captured, again.prompts_resumed) == (0, 5)
    assert read_trace(out).equals(resumed)


# ---------------------------------------------------------------------- prompt files
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.csv", "a,b\n", "unknown prompt file extension '.csv'; use .txt"),
        ("p.txt", "\n  \n", "no prompts (the file is empty or blank)"),
        ("p.jsonl", '{"prompt": "hi"}\n{"prompt": "x"\n', "line 2: invalid JSON"),
        (
            "p.jsonl",
            '{"text": "hi"}\n',
            "line 1: expected exactly one of 'prompt', 'messages' or 'input_ids', found keys ['text']",
        ),
        ("p.jsonl", '{"prompt": "a", "input_ids": [1]}\n', "found ['prompt', 'input_ids']"),
        (
            "p.jsonl",
            '\n{"messages": [{"role": "user"}]}\n',
            "line 2: messages[0] must be an object with string 'role' and 'content'",
        ),
        (
            "p.jsonl",
            '{"input_ids": [1, -2]}\n',
            "line 1: 'input_ids' must be a non-empty list of non-negative token ids, found -2",
        ),
        ("p.jsonl", "[1, 2]\n", "line 1: expected a JSON object, got list"),
        ("p.txt", b"ok\n\xff\xfe\n", "line 2: not valid UTF-8"),
    ],
)
def test_bad_prompt_files_are_one_line_errors(tmp_path, name, content, message):
    from moesim.capture import read_prompts

    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CaptureError) as info:
        read_prompts(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_prompt_files_read_all_kinds(tmp_path):
    from moesim.capture import Prompt, read_prompts

    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\n  second one  \n")
    prompts = read_prompts(txt)
    assert [p.text for p in prompts.prompts] == ["first prompt", "  second one  "]
    assert len(prompts.sha256) == 64 and prompts.source == str(txt)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"prompt": "hello", "id": 7}\n{"messages": [{"role": "user", "content": "hi"}]}\n{"input_ids": [4, 5]}\n'
    )
    kinds = read_prompts(jsonl).prompts
    assert kinds[0] == Prompt(text="hello")
    assert kinds[1].chat() == [{"role": "user", "content": "hi"}]
    assert kinds[2].token_ids == (4, 5)


# ---------------------------------------------------------------------- missing extra
def test_missing_extra_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from moesim.capture import capture
    from moesim.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'moesim\[capture\]'"):
        capture(object(), [[1, 2]])
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    code = main(["trace", "capture", "--model", "x", "--prompts", str(prompts), "--out", str(tmp_path / "t.parquet")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "pip install 'moesim[capture]'" in err


def test_import_moesim_does_not_import_torch():
    import subprocess

    code = (
        "import sys, moesim, moesim.capture, moesim.cli; moesim.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'transformers', 'numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------- CLI end to end
def tiny_tokenizer(hf):
    _, transformers = hf
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = "the a of to and in is it that was for on are with as his they be at one have this from water hot".split()
    special = ["<pad>", "<s>", "</s>", "<unk>", "<", ">", "user", "assistant"]
    vocab = {w: i for i, w in enumerate(special + sorted(set(words)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}< {{ m['role'] }} > {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}< assistant >{% endif %}"
    )
    return tokenizer


@pytest.fixture(scope="module")
def saved_model(hf, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-granitemoe")
    tiny_model(hf, "granitemoe").save_pretrained(path)
    tiny_tokenizer(hf).save_pretrained(path)
    return path


def test_cli_capture_end_to_end(hf, saved_model, tmp_path, capsys):
    from moesim import read_trace
    from moesim.capture import CaptureOptions, capture, read_prompts
    from moesim.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "the water is hot"}\n{"messages": [{"role": "user", "content": "is it hot"}]}\n')
    out = tmp_path / "t.arrow"
    argv = ["trace", "capture", "--model", str(saved_model), "--prompts", str(prompts), "--out", str(out)]
    argv += ["--max-new-tokens", "3", "--device", "cpu", "--batch-size", "2", "--logits", "--chat-template", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_prompts"] == 2 and summary["prompts_captured"] == 2
    trace = read_trace(out)
    assert trace.num_sequences == 2 and trace.router_logits is not None
    settings = trace.metadata["capture"]["settings"]
    assert settings["model"] == str(saved_model) and settings["chat_template"] is True
    assert settings["prompts_sha256"] == read_prompts(prompts).sha256
    assert summary["tokens_captured"] == trace.num_tokens

    # The same capture through the library, with the tokenizer rendering the chat template.
    _, transformers = hf
    model = transformers.AutoModelForCausalLM.from_pretrained(saved_model).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(saved_model)
    direct = capture(
        model,
        read_prompts(prompts),
        tokenizer=tokenizer,
        options=CaptureOptions(max_new_tokens=3, batch_size=2, logits=True, chat_template=True),
    )
    np.testing.assert_array_equal(direct.experts, trace.experts)
    # --chat-template wraps the text prompt too; the template renders "< user > ... < assistant >".
    rendered = ["< user > the water is hot < assistant >", "< user > is it hot < assistant >"]
    assert [s.phase_counts()["prefill"] for s in trace.sequences()] == [10, 9]
    assert [len(tokenizer(text)["input_ids"]) for text in rendered] == [10, 9]


def test_cli_errors_are_one_line(hf, saved_model, tmp_path, capsys):
    from moesim.cli import main

    _, transformers = hf
    prompts = tmp_path / "p.txt"
    prompts.write_text("the water\n")
    # Only a config: support is checked before any weights are looked for.
    dense = tmp_path / "dense"
    transformers.AutoConfig.for_model("llama", **COMMON).save_pretrained(dense)
    bad_prompts = tmp_path / "p.jsonl"
    bad_prompts.write_text('{"promt": "x"}\n')
    cases = [
        (["--model", str(dense), "--prompts", str(prompts)], "architecture 'llama' is not supported"),
        (["--model", str(saved_model), "--prompts", str(bad_prompts)], "line 1: expected exactly one of"),
        (["--model", str(saved_model), "--prompts", str(prompts), "--dtype", "int3"], "dtype: expected one of"),
        (["--model", str(saved_model), "--prompts", str(prompts), "--batch-size", "0"], "batch_size: expected"),
        (["--model", str(tmp_path / "nope"), "--prompts", str(prompts)], "cannot load its config"),
    ]
    for args, message in cases:
        code = main(["trace", "capture", *args, "--out", str(tmp_path / "t.parquet"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 2, args
        assert message in err and err.count("\n") == 1, err
    code = main(
        ["trace", "capture", "--model", str(saved_model), "--prompts", str(prompts), "--out", str(tmp_path / "t.csv")]
    )
    assert code == 2 and "unknown trace extension" in capsys.readouterr().err


def interrupt(self, progress):
    raise KeyboardInterrupt


def test_cli_interrupted_capture_resumes(hf, saved_model, tmp_path, monkeypatch, capsys):
    from moesim import read_trace
    from moesim.cli import main
    from moesim.cli.trace import capture as capture_cli
    from moesim.trace.io import journal_dir

    prompts = tmp_path / "p.txt"
    prompts.write_text("the water is hot\nit was the one\na hot day\n")
    base = ["trace", "capture", "--model", str(saved_model), "--prompts", str(prompts), "--device", "cpu"]
    base += ["--max-new-tokens", "3", "--speculative"]
    assert main([*base, "--out", str(tmp_path / "full.parquet")]) == 0

    out = tmp_path / "t.parquet"
    monkeypatch.setattr(capture_cli.ProgressBar, "update", interrupt)
    assert main([*base, "--out", str(out)]) == 130  # Ctrl-C after the first prompt is durable
    monkeypatch.undo()
    assert journal_dir(out).is_dir() and not out.exists()
    capsys.readouterr()
    assert main([*base, "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*base, "--out", str(out), "--resume", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["prompts_resumed"], summary["prompts_captured"]) == (1, 2)
    full, resumed = read_trace(tmp_path / "full.parquet"), read_trace(out)
    assert resumed.experts.tobytes() == full.experts.tobytes()
    assert resumed.predicted_experts.tobytes() == full.predicted_experts.tobytes()
    assert _strip_session(resumed.metadata) == _strip_session(full.metadata)

    # --overwrite discards an interrupted capture instead of refusing.
    monkeypatch.setattr(capture_cli.ProgressBar, "update", interrupt)
    assert main([*base, "--out", str(tmp_path / "o.parquet")]) == 130
    monkeypatch.undo()
    assert main([*base, "--out", str(tmp_path / "o.parquet"), "--overwrite"]) == 0
    assert read_trace(tmp_path / "o.parquet").experts.tobytes() == full.experts.tobytes()
