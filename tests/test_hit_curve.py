"""hit_curve: the spec's worked examples, golden counts on the shipped GPT-OSS-20B trace, the
properties of spec section 10, aggregation, bootstrap and argument checking."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moesim import Trace, read_trace
from moesim.errors import ConfigError
from moesim.metrics import bootstrap
from moesim.metrics.hit_curve import ACCOUNTING, POLICIES, HitCurve, RequestStream, hit_counts, hit_curve
from tests.conftest import REPO, TRACES_DIR
from tests.strategies import traces

GOLDEN_PATH = REPO / "tests" / "golden" / "cache_gpt_oss_20b.json"
GOLDEN_TRACE = TRACES_DIR / "gpt-oss-20b-fingerprinting.parquet"
STACK_POLICIES = [("lru", None), ("lfu", None), ("belady", None), ("sch", 1), ("sch", 3), ("sch", 16)]
ALL_POLICIES = STACK_POLICIES + [("fifo", None)]


def one_layer(tokens, num_experts, seq_ids=None):
    """Trace of one MoE layer from per-token expert lists (``[[0, 1], [1, 2]]`` or ``[0, 1, 0]``)."""
    experts = np.asarray(tokens, dtype=np.int16).reshape(len(tokens), 1, -1)
    return Trace.from_arrays(experts, num_experts=num_experts, seq_ids=seq_ids)


def curve_hits(trace, policy, segment=None, **kwargs):
    kwargs.setdefault("layer", 0 if kwargs.get("level", "layer") == "layer" else None)
    return hit_curve(trace, policy, segment=segment, **kwargs).hits[0].tolist()


# ---------------------------------------------------------------------------- spec section 6
K2_E6_L10 = [[0, 1], [1, 0], [0, 2], [2, 3], [3, 2], [0, 1], [4, 5], [0, 1], [1, 2], [0, 1]]


@pytest.mark.parametrize(
    "name, tokens, num_experts, expected",
    [
        ("cold_fill_k1", [0, 1, 2, 0], 3,
         {"lru": [1, 2, 4], "lfu": [1, 2, 4], "belady": [1, 3, 4], ("sch", 1): [1, 2, 4], ("sch", 2): [1, 3, 4]}),
        ("k1_E4_L8", [0, 0, 1, 0, 2, 1, 0, 0], 4,
         {"lru": [3, 5, 8, 8], "lfu": [3, 6, 8, 8], "belady": [3, 6, 8, 8], ("sch", 1): [3, 5, 8, 8],
          ("sch", 2): [3, 6, 8, 8], ("sch", 4): [3, 6, 8, 8], ("sch", 8): [3, 6, 8, 8]}),
        ("k2_E6_L10", K2_E6_L10, 6,
         {"lru": [6, 10, 14, 17, 19, 20], "lfu": [6, 11, 15, 18, 19, 20], "belady": [6, 11, 15, 18, 19, 20],
          ("sch", 1): [6, 10, 14, 17, 19, 20], ("sch", 2): [6, 11, 15, 17, 19, 20],
          ("sch", 4): [6, 11, 15, 18, 19, 20], ("sch", 8): [6, 11, 15, 18, 19, 20]}),
        ("lru_order_c_lt_k", [[0, 1], [1, 2]], 3, {"lru": [2, 3, 4]}),
        ("lru_order_c_lt_k_swapped", [[1, 0], [1, 2]], 3, {"lru": [1, 3, 4]}),
        ("sch_exceeds_belady", [[0, 3], [2, 0], [3, 1]], 4, {("sch", 2): [1, 4, 5, 6], "belady": [1, 3, 5, 6]}),
        ("short_sequence", [0, 1, 0], 4,
         {"lru": [1, 3, 3, 3], "lfu": [1, 3, 3, 3], "belady": [1, 3, 3, 3], ("sch", 1): [1, 3, 3, 3],
          ("sch", 2): [1, 3, 3, 3], ("sch", 4): [1, 3, 3, 3], ("sch", 16): [1, 3, 3, 3]}),
    ],
)
def test_spec_worked_examples(name, tokens, num_experts, expected):
    """Hit counts of the paper's reference functions (spec section 6), reference accounting."""
    trace = one_layer(tokens, num_experts)
    for method, hits in expected.items():
        policy, segment = method if isinstance(method, tuple) else (method, None)
        curve = hit_curve(trace, policy, layer=0, segment=segment)
        assert curve.hits[0].tolist() == hits, (name, method)
        np.testing.assert_allclose(curve.rate, np.asarray(hits) / curve.num_requests[0])


