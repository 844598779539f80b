"""Eviction policies in step form: the registry, construction errors, the shared mechanism, and
hit sequences identical to the kernels' under per-request and pinned accounting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.kernels.cache_common import ACCOUNTING_CODES, POLICY_CODES
from moesim.kernels.cache_sim import cache_hit_flags
from moesim.metrics.hit_curve import RequestStream
from moesim.policies import Registry
from moesim.policies.eviction import (
    EVICTION,
    ExpertCache,
    SCHParams,
    kernel_policies,
    make_policy,
    register_eviction,
)
from tests.strategies import traces


# ---------------------------------------------------------------------------- registry
def test_registry_decorator_lookup_and_errors():
    registry: Registry[type] = Registry("prefetch policy")

    @registry.register("next-layer", aliases=("lookahead",))
    class NextLayer:
        pass

    assert registry.get("next-layer") is NextLayer
    assert registry.get("Next_Layer") is NextLayer and registry.get("LOOKAHEAD") is NextLayer
    assert registry.canonical("lookahead") == "next-layer"
    assert registry.names() == ("next-layer",) and "lookahead" in registry and 3 not in registry
    assert list(registry) == ["next-layer"] and len(registry) == 1
    with pytest.raises(ConfigError, match=r"^prefetch.policy: unknown prefetch policy 'next-layr'; use one of "
                       r"next-layer \(did you mean 'next-layer'\?\)$"):
        registry.get("next-layr", field="prefetch.policy")
    with pytest.raises(ConfigError, match=r"^prefetch policy: expected a name, one of next-layer; got 7$"):
        registry.get(7)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("lookahead")(object)


def test_eviction_registry_lists_every_policy_and_points_to_fixes():
    # Other policies (simulator-only ones without a kernel) may follow the five with curves.
    assert EVICTION.names()[:5] == ("lru", "fifo", "lfu", "belady", "sch")
    assert set(kernel_policies()) == {"lru", "fifo", "lfu", "belady", "sch"}
    listing = ", ".join(EVICTION.names())
    with pytest.raises(ConfigError, match=rf"^cache.eviction: unknown eviction policy 'lfru'; use one of "
                       rf"{listing} \(did you mean '(lru|lfu)'\?\)$"):
        EVICTION.get("lfru", field="cache.eviction")
    with pytest.raises(ValueError, match="already registered"):
        register_eviction("lru")(type("Other", (), {}))


# ---------------------------------------------------------------------------- construction
def test_make_policy_checks_parameters_and_the_future():
    future = RequestStream.from_trace(_one_layer([[0, 1], [1, 2]], 3), layer=0)
    assert make_policy("SCH", {"segment": 4}, future=future).params == SCHParams(segment=4)
    assert make_policy("sch", SCHParams(segment=2), future=future).params.segment == 2
    with pytest.raises(ConfigError, match=r"eviction_params: unknown field 'segment' for eviction policy 'lru'; "
                       r"it takes no parameters"):
        make_policy("lru", {"segment": 4})
    with pytest.raises(ConfigError, match=r"eviction_params.segment: eviction policy 'sch' needs it"):
        make_policy("sch", {}, future=future)
    with pytest.raises(ConfigError, match=r"eviction_params.segment: expected SCH's window length"):
        make_policy("sch", {"segment": 0}, future=future)
    with pytest.raises(ConfigError, match=r"eviction policy 'belady' reads the future: pass future="):
        make_policy("belady")
    with pytest.raises(ConfigError, match=r"eviction_params: expected a mapping or SCHParams"):
        make_policy("sch", 16, future=future)
    with pytest.raises(ConfigError, match=r"capacity_experts: expected an integer >= 1, got 0"):
        ExpertCache(0)


def test_future_aware_policies_must_be_driven_in_stream_order():
    future = RequestStream.from_trace(_one_layer([[0, 1], [1, 2]], 3), layer=0)
    cache = ExpertCache(2, "belady", future=future)
    cache.request_group([0, 1])
    with pytest.raises(ConfigError, match=r"request 2 is for key 2 but the future stream has key 1 there"):
        cache.request(2)
    cache = ExpertCache(2, "sch", params={"segment": 2}, future=future)
    for key in (0, 1, 1, 2):
        cache.request(key)
    with pytest.raises(ConfigError, match=r"after the end of the future stream \(4 requests\)"):
        cache.request(0)


# ---------------------------------------------------------------------------- the mechanism
def _one_layer(tokens, num_experts):
    from moesim import Trace

    return Trace.from_arrays(np.asarray(tokens, dtype=np.int16)[:, None, :], num_experts=num_experts)


def test_hit_touches_miss_evicts_while_full_then_inserts():
    cache = ExpertCache(2, "lru")
    assert [cache.request(k) for k in (1, 2, 1, 3)] == [False, False, True, False]
    assert cache.residents == {1, 3} and len(cache) == 2 and 1 in cache and 2 not in cache
    fifo = ExpertCache(2, "fifo")
    assert [fifo.request(k) for k in (1, 2, 1, 3, 1)] == [False, False, True, False, False]


def test_pinned_keys_are_never_evicted():
    cache = ExpertCache(3, "lru")
    cache.request_group([1, 2, 3])
    assert cache.request(4, pinned={1}) is False
    assert cache.residents == {1, 3, 4}  # 1 was least recent but pinned: 2 went
    assert cache.insert(5, pinned={3, 4}) == [1]
    with pytest.raises(ConfigError, match=r"cache: all 3 slots hold pinned experts"):
        cache.insert(6, pinned={3, 4, 5})
    assert cache.insert(5) == [] and cache.discard(5) and not cache.discard(5)


def test_request_group_judges_hits_before_loading_and_protects_the_group():
    cache = ExpertCache(2, "lru")
    cache.request_group([0, 1])
    cache.request(2)  # evicts 0; residents 1, 2 with 1 least recent
    # Per request, loading 0 would evict 1 before it is served; pinned keeps it.
    assert cache.request_group([0, 1]) == [False, True]
    assert cache.residents == {0, 1}


def test_lfu_keeps_counts_across_evictions():
    cache = ExpertCache(2, "lfu")
    for key in (1, 1, 2, 2, 2, 3):  # 3 evicts 1 (count 2 < 3)
        cache.request(key)
    assert cache.residents == {2, 3}
    cache.request(1)  # 1 comes back with its count (now 3); 3 (count 1) goes
    cache.request(3)  # 1 and 2 both have count 3: 2, requested longer ago, goes
    assert cache.residents == {1, 3}  # an LFU that forgot 1's count would have evicted 1


def test_belady_prefetch_uses_the_next_use_from_the_cursor():
    future = RequestStream.from_trace(_one_layer([[0], [1], [2], [0], [1]], 3), layer=0)
    cache = ExpertCache(2, "belady", future=future)
    cache.request(0)
    assert cache.insert(2) == []  # a prefetch: 2 is needed at request 2
    assert cache.request(1) is False
    assert cache.residents == {1, 2}  # 0 (next use 3) goes, the prefetched 2 (next use 2) stays
    assert cache.request(2) is True


# ---------------------------------------------------------------------------- step == kernel
@st.composite
def streams(draw):
    trace = draw(traces(max_tokens=25, max_layers=3, max_experts=24, max_k=6, max_seqs=3, optional_columns=False))
    if draw(st.booleans()):
        return RequestStream.from_trace(trace, level="layer", layer=draw(st.integers(0, trace.num_layers - 1)))
    return RequestStream.from_trace(trace, level="model", grouping="layer")


def drive(stream, capacity, policy, accounting, segment):
    """Hit flags of the step form, one fresh cache per sequence (kernel convention)."""
    flags = np.zeros(len(stream.keys), dtype=np.int8)
    offsets, seqs = stream.group_offsets, stream.seq_group_offsets
    for s in range(stream.num_sequences):
        g0, g1 = int(seqs[s]), int(seqs[s + 1])
        a, b = int(offsets[g0]), int(offsets[g1])
        if accounting == "pinned" and np.diff(offsets[g0 : g1 + 1]).max(initial=0) > capacity:
            flags[a:b] = -1
            continue
        future = RequestStream(
            keys=stream.keys[a:b],
            group_offsets=offsets[g0 : g1 + 1] - a,
            group_token=stream.group_token[g0:g1],
            seq_group_offsets=np.array([0, g1 - g0]),
            num_keys=stream.num_keys,
        )
        params = {"segment": segment} if policy == "sch" else None
        cache = ExpertCache(capacity, policy, params=params, future=future)
        for g in range(g0, g1):
            keys = stream.keys[offsets[g] : offsets[g + 1]].tolist()
            if accounting == "pinned":
                hits = cache.request_group(keys)
            else:
                hits = [cache.request(key) for key in keys]
            flags[offsets[g] : offsets[g + 1]] = hits
    return flags


@given(stream=streams(), policy=st.sampled_from(kernel_policies()), accounting=st.sampled_from(["request", "pinned"]),
       size=st.integers(1, 80), segment=st.integers(1, 8))
def test_step_form_gives_the_kernel_hit_sequence(stream, policy, accounting, size, segment):
    capacity = min(size, stream.num_keys)
    want = cache_hit_flags(
        stream.keys, stream.group_offsets, stream.group_token, stream.seq_group_offsets, stream.num_keys, capacity,
        POLICY_CODES[policy], ACCOUNTING_CODES[accounting], False, segment,
    )
    np.testing.assert_array_equal(drive(stream, capacity, policy, accounting, segment), want)


@pytest.mark.parametrize("policy", kernel_policies())
def test_step_form_on_the_shipped_trace_equals_the_kernel(policy):
    """A real decode trace (one GPT-OSS-20B prompt, all 24 layers in one cache, pinned groups)."""
    from tests.conftest import TRACES_DIR

    path = TRACES_DIR / "gpt-oss-20b-fingerprinting.parquet"
    if not path.exists():
        pytest.skip("traces/gpt-oss-20b-fingerprinting.parquet is not shipped")
    from moesim import read_trace

    trace = read_trace(path)
    trace = trace.select(seqs=[int(trace.sequence_ids[0])])
    stream = RequestStream.from_trace(trace, level="model", grouping="layer")
    want = cache_hit_flags(stream.keys, stream.group_offsets, stream.group_token, stream.seq_group_offsets,
                           stream.num_keys, 192, POLICY_CODES[policy], ACCOUNTING_CODES["pinned"], False, 16)
    np.testing.assert_array_equal(drive(stream, 192, policy, "pinned", 16), want)
