"""SRP: kernel == naive twin, wrapper == the definition, spec goldens, properties, baseline, bootstrap."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim import Trace
from moesim.errors import ConfigError
from moesim.kernels.srp import window_count_histograms
from moesim.metrics import bootstrap
from moesim.metrics.baseline import bernoulli_srp, iid_srp
from moesim.metrics.srp import mean_srp, srp, srp_by_expert, srp_by_layer, window_histograms
from tests import naive
from tests.strategies import expert_arrays, traces

# The module, not the function that moesim.metrics may re-export under the same name.
srp_module = importlib.import_module("moesim.metrics.srp")


def _trace(tokens, num_experts, seq_ids=None):
    """Trace from per-token expert lists of one layer (``[[0, 1], [1, 2]]`` or ``[0, 1, 0]``)."""
    experts = np.asarray(tokens, dtype=np.int16).reshape(len(tokens), 1, -1)
    return Trace.from_arrays(experts, num_experts=num_experts, seq_ids=seq_ids)


def _definition(trace, segment, keys=None):
    return naive.srp_by_definition(trace.experts, trace.seq_offsets, trace.num_experts, segment, keys)


# ---------------------------------------------------------------------------- kernel == twin
@given(
    arrays=expert_arrays(max_tokens=30, max_layers=3, max_experts=12, max_k=4, empty_slots=True),
    segment=st.integers(1, 9),
    cuts=st.lists(st.integers(0, 30), max_size=4),
    grouping=st.sampled_from(["layer", "expert", "pooled", "random"]),
    seed=st.integers(0, 2**16),
)
def test_kernel_matches_naive(arrays, segment, cuts, grouping, seed):
    experts, num_experts = arrays
    num_tokens, num_layers, _ = experts.shape
    offsets = np.unique(np.clip([0, num_tokens, *cuts], 0, num_tokens)).astype(np.int64)
    num_seqs = len(offsets) - 1
    rng = np.random.default_rng(seed)
    keys = np.arange(num_layers * num_experts, dtype=np.int64)
    if grouping == "layer":
        cols, rows = keys // num_experts, np.arange(num_seqs, dtype=np.int64)
    elif grouping == "expert":
        cols, rows = keys, np.arange(num_seqs, dtype=np.int64)
    elif grouping == "pooled":
        cols, rows = np.zeros_like(keys), np.zeros(num_seqs, dtype=np.int64)
    else:
        cols, rows = rng.integers(0, 3, keys.size), rng.integers(0, 2, num_seqs)
    num_rows, num_cols = int(rows.max(initial=0)) + 1, int(cols.max()) + 1
    args = (experts, offsets, num_experts, segment, rows, cols, num_rows, num_cols)
    got = window_count_histograms(*args)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, naive.window_count_histograms(*args))


def test_kernel_counts_a_repeated_id_once():
    # Validated traces never repeat an id within a token; the kernel must stay in bounds anyway.
    experts = np.array([[[1, 1]], [[1, -1]], [[0, 1]]], dtype=np.int16)
    args = (experts, np.array([0, 3]), 2, 2, np.zeros(1, np.int64), np.arange(2), 1, 2)
    np.testing.assert_array_equal(window_count_histograms(*args), naive.window_count_histograms(*args))
    np.testing.assert_array_equal(window_count_histograms(*args)[0, 1], [0, 0, 2])


# ---------------------------------------------------------------------------- wrapper == definition
def _assert_matches_definition(result, expected):
    value, alpha, rho_hat, act_r, f1_by_alpha = expected
    assert result.srp == value
    assert result.alpha == alpha
    assert result.rho_hat == rho_hat
    assert result.act_r == act_r or (math.isnan(result.act_r) and math.isnan(act_r))
    assert result.f1_by_alpha.tolist() == f1_by_alpha


@given(trace=traces(max_tokens=24, max_layers=3, max_experts=10, max_k=4, max_seqs=4), segment=st.integers(1, 8))
def test_srp_matches_definition(trace, segment):
    num_experts = trace.num_experts
    by_layer = srp_by_layer(trace, segment)
    for layer in range(trace.num_layers):
        keys = range(layer * num_experts, (layer + 1) * num_experts)
        expected = _definition(trace, segment, keys)
        _assert_matches_definition(srp(trace, segment, layer=layer), expected)
        _assert_matches_definition(by_layer[layer], expected)
    model = srp(trace, segment, level="model")
    _assert_matches_definition(model, _definition(trace, segment))
    assert model.level == "model" and model.layer is None
    assert model.tp <= model.act and model.tp <= model.pred


@given(trace=traces(max_tokens=16, max_layers=2, max_experts=6, max_k=3, max_seqs=3), segment=st.integers(1, 6))
@settings(max_examples=40)
def test_expert_level_matches_definition(trace, segment):
    result = srp_by_expert(trace, segment)
    for layer in range(trace.num_layers):
        for expert in range(trace.num_experts):
            value, alpha, rho_hat, act_r, _ = _definition(trace, segment, [layer * trace.num_experts + expert])
            assert result.srp[layer, expert] == value
            assert result.alpha[layer, expert] == alpha
            assert result.rho_hat[layer, expert] == rho_hat
            assert result.act_r[layer, expert] == act_r or math.isnan(act_r)


@given(
    tokens=st.lists(st.integers(0, 2), min_size=1, max_size=4),
    segment=st.integers(1, 4),
)
def test_threshold_router_is_the_best_router(tokens, segment):
    # App. C.3: no segment router (any on/off choice per window and expert) beats the best threshold.
    trace = _trace(tokens, 3)
    counts = [f for *_, f in naive.srp._window_counts(trace.experts, trace.seq_offsets, 3, segment)]
    assert srp(trace, segment).srp == pytest.approx(naive.srp_by_brute_force(counts, segment), abs=1e-12)


# ---------------------------------------------------------------------------- spec goldens (section 6)
GOLDENS = [
    # (name, tokens, E, m, srp, alpha, rho_hat, act_r, tp, pred + act)
    ("cold_fill_k1", [0, 1, 2, 0], 3, 2, 12 / 18, 1, 2.0, 1 / 3, None, None),
    ("k1_E4_L8", [0, 0, 1, 0, 2, 1, 0, 0], 4, 2, 28 / 38, 1, 12 / 7, 0.25, None, None),
    ("k1_E4_L8", [0, 0, 1, 0, 2, 1, 0, 0], 4, 4, 22 / 40, 2, 1.0, 0.25, 11, 40),
    ("k1_E4_L8", [0, 0, 1, 0, 2, 1, 0, 0], 4, 8, 0.625, 3, 1.0, 0.25, None, None),
    ("k2_E6_L10", [[0, 1], [1, 0], [0, 2], [2, 3], [3, 2], [0, 1], [4, 5], [0, 1], [1, 2], [0, 1]], 6, 2, 72 / 92, 1, 14 / 9, 1 / 3, 36, 92),
    ("k2_E6_L10", [[0, 1], [1, 0], [0, 2], [2, 3], [3, 2], [0, 1], [4, 5], [0, 1], [1, 2], [0, 1]], 6, 4, 78 / 124, 2, 17 / 14, 1 / 3, 39, 124),
    ("k2_E6_L10", [[0, 1], [1, 0], [0, 2], [2, 3], [3, 2], [0, 1], [4, 5], [0, 1], [1, 2], [0, 1]], 6, 8, 72 / 120, 3, 1.5, 1 / 3, 36, 120),
    ("short_sequence", [0, 1, 0], 4, 2, 2 / 3, 1, 2.0, 0.25, None, None),
]


@pytest.mark.parametrize("name,tokens,num_experts,segment,value,alpha,rho_hat,act_r,tp,total", GOLDENS)
def test_spec_worked_examples(name, tokens, num_experts, segment, value, alpha, rho_hat, act_r, tp, total):
    trace = _trace(tokens, num_experts)
    for result in (srp(trace, segment), srp(trace, segment, level="model")):
        assert result.srp == pytest.approx(value, abs=1e-12), name
        assert (result.alpha, result.segment) == (alpha, segment)
        assert result.rho_hat == pytest.approx(rho_hat, abs=1e-12)
        assert result.act_r == pytest.approx(act_r, abs=1e-12)
        if tp is not None:
            assert (result.tp, result.pred + result.act) == (tp, total)


def test_spec_k1_E4_L8_histogram_f1_and_expert_values():
    trace = _trace([0, 0, 1, 0, 2, 1, 0, 0], 4)
    np.testing.assert_array_equal(window_histograms(trace, 4, per_sequence=False)[0], [6, 9, 4, 1, 0])
    result = srp(trace, 4)
    np.testing.assert_allclose(result.f1_by_alpha, [0.4, 20 / 38, 0.55, 0.25, 0.0], atol=1e-12)
    assert (result.act, result.num_windows, result.num_sequences) == (20, 5, 1)
    experts = srp_by_expert(trace, 4)
    np.testing.assert_allclose(experts.srp[0], [18 / 26, 0.4615, 0.4, 0.0], atol=1e-4)
    assert experts.alpha[0, 0] == 2 and experts.rho_hat[0, 3] == 0.0 and experts.alpha[0, 3] == 0
    np.testing.assert_array_equal(
        window_histograms(trace, 4, by="expert", per_sequence=False)[0, 0], [0, 1, 3, 1, 0]
    )


def test_spec_no_windows():
    trace = _trace([0, 1, 0], 4)
    for result in (srp(trace, 4), srp(trace, 4, level="model"), srp_by_layer(trace, 7)[0]):
        assert (result.srp, result.alpha, result.rho_hat, result.num_windows) == (0.0, 0, 0.0, 0)
        assert math.isnan(result.act_r)
        assert result.confidence_interval(num_boot=20) == (0.0, 0.0)
        assert result.lift == -result.baseline
    assert np.isnan(srp_by_expert(trace, 4).act_r).all()
    empty = Trace.from_arrays(np.zeros((0, 2, 2), np.int16), num_experts=4)
    assert srp(empty, 1, level="model").srp == 0.0


def test_windows_never_cross_sequences():
    # One sequence 0,0 and one 1,1: every window is constant, perfectly predictable.
    joined = _trace([0, 0, 1, 1], 2, seq_ids=[0, 0, 1, 1])
    assert srp(joined, 2).srp == 1.0
    assert srp(_trace([0, 0, 1, 1], 2), 2).srp < 1.0


# ---------------------------------------------------------------------------- properties
def _full_traces(**kwargs):
    """Traces without empty slots, so every token activates exactly k experts per layer."""
    return expert_arrays(empty_slots=False, **kwargs).map(
        lambda a: Trace.from_arrays(a[0], num_experts=a[1], seq_ids=np.arange(len(a[0])) // 7)
    )


@given(trace=_full_traces(max_tokens=40, max_layers=3, max_experts=16, max_k=4), segment=st.integers(1, 12))
def test_srp_properties(trace, segment):
    num_experts, top_k = trace.num_experts, trace.top_k
    for result in (*srp_by_layer(trace, segment), srp(trace, segment, level="model")):
        if result.num_windows == 0:
            assert result.srp == 0.0
            continue
        assert result.act_r == pytest.approx(top_k / num_experts, rel=1e-12)
        assert result.srp >= 2 * top_k / (num_experts + top_k) - 1e-12
        assert 0.0 <= result.rho_hat <= num_experts / top_k + 1e-12
        assert result.act == segment * top_k * result.num_windows * (1 if result.level == "layer" else trace.num_layers)
        if segment == 1:
            # alpha = 0 ties only when every expert is always active (k = E)
            assert (result.srp, result.alpha, result.rho_hat) == (1.0, int(top_k < num_experts), 1.0)


@given(trace=traces(max_tokens=30, max_layers=3, max_experts=12, max_k=4), segment=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_relabelling_experts_changes_nothing(trace, segment, seed):
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(trace.num_experts) for _ in range(trace.num_layers)])
    layer_index = np.arange(trace.num_layers)[None, :, None]
    relabelled = np.where(trace.experts >= 0, perms[layer_index, np.maximum(trace.experts, 0)], -1)
    other = Trace.from_arrays(relabelled, num_experts=trace.num_experts, seq_ids=trace.seq_ids)
    pairs = [(srp(trace, segment, level="model"), srp(other, segment, level="model"))]
    pairs += zip(srp_by_layer(trace, segment), srp_by_layer(other, segment))
    for a, b in pairs:
        assert (a.srp, a.alpha, a.rho_hat, a.tp, a.pred, a.act) == (b.srp, b.alpha, b.rho_hat, b.tp, b.pred, b.act)
        np.testing.assert_array_equal(a.hist_by_seq, b.hist_by_seq)
    experts_a, experts_b = srp_by_expert(trace, segment), srp_by_expert(other, segment)
    for layer in range(trace.num_layers):
        np.testing.assert_array_equal(experts_a.srp[layer, :], experts_b.srp[layer, perms[layer]])


def test_results_are_read_only():
    result = srp(_trace([0, 1, 0, 1], 2), 2)
    with pytest.raises(ValueError):
        result.f1_by_alpha[0] = 1.0
    with pytest.raises(ValueError):
        result.hist_by_seq[0, 0] = 1
    with pytest.raises(AttributeError):
        result.srp = 1.0


# ---------------------------------------------------------------------------- i.i.d. baseline
# Spec section 2.4: SRP x100 / rho_hat of an i.i.d. uniform top-k router, from a 200k-token simulation.
BASELINE_TABLE = {
    (8, 2): [(56.52, 1.05), (45.21, 2.38), (40.91, 3.05), (40.05, 3.87)],
    (16, 4): [(56.49, 1.05), (45.22, 2.38), (40.92, 3.04), (40.05, 3.86)],
    (16, 2): [(46.38, 3.31), (32.13, 2.58), (25.24, 3.26), (22.93, 5.41)],
    (32, 2): [(43.11, 3.64), (23.74, 4.23), (16.46, 3.35), (13.36, 5.41)],
    (40, 8): [(51.27, 0.90), (40.01, 2.01), (34.91, 3.24), (33.51, 4.57)],
    (60, 4): [(43.31, 3.62), (24.14, 4.34), (17.15, 3.80), (14.03, 6.64)],
    (64, 6): [(44.73, 3.47), (28.11, 1.97), (21.03, 4.19), (18.26, 5.66)],
    (64, 8): [(46.40, 3.31), (32.15, 2.58), (25.27, 3.26), (22.94, 5.41)],
    (128, 8): [(43.09, 3.64), (23.72, 4.23), (16.44, 3.35), (13.35, 5.39)],
    (128, 2): [(40.76, None), (16.05, None), (8.54, None), (5.29, None)],
    (128, 1): [(40.37, None), (12.42, None), (6.26, None), (3.68, None)],
}


@pytest.mark.parametrize("num_experts,top_k", sorted(BASELINE_TABLE))
def test_iid_baseline_matches_spec_table(num_experts, top_k):
    bound = 2 * top_k / (num_experts + top_k)
    for segment, (value, rho_hat) in zip((4, 16, 64, 256), BASELINE_TABLE[num_experts, top_k]):
        baseline = iid_srp(num_experts, top_k, segment)
        assert 100 * baseline.srp == pytest.approx(value, abs=0.3)
        if rho_hat is not None:
            assert baseline.rho_hat == pytest.approx(rho_hat, abs=0.05)
        assert baseline.srp >= bound and baseline.f1_by_alpha[0] == pytest.approx(bound, rel=1e-12)


def test_baseline_agrees_with_a_simulated_iid_router():
    rng = np.random.default_rng(3)
    num_experts, top_k, segment = 8, 2, 4
    experts = np.argsort(rng.random((40_000, 1, num_experts)), axis=-1)[..., :top_k].astype(np.int16)
    measured = srp(Trace.from_arrays(experts, num_experts=num_experts), segment)
    expected = iid_srp(num_experts, top_k, segment)
    assert measured.baseline == expected.srp
    assert measured.alpha == expected.alpha
    assert abs(measured.lift) < 0.005


def test_baseline_edges():
    assert (bernoulli_srp(0.0, 8).srp, bernoulli_srp(0.0, 8).alpha, bernoulli_srp(0.0, 8).rho_hat) == (0.0, 0, 0.0)
    assert bernoulli_srp(1.0, 8).srp == 1.0
    assert iid_srp(8, 2, 1).srp == pytest.approx(1.0) and iid_srp(8, 2, 1).alpha == 1
    assert iid_srp(4, 4, 16).srp == 1.0
    assert 0.0 < iid_srp(128, 1, 4096).srp < 0.1  # log-space pmf: no overflow at large m
    for bad in (lambda: iid_srp(4, 5, 4), lambda: iid_srp(0, 1, 4), lambda: bernoulli_srp(1.5, 4), lambda: iid_srp(8, 2, 0)):
        with pytest.raises(ConfigError):
            bad()


# ---------------------------------------------------------------------------- bootstrap
def _repeat_sequences(trace, counts):
    parts = []
    next_id = 0
    for sequence, count in zip(trace.sequences(), counts):
        for _ in range(count):
            parts.append(sequence._replace(seq_ids=np.full(sequence.num_tokens, next_id)))
            next_id += 1
    return Trace.concat(parts) if parts else trace._rows(slice(0, 0))


@given(trace=traces(max_tokens=30, max_layers=2, max_experts=8, max_k=3, max_seqs=4), segment=st.integers(1, 5), seed=st.integers(0, 99))
@settings(max_examples=30)
def test_bootstrap_replicates_are_srp_of_resampled_traces(trace, segment, seed):
    num_boot = 6
    counts = bootstrap.resample_counts(trace.num_sequences, num_boot, seed)
    layer_results = srp_by_layer(trace, segment)
    model = srp(trace, segment, level="model")
    for b in range(num_boot):
        resampled = _repeat_sequences(trace, counts[b])
        assert model.bootstrap_srp(num_boot, seed)[b] == srp(resampled, segment, level="model").srp
        for layer, result in enumerate(layer_results):
            assert result.bootstrap_srp(num_boot, seed)[b] == srp(resampled, segment, layer=layer).srp


def test_confidence_interval_is_basic_bootstrap_and_deterministic():
    rng = np.random.default_rng(0)
    experts = np.argsort(rng.random((600, 2, 8)), axis=-1)[..., :2].astype(np.int16)
    trace = Trace.from_arrays(experts, num_experts=8, seq_ids=np.arange(600) // 30)
    result = srp(trace, 4, level="model")
    low, high = result.confidence_interval(0.9, num_boot=200, seed=5)
    replicates = result.bootstrap_srp(200, seed=5)
    assert (low, high) == (2 * result.srp - np.quantile(replicates, 0.95), 2 * result.srp - np.quantile(replicates, 0.05))
    assert low < result.srp < high
    assert result.confidence_interval(0.9, num_boot=200, seed=5) == (low, high)
    assert result.confidence_interval(0.9, num_boot=200, seed=6) != (low, high)

    layers = srp_by_layer(trace, 4)
    summary = mean_srp(layers, ci=0.9, num_boot=200, seed=5)
    joint = np.mean([r.bootstrap_srp(200, seed=5) for r in layers], axis=0)
    expected = bootstrap.basic_interval(summary.srp, joint, 0.9)
    assert (summary.ci_low, summary.ci_high) == (float(expected[0]), float(expected[1]))
    assert summary.srp == np.mean([r.srp for r in layers]) and summary.layers == (0, 1)
    assert math.isnan(mean_srp(layers).ci_low)


def test_bootstrap_integer_path_equals_float_path(monkeypatch):
    trace = _trace([0, 0, 1, 0, 2, 1, 0, 0, 3, 3, 1], 4, seq_ids=[0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    result = srp(trace, 2)
    fast = result.bootstrap_srp(50, seed=1)
    monkeypatch.setattr(srp_module, "_EXACT_FLOAT_LIMIT", 0)
    np.testing.assert_array_equal(result.bootstrap_srp(50, seed=1), fast)


# ---------------------------------------------------------------------------- errors and imports
@pytest.mark.parametrize(
    "call,match",
    [
        (lambda t: srp(t, 0), "segment"),
        (lambda t: srp(t, 2.5), "segment"),
        (lambda t: srp(t, True), "segment"),
        (lambda t: srp(t, 2, level="expert"), "level"),
        (lambda t: srp(t, 2), "srp_by_layer"),
        (lambda t: srp(t, 2, layer=2), "0..1"),
        (lambda t: srp(t, 2, level="model", layer=0), "select"),
        (lambda t: srp(t.experts, 2, level="model"), "moesim.Trace"),
        (lambda t: srp_by_layer(t, 2, layers=[5]), "layer"),
        (lambda t: t and srp(t, 2, layer=0).confidence_interval(ci=95), "ci"),
        (lambda t: srp(t, 2, layer=0).confidence_interval(num_boot=1), "num_boot"),
        (lambda t: mean_srp([]), "at least one"),
        (lambda t: window_histograms(t, 2, by="token"), "by"),
    ],
)
def test_bad_arguments_raise_config_error(call, match):
    trace = Trace.from_arrays(np.zeros((4, 2, 1), np.int16), num_experts=2)
    with pytest.raises(ConfigError, match=match):
        call(trace)


def test_importing_srp_does_not_import_numba():
    code = "import sys, moesim.metrics.srp, moesim.metrics.baseline; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- shipped real trace
def test_shipped_gpt_oss_trace_has_locality_beyond_the_iid_baseline():
    from moesim import read_trace
    from tests.conftest import TRACES_DIR

    trace = read_trace(TRACES_DIR / "gpt-oss-20b-fingerprinting.parquet")
    head = trace.select(seqs=trace.sequence_ids[:2], layers=[0, 23])
    for segment in (4, 16):
        args = (head.experts, head.seq_offsets, head.num_experts, segment, np.arange(2), np.arange(64) // 32, 2, 2)
        np.testing.assert_array_equal(window_count_histograms(*args), naive.window_count_histograms(*args))
        result = srp(trace, segment, level="model")
        low, _ = result.confidence_interval(num_boot=200, seed=0)
        # Previous-token reuse in this trace is 0.43 against 0.125 for random routing.
        assert low - result.baseline > 0.1
        assert result.act_r == 4 / 32