def test_spec_k2_rates_at_rho_2():
    trace = one_layer(K2_E6_L10, 6)
    assert hit_curve(trace, "lru", layer=0).rate_at(2) == pytest.approx(0.85)
    assert hit_curve(trace, "sch", layer=0, segment=2).rate_at(2) == pytest.approx(0.85)
    for policy, segment in [("belady", None), ("lfu", None), ("sch", 4)]:
        assert hit_curve(trace, policy, layer=0, segment=segment).rate_at(2) == pytest.approx(0.90)


def test_spec_lfu_pre_token_artifact():
    """Reference LFU loads 0 by evicting 2 yet counts 2 as a hit: 3/4; per-request gives 2/4."""
    trace = one_layer([[2, 1], [0, 2]], 3)
    assert curve_hits(trace, "lfu")[1] == 3
    assert curve_hits(trace, "lfu", accounting="request")[1] == 2


def test_model_level_reference_is_one_cache_over_all_layers_token_by_token():
    """Spec 3.3: a token's requests of all layers (ids offset by layer * E) are one group."""
    rng = np.random.default_rng(0)
    experts = np.argsort(rng.random((30, 3, 5)), axis=-1)[..., :2].astype(np.int16)
    trace = Trace.from_arrays(experts, num_experts=5)
    joined = (experts + (np.arange(3) * 5)[None, :, None]).reshape(30, 1, 6)
    flat = Trace.from_arrays(joined, num_experts=15)
    for policy, segment in ALL_POLICIES:
        model = hit_curve(trace, policy, level="model", segment=segment)
        assert model.hits.tolist() == hit_curve(flat, policy, layer=0, segment=segment).hits.tolist()
        assert model.active_experts == 6 and model.cache_sizes[-1] == 15


# ---------------------------------------------------------------------------- golden counts
GOLDEN_LEVELS = [("layer", 0), ("layer", 23), ("model", None)]
GOLDEN_POLICIES = [("lru", None), ("lfu", None), ("fifo", None), ("belady", None), ("sch", 4), ("sch", 16),
                   ("sch", 64)]
GOLDEN_MODES = [("reference", "free"), ("request", "free"), ("pinned", "free"), ("request", "miss")]
GOLDEN_MODEL_SIZES = [1, 24, 48, 96, 144, 192, 288, 384, 576, 768]


def golden_cases():
    """Every pinned case as a dict of hit_curve arguments."""
    return [
        dict(level=level, layer=layer, policy=policy, segment=segment, accounting=accounting, cold_fill=cold_fill)
        for level, layer in GOLDEN_LEVELS
        for policy, segment in GOLDEN_POLICIES
        for accounting, cold_fill in GOLDEN_MODES
    ]


def golden_key(case) -> str:
    layer = "" if case["layer"] is None else f"[{case['layer']}]"
    segment = "" if case["segment"] is None else f" m={case['segment']}"
    return f"{case['level']}{layer} {case['policy']}{segment} {case['accounting']}/{case['cold_fill']}"


def golden_values(trace, case) -> dict:
    """Total hits over the trace's sequences at the pinned sizes (all sizes at layer level)."""
    curve = hit_curve(trace, **case)
    sizes = curve.cache_sizes if case["level"] == "layer" else np.asarray(GOLDEN_MODEL_SIZES)
    hits = curve.hits[:, sizes - 1]
    totals = np.where((hits < 0).any(axis=0), -1, hits.sum(axis=0))
    return {"sizes": sizes.tolist(), "hits": totals.tolist(), "requests": int(curve.num_requests.sum())}


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN_TRACE.exists():
        pytest.skip(f"{GOLDEN_TRACE.name} is not shipped in traces/")
    return read_trace(GOLDEN_TRACE), json.loads(GOLDEN_PATH.read_text())


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=golden_key(c), marks=[pytest.mark.slow] if (c["level"], c["policy"]) == ("model", "fifo")
                     else [])
        for c in golden_cases()
    ],
)
def test_golden_hit_counts_on_gpt_oss_20b(golden, case):
    """Regenerate with ``python tests/golden/regenerate_cache.py`` (prints the diff; ``--write``)."""
    trace, stored = golden
    assert golden_values(trace, case) == stored["cases"][golden_key(case)]


