"""The Numba fast path against its plain-Python twin, the SimPy engine (moesim.sim.des).

The engines must agree on every per-step and per-layer number and on the summary, for random
traces and configurations (every eviction policy, miss policy and predictor; tiny caches that force
staging; starved to ample links, zero latencies and zero-cost work; duplex or half duplex; chunks;
CPU memory over SSD) and for the shipped GPT-OSS-20B trace through real scenarios.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim import Trace
from moesim.errors import ConfigError
from moesim.sim.des import run_des
from moesim.sim.fast import run_fast, unsupported
from moesim.sim.inputs import LinkParams
from moesim.sim.result import LAYER_COLUMNS, STEP_COLUMNS
from tests.conftest import TRACES_DIR
from tests.sim_support import make_inputs, random_trace

GPT_OSS = TRACES_DIR / "gpt-oss-20b-fingerprinting.parquet"
RTOL = 1e-9
EVICTIONS = ("lru", "lfu", "fifo", "belady", "sch", "static", "activation")


def _flat(summary: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def assert_engines_agree(inputs) -> None:
    """Every per-step and per-layer column and every summary number, to ``RTOL``; counts exactly.
    Times are also allowed an absolute 1e-12 of the run's length, for quantities that are zero in
    one engine and a rounding residue of differences of running sums in the other."""
    des, fast = run_des(inputs), run_fast(inputs)
    assert (des.engine, fast.engine) == ("des", "fast")
    atol = 1e-12 * max(des.summary["total_time_s"], 1e-300)
    for table, columns in (("steps", STEP_COLUMNS), ("layers", LAYER_COLUMNS)):
        for name, dtype in columns.items():
            expected = getattr(des, table).column(name).to_numpy()
            got = getattr(fast, table).column(name).to_numpy()
            assert got.dtype == expected.dtype, (table, name)
            if np.issubdtype(dtype, np.integer):
                np.testing.assert_array_equal(got, expected, err_msg=f"{table}.{name}")
            else:
                np.testing.assert_allclose(got, expected, rtol=RTOL, atol=atol, err_msg=f"{table}.{name}")
    expected, got = _flat(des.summary), _flat(fast.summary)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key == "engine":
            continue
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[key]), key
        elif isinstance(value, int):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(value, rel=RTOL, abs=atol), key


@st.composite
def sim_inputs(draw, *, max_tokens: int = 14):
    """A random trace and a random resolved problem over it (costs from a seeded numpy draw)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    num_layers = draw(st.integers(1, 3))
    num_experts = draw(st.integers(2, 8))
    top_k = draw(st.integers(1, min(3, num_experts)))
    num_tokens = draw(st.integers(2, max_tokens))
    trace = random_trace(rng, num_tokens=num_tokens, num_layers=num_layers, num_experts=num_experts, top_k=top_k,
                         num_seqs=draw(st.integers(1, 3)), locality=draw(st.sampled_from([0.0, 0.5, 0.9])))
    predictors = ["none", "oracle", "previous-token", "popularity"]
    if draw(st.booleans()):  # speculative predictions recorded in the trace
        predicted = np.stack([np.stack([rng.choice(num_experts, top_k, replace=False) for _ in range(num_layers)])
                              for _ in range(num_tokens)])
        trace = Trace.from_arrays(trace.experts, num_experts=num_experts, seq_ids=trace.seq_ids,
                                  predicted_experts=predicted.astype(np.int16))
        predictors.append("trace")
    predictor = draw(st.sampled_from(predictors))
    num_keys = num_layers * num_experts
    per_layer = draw(st.booleans())
    eviction = draw(st.sampled_from(EVICTIONS))
    host = draw(st.sampled_from([None, None, "tiny", "some"]))
    host_capacity = None if host is None else (1 if host == "tiny" else draw(st.integers(2, num_keys + 1)))
    zeros = draw(st.sampled_from([0.0, 0.0, 0.5]))  # share of zero-cost work items
    # starved ... ample, and transfers that take no time at all unless work is free too (then a
    # prefetch could land at the very instant of its lookup, which only SimPy's event order decides)
    bandwidth = draw(st.sampled_from([1e6, 3e7, 1e9, 4e10, 1e13] + ([1e30] if zeros == 0 else [])))
    latency = draw(st.sampled_from([0.0, 2e-6, 1e-4]))
    inputs = make_inputs(
        trace,
        capacity=draw(st.integers(1, num_experts + 1)) if per_layer else draw(st.integers(1, num_keys + 2)),
        layout="per_layer" if per_layer else "pool",
        eviction=eviction,
        eviction_params={"segment": draw(st.integers(1, 5))} if eviction == "sch" else None,
        batch_size=draw(st.integers(1, 4)),
        prefill=draw(st.booleans()),
        miss=draw(st.sampled_from(["fetch", "cpu", "best"])),
        predictor=predictor,
        lookahead=1 if predictor == "trace" else draw(st.integers(1, 2 * num_layers + 1)),
        max_experts=draw(st.sampled_from([None, 1, 2])),
        chunk_bytes=draw(st.sampled_from([None, None, 200_000, 700_000])),
        host_capacity=host_capacity,
        host_eviction=draw(st.sampled_from(["lru", "lfu", "fifo", "static"])),
        ssd_direct=draw(st.booleans()),
        ssd_bandwidth_bps=draw(st.sampled_from([5e7, 2e9])),
        ssd_latency_s=draw(st.sampled_from([0.0, 8e-5])),
        d2h=draw(st.booleans()),
        bandwidth_bps=bandwidth,
        latency_s=latency,
        expert_bytes=int(rng.integers(50_000, 2_000_000)),
        act_bytes_per_token=int(rng.integers(1, 50_000)),
    )
    num_steps, num_demands = inputs.num_steps, inputs.num_demands

    def costs(low: float, high: float, shape) -> np.ndarray:
        values = rng.uniform(low, high, shape)
        return np.where(rng.random(shape) < zeros, 0.0, values)

    changes = dict(dense_s=costs(1e-5, 2e-3, (num_steps, num_layers)), head_s=costs(1e-6, 1e-3, num_steps),
                   combine_s=float(costs(1e-7, 1e-4, 1)[0]), expert_gpu_s=costs(1e-6, 1e-3, num_demands),
                   # CPU work is never free: with a free CPU expert its result would start back over
                   # h2d at the very instant a same-sized activation transfer ends on a symmetric
                   # d2h, two independent events whose order only SimPy's event queue decides
                   expert_cpu_s=rng.uniform(1e-6, 3e-3, num_demands))
    if inputs.d2h is not None:  # a duplex link's two directions need not be alike
        changes["d2h"] = LinkParams(name="d2h", bandwidth_bps=draw(st.sampled_from([3e7, 1e9, 1e13, bandwidth])),
                                    latency_s=latency)
    return dataclasses.replace(inputs, **changes)


