"""Scaling studies: budget sheets, architecture enumeration, hit-rate laws, the granularity,
serving-cost and architectures analyses (tiny grids), their datasets, reports and CLI."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

import moesim
from moesim.errors import ConfigError
from moesim.scaling.runner import SimPoint
from tests.conftest import SCENARIOS_DIR, TRACES_DIR

GPT_OSS_TRACE = TRACES_DIR / "gpt-oss-20b-fingerprinting.parquet"


# ---------------------------------------------------------------------------------------- budget sheet
def _mixtral_by_hand() -> int:
    """Mixtral-8x7B from its config.json, multiplied out by hand."""
    h, vocab, layers, ffn, experts = 4096, 32000, 32, 14336, 8
    q, kv = 32 * 128, 8 * 128
    attention = h * q + 2 * h * kv + q * h
    moe = experts * 3 * h * ffn + experts * h  # experts (gate, up, down) + router
    norms = 2 * h
    return 2 * vocab * h + layers * (attention + moe + norms) + h


def _qwen3_30b_by_hand() -> int:
    h, vocab, layers, ffn, experts = 2048, 151936, 48, 768, 128
    q, kv = 32 * 128, 4 * 128
    attention = h * q + 2 * h * kv + q * h
    moe = experts * 3 * h * ffn + experts * h
    return 2 * vocab * h + layers * (attention + moe + 2 * h) + h


@pytest.mark.parametrize("name, by_hand", [("mixtral-8x7b", _mixtral_by_hand), ("qwen3-30b-a3b", _qwen3_30b_by_hand)])
def test_budget_sheet_matches_hand_computed_totals(name, by_hand):
    from moesim.scaling import budget_sheet

    sheet = budget_sheet(moesim.get_model(name), context_len=0)
    assert sheet.total_params == by_hand()
    # Active = total minus the unused experts of every layer.
    spec = moesim.get_model(name)
    unused = spec.num_moe_layers * (spec.num_experts - spec.top_k) * 3 * spec.hidden_size * spec.expert_ffn_size
    assert sheet.active_params == by_hand() - unused
    # FLOPs at context 0: two per matrix parameter a token uses (norms and biases are not matmuls).
    vectors = (2 * spec.num_layers + 1) * spec.hidden_size + spec.num_moe_layers * spec.num_experts * spec.hidden_size
    embedding = spec.vocab_size * spec.hidden_size
    assert sheet.flops_per_token == pytest.approx(
        2 * (sheet.active_params - embedding - vectors) + 2 * spec.num_moe_layers * spec.num_experts * spec.hidden_size
    )


@pytest.mark.parametrize("name", ["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3"])
def test_budget_sheet_within_one_percent_of_published_counts(name):
    from moesim.scaling import budget_sheet

    sheet = budget_sheet(moesim.get_model(name))
    assert abs(sheet.total_vs_published) < 0.01
    assert sheet.total_params == moesim.get_model(name).total_params
    # Active: Mixtral and Qwen publish it with the embedding, DeepSeek without it.
    active = sheet.active_params_without_embedding if name == "deepseek-v3" else sheet.active_params
    assert abs(active / sheet.published_active_params - 1) < 0.02


def test_budget_sheet_bytes_and_attention_flops():
    from moesim.scaling import budget_sheet

    spec = moesim.get_model("gpt-oss-20b")
    short, long = budget_sheet(spec, context_len=0), budget_sheet(spec, context_len=8192)
    assert short.flops_breakdown["attention_scores"] == 0
    assert long.flops_per_token - short.flops_per_token == long.flops_breakdown["attention_scores"] > 0
    assert long.expert_bytes["mxfp4"] == spec.expert_bytes("mxfp4") == spec.expert_bytes()
    assert long.expert_bytes["bf16"] == 3 * 2880 * 2880 * 2 + (2 * 2880 + 2880) * 2  # matrices + biases
    assert long.total_bytes["bf16"] > long.total_bytes["mxfp4"]
    assert dict(long.rows())["layers (MoE)"] == "24 (24)"
    with pytest.raises(ConfigError, match="formats"):
        budget_sheet(spec, formats=("bf17",))
    with pytest.raises(ConfigError, match="model"):
        budget_sheet("gpt-oss-20b")


# ---------------------------------------------------------------------------------------- enumeration
def _qwen3_budget(tolerance=0.05):
    from moesim.scaling import ArchitectureBudget

    spec = moesim.get_model("qwen3-30b-a3b")
    return ArchitectureBudget(
        flops_per_token=spec.flops_per_token(4096).total,
        active_params=spec.active_params,
        total_params=spec.total_params,
        context_len=4096,
        tolerance=tolerance,
    )


def test_enumeration_meets_every_budget_and_finds_the_real_design():
    from moesim.scaling import SearchSpace, enumerate_architectures

    budget = _qwen3_budget(tolerance=0.03)
    space = SearchSpace(
        template="qwen3-30b-a3b",
        num_layers=tuple(range(24, 73, 4)),
        hidden_sizes=(1536, 2048, 2560, 3072),
        num_experts=(32, 64, 128),
        top_k=(2, 4, 8),
        num_shared_experts=(0, 1),
    )
    candidates = enumerate_architectures(budget, space)
    assert len(candidates) >= 3
    for candidate in candidates:
        spec = candidate.spec
        assert spec.flops_per_token(4096).total == pytest.approx(budget.flops_per_token, rel=0.03)
        assert spec.active_params == pytest.approx(budget.active_params, rel=0.03)
        assert spec.total_params == pytest.approx(budget.total_params, rel=0.03)
        assert spec.expert_ffn_size % space.ffn_multiple == 0
        assert spec.num_layers in space.num_layers and spec.hidden_size in space.hidden_sizes
        assert candidate.distance <= 0.03
    distances = [c.distance for c in candidates]
    assert distances == sorted(distances)
    best = candidates[0].spec
    assert (best.num_layers, best.hidden_size, best.num_experts, best.top_k, best.expert_ffn_size) == (
        48,
        2048,
        128,
        8,
        768,
    )


def test_enumeration_is_exhaustive_on_a_small_space():
    """The vectorised search keeps exactly what a brute force over expert sizes keeps."""
    from moesim.scaling import ArchitectureBudget, SearchSpace, enumerate_architectures
    from moesim.scaling.architectures import _shape, _spec

    spec = moesim.get_model("olmoe-1b-7b")
    budget = ArchitectureBudget(
        flops_per_token=spec.flops_per_token(1024).total,
        active_params=spec.active_params,
        total_params=spec.total_params,
        context_len=1024,
        tolerance=0.04,
    )
    space = SearchSpace(
        template="olmoe-1b-7b",
        num_layers=(12, 16, 20),
        hidden_sizes=(1536, 2048),
        num_experts=(32, 64),
        top_k=(4, 8),
        num_shared_experts=(0, 1),
        ffn_multiple=128,
    )
    found = {c.spec.name for c in enumerate_architectures(budget, space)}
    template = moesim.get_model("olmoe-1b-7b")
    brute = set()
    for hidden in space.hidden_sizes:
        heads, kv_heads, head_dim = _shape(template, hidden)
        for layers in space.num_layers:
            for experts in space.num_experts:
                for top_k in space.top_k:
                    for shared in space.num_shared_experts:
                        for ffn in range(128, 4097, 128):
                            candidate = _spec(
                                template, layers, hidden, heads, kv_heads, head_dim, experts, top_k, shared, ffn
                            )
                            if budget.satisfied_by(candidate):
                                brute.add(candidate.name)
    # The search rounds f to the one nearest the total budget; brute force may also keep its neighbours.
    assert found <= brute
    assert {name.rsplit("-f", 1)[0] for name in found} == {name.rsplit("-f", 1)[0] for name in brute}
    assert "L16-h2048-E64-k8-s0-f1024" in found


def test_budget_and_space_validation():
    from moesim.scaling import ArchitectureBudget, SearchSpace
    from moesim.scaling.architectures import parse_count

    assert parse_count("3.3B", "x") == pytest.approx(3.3e9)
    assert parse_count("800M", "x") == 8e8 and parse_count(2e9, "x") == 2e9
    with pytest.raises(ConfigError, match="budget.active_params"):
        ArchitectureBudget(flops_per_token=1e9, active_params=5e9, total_params=1e9)
    with pytest.raises(ConfigError, match="budget.total_params: expected a count"):
        ArchitectureBudget(flops_per_token=1e9, active_params=1e9, total_params="lots")
    with pytest.raises(ConfigError, match="space.template"):
        SearchSpace(template="no-such-model")


# ---------------------------------------------------------------------------------------- laws
@pytest.mark.parametrize(
    "law, a, b", [("exponential", 0.6, 0.012), ("exponential", 0.3, 0.004), ("power", 0.9, 0.35), ("power", 1.4, 0.6)]
)
def test_fits_recover_the_generating_law(law, a, b):
    from moesim.scaling import compare_laws, fit_law

    experts = np.array([8, 16, 32, 64, 128, 256, 512], dtype=float)
    basis = np.exp(-b * experts) if law == "exponential" else experts**-b
    truth = 1 - a * basis
    rng = np.random.default_rng(1)
    noisy = truth + rng.normal(0.0, 0.002, len(experts))
    fit = fit_law(law, experts, noisy)
    assert fit.a == pytest.approx(a, rel=0.05) and fit.b == pytest.approx(b, rel=0.05)
    assert fit.r_squared > 0.99
    assert np.allclose(fit.residuals, noisy - fit.predict(experts))
    comparison = compare_laws(experts, noisy)
    assert comparison.best == law and comparison.distinguished
    assert comparison.weights[law] > 0.95
    assert law in comparison.verdict and "support" in comparison.verdict


def test_exact_data_fit_exactly_and_fits_are_deterministic():
    from moesim.scaling import fit_law

    x = np.array([4.0, 8, 16, 32, 64])
    y = 1 - 0.5 * np.exp(-0.05 * x)
    fit = fit_law("exponential", x, y)
    assert fit.a == pytest.approx(0.5, rel=1e-6) and fit.b == pytest.approx(0.05, rel=1e-6)
    assert fit.rss < 1e-20
    again = fit_law("exponential", x, y)
    assert (again.a, again.b, again.aic) == (fit.a, fit.b, fit.aic)


def test_indistinguishable_data_say_so_and_pooling_adds_evidence():
    from moesim.scaling import compare_laws, compare_pooled

    x = np.array([8.0, 16, 32])
    y = np.array([0.5, 0.7, 0.8])  # three points: both laws fit almost perfectly
    comparison = compare_laws(x, y)
    assert np.isnan(comparison.fits[0].aicc)  # n = 3 leaves no degrees of freedom for AICc
    rng = np.random.default_rng(3)
    xs = np.array([8, 16, 32, 64, 128, 256.0])
    sets = [compare_laws(xs, 1 - 0.8 * xs**-0.4 + rng.normal(0, 0.01, len(xs))) for _ in range(4)]
    pooled = compare_pooled(sets)
    assert pooled.delta_aic == pytest.approx(abs(sum(s.fit("exponential").aic - s.fit("power").aic for s in sets)))
    assert pooled.best == "power"
    assert compare_pooled([]) is None


def test_law_inputs_are_checked():
    from moesim.scaling import fit_law

    with pytest.raises(ConfigError, match="at least 3 points"):
        fit_law("power", [1, 2], [0.1, 0.2])
    with pytest.raises(ConfigError, match="law"):
        fit_law("linear", [1, 2, 3], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="> 0"):
        fit_law("power", [0, 2, 3], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="finite"):
        fit_law("power", [1, 2, 3], [0.1, float("nan"), 0.3])


# ---------------------------------------------------------------------------------------- granularity
def test_granular_spec_keeps_parameters_and_allows_fractions():
    from moesim.scaling import granular_spec

    base = moesim.get_model("gpt-oss-20b")
    for g in (Fraction(1, 2), 2, 4):
        spec = granular_spec(base, g)
        assert spec.num_experts == base.num_experts * g and spec.top_k == base.top_k * g
        assert spec.expert_ffn_size * g == base.expert_ffn_size
        # Parameters stay put but for the router (and the per-expert biases GPT-OSS has).
        routers = spec.param_counts.routers - base.param_counts.routers
        biases = base.num_moe_layers * (spec.num_experts - base.num_experts) * base.hidden_size
        assert spec.total_params - base.total_params == routers + biases
    with pytest.raises(ConfigError, match="fractional"):
        granular_spec(base, Fraction(1, 8))  # k = 4/8


@pytest.fixture(scope="module")
def granularity_run(tmp_path_factory):
    from moesim.scaling.config import load_analysis
    from moesim.scaling.granularity import run_granularity

    analysis = load_analysis(
        SCENARIOS_DIR / "scaling-granularity.toml",
        [
            ("scaling.granularities", [1, 2, 4]),
            ("scaling.cache_budgets", ["2GiB", "4GiB"]),
            ("scaling.link_bandwidths", ["16GB/s", "64GB/s"]),
            ("scaling.sequences", 2),
            ("scaling.tokens_per_sequence", 24),
            ("scaling.fit_tokens", 2048),
            ("scaling.workers", 1),
        ],
    )
    result = run_granularity(analysis)
    out = tmp_path_factory.mktemp("granularity")
    result.write(out)
    return result, out


GRANULARITY_COLUMNS = [
    ("role", "string"),
    ("granularity", "double"),
    ("granularity_label", "string"),
    ("num_experts", "int64"),
    ("top_k", "int64"),
    ("expert_ffn_size", "int64"),
    ("expert_bytes", "int64"),
    ("cache_budget_bytes", "int64"),
    ("capacity_experts", "int64"),
    ("link_bandwidth_bps", "double"),
    ("link_latency_s", "double"),
    ("launch_s", "double"),
    ("trace_source", "string"),
    ("status", "string"),
    ("reason", "string"),
    ("engine", "string"),
    ("trace", "string"),
    ("decode_tokens_per_s", "double"),
    ("tokens_per_s", "double"),
    ("hit_rate", "double"),
    ("misses_per_token", "double"),
    ("h2d_bytes_per_token", "double"),
    ("decode_tokens", "int64"),
    ("num_steps", "int64"),
    ("demands", "int64"),
    ("hits", "int64"),
    ("misses", "int64"),
    ("h2d_bytes", "int64"),
    ("total_time_s", "double"),
    ("decode_time_s", "double"),
    ("miss_penalty_stall_per_miss_s", "double"),
    ("miss_penalty_mean_demand_fetch_s", "double"),
    ("time_breakdown_s_dense", "double"),
    ("time_breakdown_s_expert_gpu", "double"),
    ("time_breakdown_s_overhead", "double"),
    ("time_breakdown_s_stall_fetch", "double"),
    ("time_breakdown_s_stall_cpu", "double"),
    ("utilisation_gpu", "double"),
    ("utilisation_h2d", "double"),
    ("decode_step_latency_s_mean", "double"),
    ("decode_step_latency_s_p99", "double"),
    ("mem_gpu_bytes", "int64"),
    ("mem_non_expert_bytes", "int64"),
    ("mem_kv_cache_bytes", "int64"),
    ("mem_staging_bytes", "int64"),
    ("mem_reserve_bytes", "int64"),
    ("mem_expert_bytes", "int64"),
    ("mem_cache_slots", "int64"),
    ("mem_capacity_experts", "int64"),
    ("mem_total_experts", "int64"),
    ("mem_host_slots", "int64"),
    ("transfer_s_per_miss", "double"),
    ("fixed_cost_share", "double"),
    ("tokens_per_s_per_gbps", "double"),
]


def test_granularity_output_schema_is_pinned(granularity_run):
    result, out = granularity_run
    assert [(f.name, str(f.type)) for f in result.table.schema] == GRANULARITY_COLUMNS
    import pyarrow.parquet as pq

    on_disk = pq.read_table(out / "results.parquet")
    assert on_disk.equals(result.table)
    header = json.loads(on_disk.schema.metadata[b"moesim.dataset"])
    assert header == {"kind": "moesim.scaling.granularity", "schema_version": 1}
    document = json.loads((out / "analysis.json").read_text())
    assert set(document) == {
        "analysis",
        "schema_version",
        "settings",
        "trace_family",
        "laws",
        "pooled_verdict",
        "best_granularity",
        "calibration",
        "notes",
    }
    assert "rescaled" in document["trace_family"]["extrapolation_rule"]
    assert document["settings"]["granularities"] == ["1", "2", "4"]


def test_granularity_rows_are_consistent(granularity_run):
    result, _ = granularity_run
    rows = result.table.to_pylist()
    sweep = [r for r in rows if r["role"] == "sweep"]
    assert len(sweep) == 3 * 2 * 2 and all(r["status"] == "ok" for r in rows)
    assert {r["trace_source"] for r in sweep if r["granularity"] == 1} == {"real"}
    assert {r["trace_source"] for r in sweep if r["granularity"] != 1} == {"synthetic"}
    calibration = [r for r in rows if r["role"] == "calibration"]
    assert len(calibration) == 2 and {r["trace_source"] for r in calibration} == {"synthetic"}
    for r in sweep:
        assert r["capacity_experts"] == r["cache_budget_bytes"] // r["expert_bytes"] == r["mem_capacity_experts"]
        assert r["h2d_bytes"] == r["misses"] * r["expert_bytes"]  # bytes moved = misses x expert bytes
        assert r["transfer_s_per_miss"] == pytest.approx(
            r["link_latency_s"] + r["expert_bytes"] / r["link_bandwidth_bps"]
        )
        assert r["tokens_per_s_per_gbps"] == pytest.approx(r["decode_tokens_per_s"] / (r["link_bandwidth_bps"] / 1e9))
    # Hit rate does not depend on the link (demand fetching, LRU), and a faster link never slows decoding.
    for g in (1.0, 2.0, 4.0):
        for budget in (2 * 2**30, 4 * 2**30):
            pair = sorted(
                (r for r in sweep if r["granularity"] == g and r["cache_budget_bytes"] == budget),
                key=lambda r: r["link_bandwidth_bps"],
            )
            assert pair[0]["hit_rate"] == pair[1]["hit_rate"]
            assert pair[1]["decode_tokens_per_s"] >= pair[0]["decode_tokens_per_s"]
    # A bigger cache never hits less at the same granularity.
    for g in (1.0, 2.0, 4.0):
        small, large = (
            next(
                r["hit_rate"]
                for r in sweep
                if r["granularity"] == g and r["cache_budget_bytes"] == b and r["link_bandwidth_bps"] == 16e9
            )
            for b in (2 * 2**30, 4 * 2**30)
        )
        assert large >= small


def test_granularity_fits_best_and_calibration(granularity_run):
    result, _ = granularity_run
    assert set(result.fits) == {2 * 2**30, 4 * 2**30}
    for comparison in result.fits.values():
        assert [f.law for f in comparison.fits] == ["exponential", "power"]
        assert all(len(f.residuals) == 3 for f in comparison.fits)
    assert result.pooled is not None and result.pooled.verdict
    assert len(result.best) == 4
    rows = result.table.to_pylist()
    for best in result.best:
        group = [
            r
            for r in rows
            if r["role"] == "sweep"
            and r["cache_budget_bytes"] == best["cache_budget_bytes"]
            and r["link_bandwidth_bps"] == best["link_bandwidth_bps"]
        ]
        assert best["decode_tokens_per_s"] == max(r["decode_tokens_per_s"] for r in group)
        assert best["turns"] == (best["best_granularity"] < 4)
    assert len(result.calibration) == 2
    for c in result.calibration:
        assert c["hit_rate_gap"] == pytest.approx(c["hit_rate_synthetic"] - c["hit_rate_real"])


def test_granularity_is_deterministic(granularity_run):
    from moesim.scaling.config import load_analysis
    from moesim.scaling.granularity import run_granularity

    result, _ = granularity_run
    analysis = load_analysis(
        SCENARIOS_DIR / "scaling-granularity.toml",
        [
            ("scaling.granularities", [2]),
            ("scaling.cache_budgets", ["2GiB"]),
            ("scaling.link_bandwidths", ["16GB/s"]),
            ("scaling.sequences", 2),
            ("scaling.tokens_per_sequence", 24),
            ("scaling.fit_tokens", 2048),
            ("scaling.calibrate", False),
        ],
    )
    again = run_granularity(analysis).table.to_pylist()
    first = next(
        r
        for r in result.table.to_pylist()
        if r["granularity"] == 2 and r["cache_budget_bytes"] == 2 * 2**30 and r["link_bandwidth_bps"] == 16e9
    )
    assert again[0] == first


def test_granularity_config_errors():
    from moesim.scaling.config import load_analysis
    from moesim.scaling.granularity import run_granularity

    path = SCENARIOS_DIR / "scaling-granularity.toml"
    with pytest.raises(ConfigError, match=r"scaling.granularities\[0\]"):
        run_granularity(load_analysis(path, [("scaling.granularities", ["x"])]))
    with pytest.raises(ConfigError, match="scaling.bogus: unknown key"):
        run_granularity(load_analysis(path, [("scaling.bogus", 1)]))
    with pytest.raises(ConfigError, match="scaling.analysis"):
        load_analysis(path, expected="serving")
    with pytest.raises(ConfigError, match=r"cache_budgets\[0\]"):
        run_granularity(load_analysis(path, [("scaling.cache_budgets", ["0GiB"])]))


# ---------------------------------------------------------------------------------------- serving cost
def test_quality_law_contours_and_family():
    from moesim.scaling.serving import QualityLaw, equal_quality_family, quality_params

    law = QualityLaw()
    # Ê saturates at both ends: E_start at E = 1, increasing, below E_max always.
    assert law.saturated_experts(1) == pytest.approx(law.e_start)
    values = [law.saturated_experts(e) for e in (1, 4, 16, 64, 256, 4096)]
    assert values == sorted(values) and values[-1] < law.e_max
    # params_for inverts log_loss.
    for experts in (4, 32, 128):
        target = law.log_loss(3e9, 8)
        n = law.params_for(target, experts)
        assert law.log_loss(n, experts) == pytest.approx(target, abs=1e-12)
    template = moesim.get_model("llama-moe-v2-3.8b")
    family = equal_quality_family(template, (4, 8, 32, 128), law)
    assert [spec.num_experts for spec, _ in family] == [4, 8, 32, 128]
    targets = [n for _, n in family]
    assert targets == sorted(targets, reverse=True)  # more experts, fewer parameters per token at equal loss
    for spec, target in family:
        assert spec.top_k == 2 and spec.expert_ffn_size % 64 == 0
        # The expert size is chosen to within one step of f of the target.
        step = 2 * spec.num_moe_layers * spec.top_k * 3 * spec.hidden_size * 64
        assert abs(quality_params(spec) - target) <= step
    reference = next(spec for spec, _ in family if spec.num_experts == 8)
    assert reference.num_layers == template.num_layers and reference.expert_ffn_size == template.expert_ffn_size
    totals = [spec.total_params for spec, _ in family]
    assert totals == sorted(totals)
    with pytest.raises(ConfigError, match="dense layers"):
        equal_quality_family(moesim.get_model("deepseek-moe-16b"), (4,), law)
    with pytest.raises(ConfigError, match="scaling.quality.e_max"):
        QualityLaw(e_start=2.0, e_max=1.5)


def test_max_batch_size_uses_the_memory_planner():
    from moesim.scaling.serving import max_batch_size
    from moesim.scenario import scenario_from_dict
    from moesim.sim.memory import plan_memory

    scenario = scenario_from_dict(
        {"model": "llama-moe-v2-3.8b", "hardware": "rtx4090-pcie4", "trace": {"path": str(GPT_OSS_TRACE)}}
    )
    spec = scenario.model
    context = 576
    batch = max_batch_size(spec, scenario, mode="resident", context_len=context, limit=1024)
    assert 1 <= batch < 1024
    common = dict(
        layout="pool",
        reserve_bytes=scenario.cache.reserve_bytes,
        max_context=context,
        kv_format="bf16",
        host_capacity="all",
        host_reserve_bytes=scenario.offload.host_reserve_bytes,
        has_ssd=True,
    )
    total = spec.num_experts * spec.num_moe_layers
    plan_memory(spec, scenario.hardware, capacity=total, batch_size=batch, **common)
    with pytest.raises(ConfigError):
        plan_memory(spec, scenario.hardware, capacity=total, batch_size=batch + 1, **common)
    assert max_batch_size(spec, scenario, mode="offload", context_len=context, limit=1024) > batch
    assert max_batch_size(spec, scenario, mode="offload", context_len=context, limit=8) == 8


@pytest.fixture(scope="module")
def serving_run(tmp_path_factory):
    from moesim.scaling.analyses import run_analysis

    result = run_analysis(
        SCENARIOS_DIR / "scaling-serving.toml",
        [
            ("scaling.experts", [4, 32]),
            ("scaling.batch_sizes", [1, 8]),
            ("scaling.max_batch", 16),
            ("scaling.decode_steps", 4),
            ("scaling.fit_tokens", 2048),
            ("scaling.workers", 1),
        ],
        expected="serving",
    )
    out = tmp_path_factory.mktemp("serving")
    result.write(out)
    return result, out


def test_serving_rows_and_choice(serving_run):
    result, _ = serving_run
    rows = result.table.to_pylist()
    assert {r["mode"] for r in rows} == {"offload", "resident"}
    for r in rows:
        assert r["batch_size"] <= max(r["max_batch_size"], 1)
        if r["status"] == "ok":
            assert r["cost_per_million_tokens"] == pytest.approx(0.8 / 3600 / r["decode_tokens_per_s"] * 1e6)
            assert r["cache_bytes"] == r["mem_cache_slots"] * r["expert_bytes"]
            used = r["mem_non_expert_bytes"] + r["mem_kv_cache_bytes"] + r["mem_staging_bytes"] + r["mem_reserve_bytes"]
            assert used + r["cache_bytes"] <= r["mem_gpu_bytes"]
        if r["mode"] == "resident" and r["status"] == "ok":
            assert r["hit_rate"] == 1.0 and r["misses"] == 0
    # E=4 fits the 24 GiB GPU whole; E=32 (29 GiB of weights) does not, and says how many it needs.
    resident32 = [r for r in rows if r["mode"] == "resident" and r["num_experts"] == 32]
    assert all(r["status"] == "infeasible" and "cache.capacity" in r["reason"] for r in resident32)
    assert resident32[0]["min_gpus_resident"] == 2
    for key in {(r["num_experts"], r["mode"]) for r in rows}:
        group = [r for r in rows if (r["num_experts"], r["mode"]) == key and r["status"] == "ok"]
        chosen = [r for r in group if r["chosen"]]
        assert len(chosen) == (1 if group else 0)
        if chosen:
            assert chosen[0]["cost_per_million_tokens"] == min(r["cost_per_million_tokens"] for r in group)
    assert "clark2022" in result.settings["quality_proxy"]


# ---------------------------------------------------------------------------------------- architectures analysis
@pytest.fixture(scope="module")
def architectures_run(tmp_path_factory):
    from moesim.scaling.analyses import run_analysis

    result = run_analysis(
        SCENARIOS_DIR / "scaling-architectures.toml",
        [
            ("scaling.num_layers", [36, 48]),
            ("scaling.hidden_sizes", [2048, 3072]),
            ("scaling.num_experts", [32, 64, 128]),
            ("scaling.top_k", [2, 4, 8]),
            ("scaling.num_shared_experts", [0]),
            ("scaling.max_simulations", 3),
            ("scaling.sequences", 1),
            ("scaling.tokens_per_sequence", 16),
            ("scaling.fit_tokens", 2048),
            ("scaling.workers", 1),
        ],
        expected="architectures",
    )
    out = tmp_path_factory.mktemp("architectures")
    result.write(out)
    return result, out


def test_architectures_ranks_the_simulated_families(architectures_run):
    result, _ = architectures_run
    rows = result.table.to_pylist()
    simulated = [r for r in rows if r["simulated"]]
    assert len(simulated) == 3 and result.num_candidates == len(rows)
    assert len({(r["num_experts"], r["top_k"], r["num_shared_experts"]) for r in simulated}) == 3
    ranked = result.ranked()
    assert [r["rank"] for r in ranked] == [1, 2, 3]
    speeds = [r["decode_tokens_per_s"] for r in ranked if r["status"] == "ok"]
    assert speeds == sorted(speeds, reverse=True)
    for r in rows:
        assert max(abs(r["dev_flops_per_token"]), abs(r["dev_active_params"]), abs(r["dev_total_params"])) <= 0.05
        assert r["num_layers"] in (36, 48) and r["hidden_size"] in (2048, 3072)
    for r in simulated:
        assert r["trace_source"] == "synthetic" and r["trace"].startswith(
            f"synthetic:E={r['num_experts']},k={r['top_k']}"
        )
        assert r["mem_expert_bytes"] == r["expert_bytes"]
    assert "L48-h2048-E128-k8-s0-f768" in {r["name"] for r in simulated}


# ---------------------------------------------------------------------------------------- reports and CLI
@pytest.mark.parametrize(
    "fixture, figures",
    [
        ("granularity_run", ["granularity_hit_rate.png", "granularity_tokens.png"]),
        ("serving_run", ["serving_cost.png"]),
        ("architectures_run", ["architectures_tokens.png"]),
    ],
)
def test_reports_render_from_the_dataset(fixture, figures, request):
    from moesim.scaling.analyses import read_results
    from moesim.scaling.report import render

    result, out = request.getfixturevalue(fixture)
    analysis, table, document = read_results(out)
    assert table.equals(result.table)
    assert document["analysis"] == analysis
    report = render(out)
    text = report.read_text()
    assert text.startswith("# ") and "Extrapolation rule" in text
    for name in figures:
        assert (out / name).stat().st_size < 200_000 and f"]({name})" in text


def test_results_reader_refuses_other_files(tmp_path, granularity_run):
    import pyarrow.parquet as pq

    from moesim.scaling.analyses import read_results

    with pytest.raises(ConfigError, match="no results.parquet"):
        read_results(tmp_path)
    _, out = granularity_run
    table = pq.read_table(out / "results.parquet")
    pq.write_table(
        table.replace_schema_metadata(
            {b"moesim.dataset": b'{"kind": "moesim.scaling.granularity", "schema_version": 99}'}
        ),
        tmp_path / "results.parquet",
    )
    with pytest.raises(ConfigError, match="schema version 99"):
        read_results(tmp_path)
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "results.parquet")
    with pytest.raises(ConfigError, match="not a moesim scaling dataset"):
        read_results(tmp_path)


def test_cli_budget_and_errors(capsys):
    from moesim.cli import main

    assert main(["scaling", "budget", "mixtral-8x7b", "--json"]) == 0
    sheet = json.loads(capsys.readouterr().out)
    assert sheet["total_params"] == _mixtral_by_hand() and abs(sheet["total_vs_published"]) < 0.01
    assert main(["scaling", "budget", "qwen3-30b-a3b"]) == 0
    assert "total parameters" in capsys.readouterr().out
    assert main(["scaling", "budget", "no-such-model"]) == 2
    assert "unknown model preset" in capsys.readouterr().err
    assert main(["scaling", "architectures", "--flops-per-token", "9e9", "--active", "3e9", "--total", "30e9"]) == 2
    assert "--trace" in capsys.readouterr().err
    assert main(["scaling", "serving", str(SCENARIOS_DIR / "scaling-granularity.toml")]) == 2
    assert "moesim scaling granularity" in capsys.readouterr().err


def test_cli_architectures_without_a_file(tmp_path, capsys):
    from moesim.cli import main

    spec = moesim.get_model("olmoe-1b-7b")
    code = main(
        [
            "scaling",
            "architectures",
            "--flops-per-token",
            str(spec.flops_per_token(4096).total),
            "--active",
            str(spec.active_params),
            "--total",
            str(spec.total_params),
            "--template",
            "olmoe-1b-7b",
            "--trace",
            str(GPT_OSS_TRACE),
            "--hardware",
            "rtx3060-pcie4",
            "--tolerance",
            "0.02",
            "--top",
            "3",
            "--max-simulations",
            "2",
            "--set",
            "scaling.sequences=1",
            "--set",
            "scaling.tokens_per_sequence=8",
            "--set",
            "scaling.fit_tokens=2048",
            "--set",
            "scaling.num_layers=[16]",
            "--set",
            "scaling.hidden_sizes=[2048]",
            "--out",
            str(tmp_path / "arch"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "L16-h2048-E64-k8-s0-f1024" in out and "rtx3060-pcie4" in out
    assert (tmp_path / "arch" / "report.md").exists()
    assert main(["scaling", "report", str(tmp_path / "arch")]) == 0


def test_rows_do_not_depend_on_the_number_of_workers():
    """A spawn pool of the sweep's executor gives the rows of the in-process run, in point order."""
    from moesim.scaling.runner import run_points
    from moesim.scaling.traces import TraceRecipe
    from moesim.scenario import apply_overrides

    base = {"model": "gpt-oss-20b", "hardware": "rtx4090-pcie4", "workload": {"prefill": False}}
    recipe = TraceRecipe(kind="real", path=str(GPT_OSS_TRACE), seq_ids=(0, 1), max_tokens=12)
    points = [
        SimPoint(
            scenario=apply_overrides(base, [("cache.capacity", capacity)]),
            trace=recipe,
            labels={"capacity_experts": capacity},
        )
        for capacity in (96, 2, 192, 384)
    ]
    serial = run_points(points, workers=1)
    parallel = run_points(points, workers=2)
    assert parallel == serial
    assert [r["capacity_experts"] for r in parallel] == [96, 2, 192, 384]
    assert [r["status"] for r in serial] == ["ok", "infeasible", "ok", "ok"]
    assert "below top_k" in serial[1]["reason"] and serial[1]["hit_rate"] is None
    hits = [serial[i]["hit_rate"] for i in (0, 2, 3)]
    assert hits == sorted(hits)


def test_is_scaling_dataset(granularity_run, tmp_path):
    from moesim.scaling.dataset import is_scaling_dataset

    _, out = granularity_run
    assert is_scaling_dataset(out) and is_scaling_dataset(out / "results.parquet")
    assert not is_scaling_dataset(tmp_path) and not is_scaling_dataset(GPT_OSS_TRACE)