def test_golden_file_covers_every_case(golden):
    _, stored = golden
    assert sorted(stored["cases"]) == sorted(golden_key(c) for c in golden_cases())


# ---------------------------------------------------------------------------- properties (spec 10)
small_traces = traces(max_tokens=30, max_layers=3, max_experts=16, max_k=6, max_seqs=3, optional_columns=False)


def _level(draw_level, trace):
    return dict(level="model", layer=None) if draw_level == "model" else dict(level="layer", layer=trace.num_layers - 1)


@given(trace=small_traces, level=st.sampled_from(["layer", "model"]), accounting=st.sampled_from(ACCOUNTING),
       cold_fill=st.sampled_from(["free", "miss"]), method=st.sampled_from(STACK_POLICIES))
def test_stack_policy_curves_never_decrease(trace, level, accounting, cold_fill, method):
    policy, segment = method
    hits = hit_curve(trace, policy, segment=segment, accounting=accounting, cold_fill=cold_fill,
                     **_level(level, trace)).hits
    for row in hits:
        defined = row[row >= 0]
        assert (np.diff(defined) >= 0).all()
        assert (row[: len(row) - len(defined)] == -1).all()  # not-applicable sizes come first


@given(trace=small_traces, level=st.sampled_from(["layer", "model"]), accounting=st.sampled_from(ACCOUNTING),
       method=st.sampled_from(ALL_POLICIES))
def test_free_cold_fill_hits_everything_in_the_largest_cache(trace, level, accounting, method):
    policy, segment = method
    curve = hit_curve(trace, policy, segment=segment, accounting=accounting, **_level(level, trace))
    np.testing.assert_array_equal(curve.hits[:, -1], curve.num_requests)
    if (curve.num_requests > 0).any():
        assert curve.rate[-1] == 1.0


@given(trace=small_traces, case=st.sampled_from([("layer", "reference"), ("layer", "pinned"), ("model", "reference")]),
       cold_fill=st.sampled_from(["free", "miss"]))
def test_sch_with_a_one_token_window_is_lru(trace, case, cold_fill):
    """When a group is a whole token. At model level under pinned accounting a group is one layer
    and SCH's one-token window still protects the token's later layers, so they differ."""
    level, accounting = case
    where = _level(level, trace)
    sch = hit_curve(trace, "sch", segment=1, accounting=accounting, cold_fill=cold_fill, **where)
    lru = hit_curve(trace, "lru", accounting=accounting, cold_fill=cold_fill, **where)
    np.testing.assert_array_equal(sch.hits, lru.hits)


def test_sch_m1_differs_from_lru_under_request_accounting():
    """With m = 1 SCH still protects the current token's unserved experts; per-request LRU does
    not (here LRU evicts 0 to load 2 and then misses 0), so the two agree only when hits are
    judged per group (reference) or the group is pinned."""
    trace = one_layer([[0, 1], [2, 0]], 3)
    assert curve_hits(trace, "lru", accounting="request")[1] == 2
    assert curve_hits(trace, "sch", segment=1, accounting="request")[1] == 3


@given(trace=small_traces, level=st.sampled_from(["layer", "model"]), accounting=st.sampled_from(["request", "pinned"]),
       cold_fill=st.sampled_from(["free", "miss"]), method=st.sampled_from(ALL_POLICIES))
def test_belady_is_never_beaten_per_request_or_pinned(trace, level, accounting, cold_fill, method):
    where = _level(level, trace)
    policy, segment = method
    belady = hit_curve(trace, "belady", accounting=accounting, cold_fill=cold_fill, **where).hits
    other = hit_curve(trace, policy, segment=segment, accounting=accounting, cold_fill=cold_fill, **where).hits
    assert (belady >= other).all()
    if accounting == "pinned":  # pinning only restricts Belady's choices
        free = hit_curve(trace, "belady", accounting="request", cold_fill=cold_fill, **where).hits
        assert (free >= belady).all()