@settings(max_examples=200)
@given(inputs=sim_inputs())
def test_engines_agree_on_random_configurations(inputs):
    assert unsupported(inputs) is None
    assert_engines_agree(inputs)


@pytest.mark.slow
@settings(max_examples=2000)
@given(inputs=sim_inputs(max_tokens=30))
def test_engines_agree_on_many_longer_random_configurations(inputs):
    assert_engines_agree(inputs)


@pytest.fixture(scope="module")
def gpt_oss():
    from moesim.trace.io import read_trace

    return read_trace(GPT_OSS)


def _real_inputs(trace, **tables):
    """GPT-OSS-20B with bf16 experts (35.6 GiB, so about half must be offloaded) on an RTX 4090,
    the first sequence of the shipped trace (24 MoE layers x 101 tokens x top-4), plus ``tables``
    overriding the scenario."""
    from moesim.scenario import scenario_from_dict
    from moesim.sim.build import build_inputs

    raw = {"model": {"preset": "gpt-oss-20b", "expert_format": "bf16"}, "hardware": "rtx4090-pcie4",
           "trace": {"path": str(GPT_OSS), "max_sequences": 1}}
    for name, table in tables.items():
        base = raw.get(name)
        raw[name] = {**base, **table} if isinstance(base, dict) else table
    return build_inputs(trace, scenario_from_dict(raw))[0]