@given(trace=small_traces, cold_fill=st.sampled_from(["free", "miss"]))
def test_reference_belady_beats_reference_lru_at_every_size(trace, cold_fill):
    """Spec 10 (also below k); reference LFU/SCH may exceed reference Belady (spec 3.4)."""
    where = _level("layer", trace)
    belady = hit_curve(trace, "belady", cold_fill=cold_fill, **where).hits
    assert (belady >= hit_curve(trace, "lru", cold_fill=cold_fill, **where).hits).all()


def test_reference_sch_can_beat_reference_belady_but_not_per_request():
    trace = one_layer([[0, 3], [2, 0], [3, 1]], 4)
    assert curve_hits(trace, "sch", segment=2)[1] > curve_hits(trace, "belady")[1]
    assert curve_hits(trace, "sch", segment=2, accounting="request")[1] <= curve_hits(
        trace, "belady", accounting="request")[1]


@given(trace=small_traces, level=st.sampled_from(["layer", "model"]), accounting=st.sampled_from(ACCOUNTING),
       method=st.sampled_from(ALL_POLICIES), seed=st.integers(0, 2**16))
def test_relabelling_experts_changes_nothing(trace, level, accounting, method, seed):
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(trace.num_experts) for _ in range(trace.num_layers)])
    experts = trace.experts.astype(np.int64)
    relabelled = np.where(experts >= 0, perms[np.arange(trace.num_layers)[None, :, None], np.maximum(experts, 0)], -1)
    other = Trace.from_arrays(relabelled.astype(np.int16), num_experts=trace.num_experts, seq_ids=trace.seq_ids)
    policy, segment = method
    where = _level(level, trace)
    a = hit_curve(trace, policy, segment=segment, accounting=accounting, **where)
    b = hit_curve(other, policy, segment=segment, accounting=accounting, **where)
    np.testing.assert_array_equal(a.hits, b.hits)


@given(trace=traces(max_tokens=40, max_layers=2, max_experts=20, max_k=1, max_seqs=3, optional_columns=False),
       method=st.sampled_from(ALL_POLICIES), cold_fill=st.sampled_from(["free", "miss"]))
def test_top1_routing_makes_every_accounting_mode_agree(trace, method, cold_fill):
    policy, segment = method
    curves = [hit_curve(trace, policy, layer=0, segment=segment, accounting=mode, cold_fill=cold_fill).hits
              for mode in ACCOUNTING]
    np.testing.assert_array_equal(curves[0], curves[1])
    np.testing.assert_array_equal(curves[0], curves[2])


@given(trace=small_traces, cold_fill=st.sampled_from(["free", "miss"]))
def test_pinned_lru_is_reference_lru_where_defined(trace, cold_fill):
    where = _level("model", trace)
    pinned = hit_curve(trace, "lru", accounting="pinned", cold_fill=cold_fill, layer=trace.num_layers - 1)
    reference = hit_curve(trace, "lru", cold_fill=cold_fill, layer=trace.num_layers - 1)
    defined = pinned.hits >= 0
    np.testing.assert_array_equal(pinned.hits[defined], reference.hits[defined])
    assert hit_curve(trace, "lru", accounting="pinned", **where).hits.shape[1] == trace.num_experts * trace.num_layers


# ---------------------------------------------------------------------------- aggregation
def test_rate_is_the_mean_of_sequence_rates_and_skips_empty_sequences():
    experts = np.array([[0, 1], [1, 2], [-1, -1], [0, 1], [2, 0], [1, 2], [-1, -1]], dtype=np.int16)[:, None, :]
    trace = Trace.from_arrays(experts, num_experts=3, seq_ids=[0, 0, 1, 2, 2, 2, 3])
    curve = hit_curve(trace, "lru", layer=0)
    assert curve.num_requests.tolist() == [4, 0, 6, 0]
    per_seq = curve.hits[[0, 2]] / np.array([[4], [6]])
    np.testing.assert_allclose(curve.rate, per_seq.mean(axis=0))
    np.testing.assert_allclose(curve.pooled_rate, curve.hits.sum(axis=0) / 10)
    np.testing.assert_allclose(curve.per_sequence_rates(), per_seq)
    empty = Trace.from_arrays(np.full((3, 1, 2), -1, dtype=np.int16), num_experts=3)
    assert np.isnan(hit_curve(empty, "lfu", layer=0).rate).all()


def test_not_applicable_sizes_are_nan_in_rates_and_intervals():
    curve = hit_curve(one_layer(K2_E6_L10, 6), "belady", layer=0, accounting="pinned")
    assert curve.hits[0, 0] == -1 and np.isnan(curve.rate[0]) and np.isnan(curve.pooled_rate[0])
    assert curve.applicable.tolist() == [False] + [True] * 5
    low, high = curve.confidence_interval(num_boot=50)
    assert np.isnan(low[0]) and np.isnan(high[0]) and np.isfinite(low[1:]).all()


def test_rate_at_reads_whole_sizes_and_interpolates_between():
    curve = hit_curve(one_layer(K2_E6_L10, 6), "lru", layer=0)
    assert curve.rho.tolist() == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert curve.rate_at(2) == curve.rate[3]
    assert curve.rate_at(1.25) == pytest.approx((curve.rate[1] + curve.rate[2]) / 2)
    np.testing.assert_allclose(curve.rate_at([0.5, 3.0]), curve.rate[[0, 5]])
    for rho in (0.25, 3.5, -1):
        with pytest.raises(ConfigError, match="rho: .* outside this curve's range 0.5..3"):
            curve.rate_at(rho)


def test_confidence_interval_is_the_basic_bootstrap_over_sequences():
    rng = np.random.default_rng(1)
    experts = np.argsort(rng.random((60, 1, 8)), axis=-1)[..., :2].astype(np.int16)
    trace = Trace.from_arrays(experts, num_experts=8, seq_ids=np.repeat(np.arange(6), 10))
    curve = hit_curve(trace, "sch", layer=0, segment=4)
    low, high = curve.confidence_interval(ci=0.9, num_boot=200, seed=5)
    counts = bootstrap.resample_counts(6, 200, 5)
    rates = curve.hits / curve.num_requests[:, None]
    replicates = np.array([np.repeat(rates, row, axis=0).mean(axis=0) for row in counts])
    want_low, want_high = bootstrap.basic_interval(curve.rate, replicates, 0.9)
    np.testing.assert_allclose(low, want_low)
    np.testing.assert_allclose(high, want_high)
    again = curve.confidence_interval(ci=0.9, num_boot=200, seed=5)
    np.testing.assert_array_equal(again[0], low)
    assert not np.array_equal(curve.confidence_interval(ci=0.9, num_boot=200, seed=6)[0], low)
    with pytest.raises(ConfigError, match="ci"):
        curve.confidence_interval(ci=95)


def test_curve_is_frozen_and_read_only():
    curve = hit_curve(one_layer(K2_E6_L10, 6), "lru", layer=0)
    assert isinstance(curve, HitCurve)
    with pytest.raises(AttributeError):
        curve.policy = "lfu"
    with pytest.raises(ValueError):
        curve.hits[0, 0] = 7


def test_same_inputs_give_the_same_bits(tiny_trace):
    for policy, segment in ALL_POLICIES:
        for accounting in ACCOUNTING:
            a = hit_curve(tiny_trace, policy, level="model", segment=segment, accounting=accounting)
            b = hit_curve(tiny_trace, policy, level="model", segment=segment, accounting=accounting)
            assert a.hits.tobytes() == b.hits.tobytes() and a.rate.tobytes() == b.rate.tobytes()