REAL_SCENARIOS = {  # each exercises its policy: evictions, prefetches useful and wasted, late ones
    "lru": {},
    "belady": {"cache": {"eviction": "belady"}},
    "fifo-oracle": {"cache": {"eviction": "fifo", "capacity": 128}, "prefetch": {"predictor": "oracle", "lookahead": 2}},
    "lfu-per-layer-oracle-capped": {"cache": {"eviction": "lfu", "layout": "per-layer", "capacity": 6},
                                    "prefetch": {"predictor": "oracle", "lookahead": 2, "max_experts": 2}},
    "sch-half-duplex-previous-token": {"cache": {"eviction": "sch", "eviction_params": {"segment": 8}, "capacity": 96},
                                       "hardware": {"preset": "rtx4090-pcie4", "h2d": {"duplex": False}},
                                       "prefetch": {"predictor": "previous-token", "lookahead": 2}},
    "static-popular-best": {"hardware": {"preset": "rtx3060-pcie4", "cpu": {"dram_bytes": "64GiB"}},
                            "cache": {"eviction": "static", "preload": "popular"}, "offload": {"miss": "best"}},
    "activation-batch4-popularity": {"cache": {"eviction": "activation", "capacity": 128},
                                     "workload": {"batch_size": 4}, "prefetch": {"predictor": "popularity"}},
    "ssd-tier-chunked": {"hardware": {"preset": "rtx3060-pcie4", "cpu": {"dram_bytes": "16GiB"}},
                         "offload": {"host_capacity": "auto", "host_reserve": "4GiB", "host_eviction": "lfu"},
                         "prefetch": {"predictor": "oracle", "chunk": "4MiB"}},
}


@pytest.mark.parametrize("name", REAL_SCENARIOS)
def test_engines_agree_on_the_shipped_trace(gpt_oss, name):
    inputs = _real_inputs(gpt_oss, **REAL_SCENARIOS[name])
    assert inputs.num_demands > 5_000
    assert unsupported(inputs) is None
    assert_engines_agree(inputs)


def test_engines_agree_when_all_work_is_free_but_the_link():
    """Zero-cost compute puts many events at the same instant: a link's release must serve its
    queue before work that its own completion set off asks for it (as SimPy orders them)."""
    trace = random_trace(np.random.default_rng(8), num_tokens=30, num_layers=3, num_experts=8, top_k=2)
    for predictor in ("none", "oracle", "previous-token"):
        inputs = make_inputs(trace, capacity=6, bandwidth_bps=1e8, latency_s=1e-4, dense_s=0.0, head_s=0.0,
                             combine_s=0.0, expert_gpu_s=(0.0, 0.0), eviction="belady", predictor=predictor)
        assert_engines_agree(inputs)


@pytest.mark.parametrize("miss", ["cpu", "best"])
def test_engines_agree_when_a_prefetch_waits_for_a_cpu_run_loading_the_same_expert(miss):
    """Lookahead of a whole step: a miss run on the CPU loads expert k from SSD into CPU memory
    while the prefetch of k for the next step finds that load in flight and waits for it (the
    loader goes on first, then the waiters in the order they came)."""
    trace = random_trace(np.random.default_rng(11), num_tokens=40, num_layers=2, num_experts=8, top_k=2,
                         locality=0.9)
    inputs = make_inputs(trace, capacity=16, miss=miss, predictor="oracle", lookahead=2, host_capacity=4,
                         ssd_bandwidth_bps=5e7, ssd_latency_s=1e-4)
    assert_engines_agree(inputs)


def test_best_sends_ties_to_fetch():
    """Free expert kernels on instantaneous links estimate both routes to end now: fetch wins."""
    trace = random_trace(np.random.default_rng(12), num_tokens=12, num_layers=2, num_experts=6, top_k=2)
    inputs = make_inputs(trace, capacity=4, miss="best", bandwidth_bps=1e30, latency_s=0.0,
                         expert_gpu_s=(0.0, 0.0), expert_cpu_s=(0.0, 0.0))
    assert run_fast(inputs).summary["cpu_experts"] == 0
    assert_engines_agree(inputs)


def test_fast_path_is_deterministic():
    trace = random_trace(np.random.default_rng(3), num_tokens=25, num_layers=3, num_experts=8, top_k=2, num_seqs=3)
    inputs = make_inputs(trace, capacity=5, eviction="activation", predictor="oracle", miss="best", batch_size=2)
    first, second = run_fast(inputs), run_fast(inputs)
    assert first.steps.equals(second.steps) and first.layers.equals(second.layers)
    assert first.summary == second.summary


def test_unsupported_names_multi_channel_links():
    trace = random_trace(np.random.default_rng(1), num_tokens=6, num_layers=2, num_experts=4, top_k=2)
    assert unsupported(make_inputs(trace, capacity=3)) is None
    reason = unsupported(make_inputs(trace, capacity=3, channels=2))
    assert "'h2d' with 2 channels (processor sharing)" in reason
    assert "'d2h' with 2 channels" in reason
    with pytest.raises(ConfigError, match="does not support this scenario"):
        run_fast(make_inputs(trace, capacity=3, channels=2))