# ---------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(policy="lur"), r"policy: expected one of lru, lfu, fifo, belady, sch, got 'lur'"),
        (dict(policy="sch"), r"segment: policy 'sch' needs its window length in tokens"),
        (dict(policy="sch", segment=0), r"segment: .* integer >= 1"),
        (dict(policy="sch", segment=2.5), r"segment: .* integer >= 1"),
        (dict(segment=4), r"segment: only policy 'sch' takes a segment length"),
        (dict(level="token"), r"level: expected one of layer, model"),
        (dict(layer=None), r"layer: level 'layer' needs a layer index in 0..2"),
        (dict(layer=3), r"layer: expected a trace layer index in 0..2"),
        (dict(layer=True), r"layer: expected a trace layer index"),
        (dict(level="model", layer=1), r"layer: level 'model' pools every MoE layer"),
        (dict(accounting="strict"), r"accounting: expected one of reference, request, pinned"),
        (dict(cold_fill="hit"), r"cold_fill: expected one of free, miss"),
    ],
)
def test_bad_arguments_are_config_errors_naming_the_argument(tiny_trace, kwargs, message):
    args = dict(policy="lru", layer=0)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        hit_curve(tiny_trace, **args)


def test_not_a_trace_and_bad_capacity():
    with pytest.raises(ConfigError, match="trace: expected a moesim.Trace"):
        hit_curve(np.zeros((3, 1, 2)), "lru", layer=0)
    stream = RequestStream.from_trace(one_layer([0, 1], 2), layer=0)
    with pytest.raises(ConfigError, match="max_capacity"):
        hit_counts(stream, "lru", max_capacity=0)
    with pytest.raises(ConfigError, match="grouping"):
        RequestStream.from_trace(one_layer([0, 1], 2), level="model", grouping="sequence")


def test_every_eviction_policy_with_a_kernel_has_a_curve():
    from moesim.policies.eviction import kernel_policies

    assert set(kernel_policies()) == set(POLICIES)


def test_importing_the_wrappers_does_not_load_numba():
    code = (
        "import sys, moesim, moesim.metrics.hit_curve, moesim.policies.eviction; "
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.slow
@pytest.mark.parametrize("accounting", ["reference", "pinned"])
def test_golden_layer_counts_agree_with_the_per_size_twin(golden, accounting):
    """The goldens are not just our own output: at two sizes they equal the plain-Python twin."""
    from tests import naive

    trace, stored = golden
    stream = RequestStream.from_trace(trace, layer=0)
    codes = {"lru": 0, "lfu": 1, "fifo": 2, "belady": 3, "sch": 4}
    for policy, segment in GOLDEN_POLICIES:
        want = naive.per_size_hit_counts(
            stream.keys, stream.group_offsets, stream.group_token, stream.seq_group_offsets, stream.num_keys,
            [4, 8], codes[policy], {"reference": 0, "pinned": 2}[accounting], True, segment or 1,
        ).sum(axis=0)
        key = golden_key(dict(level="layer", layer=0, policy=policy, segment=segment, accounting=accounting,
                              cold_fill="free"))
        assert [stored["cases"][key]["hits"][c - 1] for c in (4, 8)] == want.tolist(), key


@pytest.mark.parametrize(
    "arrays, message",
    [
        (([0, 5], [0, 2], [0], [0, 1], 3), r"key 5 at request 1 is outside 0..2"),
        (([0, 0], [0, 2], [0], [0, 1], 3), r"key 0 appears twice in group 0"),
        (([0, 1], [0, 1, 2], [1, 0], [0, 2], 3), r"group_token must be >= 0 and non-decreasing"),
        (([0, 1], [0, 1], [0], [0, 1], 3), r"group_offsets must rise from 0 to len\(keys\) = 2"),
        (([0, 1], [0, 1, 2], [0], [0, 1], 3), r"group_token has 1 entries, expected one per group \(2\)"),
        (([0, 1], [0, 1, 2], [0, 1], [0, 1], 3), r"seq_group_offsets must rise from 0 to the number of groups"),
        (([0], [0, 1], [0], [0, 1], 0), r"num_keys must be an integer >= 1"),
        (([0.5], [0, 1], [0], [0, 1], 2), r"keys must be a 1-d integer array"),
    ],
)
def test_request_streams_are_checked_before_any_kernel_sees_them(arrays, message):
    keys, offsets, tokens, seqs, num_keys = arrays
    with pytest.raises(ConfigError, match="request stream: " + message):
        RequestStream(np.array(keys), np.array(offsets), np.array(tokens), np.array(seqs), num_keys)
    # A new sequence may restart its token count.
    RequestStream(np.array([0, 1]), np.array([0, 1, 2]), np.array([1, 0]), np.array([0, 1, 2]), 3)