def test_unsupported_names_policies_without_an_array_form():
    """A policy registered after the kernel was written has no fast-path code: say so by name."""
    from moesim.policies.eviction import EVICTION, LRU, register_eviction
    from moesim.policies.prefetch import PREFETCH, Oracle, register_prefetch

    register_eviction("test-lru-copy")(type("LRUCopy", (LRU,), {}))
    register_prefetch("test-oracle-copy")(type("OracleCopy", (Oracle,), {}))
    try:
        trace = random_trace(np.random.default_rng(2), num_tokens=6, num_layers=2, num_experts=4, top_k=2)
        inputs = make_inputs(trace, capacity=3, eviction="test-lru-copy", predictor="test-oracle-copy",
                             host_capacity=4, host_eviction="test-lru-copy")
        reason = unsupported(inputs)
        assert "eviction policy 'test-lru-copy'" in reason
        assert "CPU-memory eviction policy 'test-lru-copy'" in reason
        assert "prefetch predictor 'test-oracle-copy'" in reason
        assert run_des(inputs).engine == "des"  # the DES runs any registered policy
    finally:
        for registry, name in ((EVICTION, "test-lru-copy"), (PREFETCH, "test-oracle-copy")):
            registry._entries.pop(name)


def test_run_fast_raises_a_one_line_error_and_auto_falls_back(gpt_oss):
    from moesim.scenario import scenario_from_dict
    from moesim.sim import run

    raw = {"model": {"preset": "gpt-oss-20b", "expert_format": "bf16"}, "trace": {"path": str(GPT_OSS), "max_sequences": 1},
           "hardware": {"preset": "rtx4090-pcie4", "h2d": {"channels": 2}}, "workload": {"max_steps": 40}}
    scenario = scenario_from_dict(raw)
    with pytest.raises(ConfigError) as error:
        run(gpt_oss, scenario, engine="fast")
    message = str(error.value)
    assert "\n" not in message and "2 channels (processor sharing)" in message and 'engine = "des"' in message
    assert run(gpt_oss, scenario, engine="auto").engine == "des"
    single = scenario_from_dict({**raw, "hardware": "rtx4090-pcie4"})
    result = run(gpt_oss, single, engine="auto")
    assert result.engine == "fast" and result.scenario["engine_used"] == "fast"


@pytest.mark.parametrize("changes", [
    {"eviction": "sch"},  # SCH without its segment
    {"eviction": "sch", "eviction_params": {"segment": 0}},
    {"eviction": "lru", "eviction_params": {"segment": 4}},
    {"eviction": "no-such-policy"},
    {"predictor": "trace"},  # the trace has no predictions
    {"miss": "elsewhere"},
    {"capacity": 0},
])
def test_invalid_settings_fail_as_in_the_des(changes):
    trace = random_trace(np.random.default_rng(4), num_tokens=6, num_layers=2, num_experts=4, top_k=2)
    inputs = make_inputs(trace, **{"capacity": 3, **changes})
    with pytest.raises(ConfigError) as des_error:
        run_des(inputs)
    with pytest.raises(ConfigError) as fast_error:
        run_fast(inputs)
    assert str(fast_error.value) == str(des_error.value)


def test_auto_falls_back_to_the_des_and_says_why(gpt_oss):
    """engine = "auto" on a scenario the fast path lacks runs the DES, records the reason and prints it."""
    from moesim.report.run_summary import format_run
    from moesim.scenario import scenario_from_dict
    from moesim.sim import run

    raw = {"model": {"preset": "gpt-oss-20b", "expert_format": "bf16"},
           "hardware": {"preset": "rtx4090-pcie4", "h2d": {"channels": 2}},
           "trace": {"path": str(GPT_OSS), "max_sequences": 1}, "workload": {"max_steps": 8}}
    result = run(gpt_oss, scenario_from_dict(raw), engine="auto")
    assert result.engine == "des"
    assert "'h2d' with 2 channels" in result.scenario["engine_fallback"]
    assert "engine des (the fast path does not support link 'h2d' with 2 channels" in format_run(
        result.summary, result.scenario)
    del raw["hardware"]["h2d"]
    result = run(gpt_oss, scenario_from_dict(raw), engine="auto")
    assert result.engine == "fast" and "engine_fallback" not in result.scenario
