"""Cache kernels == their plain-Python twins (tests/naive/cache.py), exactly, plus libCacheSim.

The twins simulate one cache size at a time by the definitions; hypothesis draws traces with
E 1..40, k 1..8, several sequences and empty slots, at layer and model level, and compares the
one-pass curves at a few drawn sizes (all sizes on small inputs), the single-size hit flags, and
the kernels with one another.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moesim.kernels.cache_common import ACCOUNTING_CODES, BELADY, FIFO, LFU, LRU, POLICY_CODES, SCH
from moesim.kernels.cache_sim import cache_hit_flags, fifo_hit_counts
from moesim.kernels.cache_stack import lru_hit_counts, stack_hit_counts
from moesim.metrics.hit_curve import RequestStream
from tests import naive
from tests.strategies import traces

STACK_POLICIES = [LRU, LFU, BELADY, SCH]
MODES = list(ACCOUNTING_CODES.values())


def _readonly(*arrays):
    out = []
    for array in arrays:
        array = np.array(array)
        array.flags.writeable = False
        out.append(array)
    return out


def stream_of(groups_by_seq, num_keys, tokens_by_seq=None):
    """A RequestStream from ``[[group keys, ...] per sequence]`` (token = group index by default)."""
    keys, offsets, tokens, seq_offsets = [], [0], [], [0]
    for s, groups in enumerate(groups_by_seq):
        for g, group in enumerate(groups):
            keys.extend(group)
            offsets.append(len(keys))
            tokens.append(g if tokens_by_seq is None else tokens_by_seq[s][g])
        seq_offsets.append(len(tokens))
    keys, offsets, tokens, seq_offsets = _readonly(
        np.asarray(keys, dtype=np.int32),
        np.asarray(offsets, dtype=np.int64),
        np.asarray(tokens, dtype=np.int64),
        np.asarray(seq_offsets, dtype=np.int64),
    )
    return RequestStream(keys, offsets, tokens, seq_offsets, num_keys)


def local_trace(rng, num_experts, top_k, num_layers, tokens_per_seq, reuse, empty):
    """A trace with locality: each slot repeats an expert of the previous token with probability
    ``reuse`` (so stacks get deep and shallow reuses both happen), some slots empty."""
    from moesim import Trace

    rows = []
    for num_tokens in tokens_per_seq:
        previous = [rng.permutation(num_experts)[:top_k] for _ in range(num_layers)]
        for _ in range(num_tokens):
            token = []
            for layer in range(num_layers):
                keep = [e for e in previous[layer] if rng.random() < reuse]
                fresh = [e for e in rng.permutation(num_experts) if e not in keep]
                chosen = np.array((keep + fresh)[:top_k])
                previous[layer] = chosen
                token.append(np.where(rng.random(top_k) < empty, -1, rng.permutation(chosen)))
            rows.append(token)
    experts = np.array(rows, dtype=np.int16).reshape(len(rows), num_layers, top_k)
    return Trace.from_arrays(experts, num_experts=num_experts,
                             seq_ids=np.repeat(np.arange(len(tokens_per_seq)), tokens_per_seq))


@st.composite
def streams(draw, *, max_tokens=40, max_experts=40, max_k=8):
    """Request streams: random traces from tests.strategies (one layer, or all layers grouped per
    layer or per token), or traces with locality whose sizes are drawn uniformly."""
    level = draw(st.sampled_from(["layer", "model"]))
    if draw(st.integers(0, 3)) > 0:  # 3 in 4: sizes drawn by numpy, not shrunk towards tiny
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        num_experts = int(rng.integers(1, max_experts + 1)) if level == "layer" else int(rng.integers(1, 11))
        top_k = int(rng.integers(1, min(max_k if level == "layer" else 4, num_experts) + 1))
        num_layers = 1 if level == "layer" else int(rng.integers(1, 4))
        tokens = rng.integers(0, (max_tokens if level == "layer" else max_tokens // 3) + 1,
                              int(rng.integers(1, 4)))
        trace = local_trace(rng, num_experts, top_k, num_layers, tokens, rng.random(), 0.1 * rng.random())
        if level == "layer":
            return RequestStream.from_trace(trace, level="layer", layer=0)
        return RequestStream.from_trace(trace, level="model", grouping=draw(st.sampled_from(["layer", "token"])))
    if level == "layer":
        trace = draw(traces(max_tokens=max_tokens // 2, max_layers=2, max_experts=max_experts, max_k=max_k,
                            max_seqs=3, optional_columns=False))
        layer = draw(st.integers(0, trace.num_layers - 1))
        return RequestStream.from_trace(trace, level="layer", layer=layer)
    trace = draw(traces(max_tokens=max_tokens // 3, max_layers=3, max_experts=10, max_k=4, max_seqs=3,
                        optional_columns=False))
    return RequestStream.from_trace(trace, level="model", grouping=draw(st.sampled_from(["layer", "token"])))


def _args(stream):
    return stream.keys, stream.group_offsets, stream.group_token, stream.seq_group_offsets, stream.num_keys


def _sizes(draw_sizes, num_keys):
    return sorted({min(max(1, c), num_keys) for c in draw_sizes} | {num_keys})


# ---------------------------------------------------------------------------- one pass == per size
@given(
    stream=streams(),
    policy=st.sampled_from(STACK_POLICIES),
    accounting=st.sampled_from(MODES),
    cold_free=st.booleans(),
    segment=st.integers(1, 12),
    cut=st.integers(1, 400),
    drawn=st.lists(st.integers(1, 400), min_size=1, max_size=3),
)
def test_stack_hit_counts_matches_naive(stream, policy, accounting, cold_free, segment, cut, drawn):
    keys, offsets, tokens, seqs, num_keys = _args(stream)
    capacity = min(cut, num_keys)  # the stack is cut at max_capacity
    got = stack_hit_counts(keys, offsets, tokens, seqs, num_keys, capacity, policy, accounting, cold_free, segment)
    assert got.shape == (stream.num_sequences, capacity)
    sizes = _sizes(drawn, capacity)
    want = naive.per_size_hit_counts(keys, offsets, tokens, seqs, num_keys, sizes, policy, accounting, cold_free,
                                     segment)
    np.testing.assert_array_equal(got[:, np.asarray(sizes) - 1], want)


@given(stream=streams(), accounting=st.sampled_from(MODES), cold_free=st.booleans(),
       drawn=st.lists(st.integers(1, 400), min_size=1, max_size=3))
def test_lru_hit_counts_matches_naive_and_the_stack(stream, accounting, cold_free, drawn):
    keys, offsets, tokens, seqs, num_keys = _args(stream)
    got = lru_hit_counts(keys, offsets, seqs, num_keys, num_keys, accounting, cold_free)
    sizes = _sizes(drawn, num_keys)
    want = naive.per_size_hit_counts(keys, offsets, tokens, seqs, num_keys, sizes, LRU, accounting, cold_free, 1)
    np.testing.assert_array_equal(got[:, np.asarray(sizes) - 1], want)
    stack = stack_hit_counts(keys, offsets, tokens, seqs, num_keys, num_keys, LRU, accounting, cold_free, 1)
    np.testing.assert_array_equal(got, stack)


@given(stream=streams(max_tokens=16), accounting=st.sampled_from(MODES), cold_free=st.booleans())
def test_fifo_hit_counts_matches_naive_at_every_size(stream, accounting, cold_free):
    keys, offsets, tokens, seqs, num_keys = _args(stream)
    capacity = min(num_keys, 24)
    got = fifo_hit_counts(keys, offsets, seqs, num_keys, capacity, accounting, cold_free)
    want = naive.fifo_hit_counts(keys, offsets, seqs, num_keys, capacity, accounting, cold_free)
    np.testing.assert_array_equal(got, want)


@given(
    stream=streams(),
    policy=st.sampled_from(list(POLICY_CODES.values())),
    accounting=st.sampled_from(MODES),
    cold_free=st.booleans(),
    segment=st.integers(1, 12),
    size=st.integers(1, 400),
)
def test_cache_hit_flags_matches_naive(stream, policy, accounting, cold_free, segment, size):
    keys, offsets, tokens, seqs, num_keys = _args(stream)
    capacity = min(size, num_keys)
    got = cache_hit_flags(keys, offsets, tokens, seqs, num_keys, capacity, policy, accounting, cold_free, segment)
    want = naive.cache_hit_flags(keys, offsets, tokens, seqs, num_keys, capacity, policy, accounting, cold_free,
                                 segment)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_long_streams_deep_stacks_and_time_axis_renumbering(seed):
    """Sequences much longer than the key space (the LRU time axis is renumbered many times) and
    skewed reuse (deep stacks), every policy and mode, all sizes against the twin."""
    rng = np.random.default_rng(seed)
    num_keys, top_k = int(rng.integers(3, 14)), int(rng.integers(1, 4))
    hot = rng.permutation(num_keys)[: max(top_k, num_keys // 3)]
    groups_by_seq = []
    for _ in range(2):
        groups = []
        for _ in range(int(rng.integers(40, 90))):
            pool = hot if rng.random() < 0.7 else np.arange(num_keys)
            groups.append(rng.permutation(pool)[: int(rng.integers(top_k - 1, top_k + 1)) or 1].tolist())
        groups_by_seq.append(groups)
    stream = stream_of(groups_by_seq, num_keys)
    keys, offsets, tokens, seqs, num_keys = _args(stream)
    for accounting in MODES:
        cold_free = bool(rng.integers(0, 2))
        for policy in STACK_POLICIES:
            segment = int(rng.integers(1, 20))
            got = stack_hit_counts(keys, offsets, tokens, seqs, num_keys, num_keys, policy, accounting, cold_free,
                                   segment)
            want = naive.stack_hit_counts(keys, offsets, tokens, seqs, num_keys, num_keys, policy, accounting,
                                          cold_free, segment)
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(
            lru_hit_counts(keys, offsets, seqs, num_keys, num_keys, accounting, cold_free),
            naive.lru_hit_counts(keys, offsets, seqs, num_keys, num_keys, accounting, cold_free),
        )
        np.testing.assert_array_equal(
            fifo_hit_counts(keys, offsets, seqs, num_keys, num_keys, accounting, cold_free),
            naive.fifo_hit_counts(keys, offsets, seqs, num_keys, num_keys, accounting, cold_free),
        )


# ---------------------------------------------------------------------------- kernels agree
@given(stream=streams(), policy=st.sampled_from(STACK_POLICIES), accounting=st.sampled_from(MODES),
       cold_free=st.booleans(), segment=st.integers(1, 12), size=st.integers(1, 400))
def test_flags_sum_to_the_one_pass_counts(stream, policy, accounting, cold_free, segment, size):
    keys, offsets, tokens, seqs, num_keys = _args(stream)
    capacity = min(size, num_keys)
    counts = stack_hit_counts(keys, offsets, tokens, seqs, num_keys, num_keys, policy, accounting, cold_free,
                              segment)[:, capacity - 1]
    flags = cache_hit_flags(keys, offsets, tokens, seqs, num_keys, capacity, policy, accounting, cold_free, segment)
    request_offsets = offsets[seqs]
    for s in range(stream.num_sequences):
        part = flags[request_offsets[s] : request_offsets[s + 1]]
        assert counts[s] == (-1 if (part < 0).any() else part.sum())


def test_the_paper_lru_batch_update_is_sequential_lru_with_pre_token_accounting():
    """Spec section 4: 'identical hit counts to sequential LRU with pre-token accounting'."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        num_keys, top_k = int(rng.integers(2, 9)), int(rng.integers(1, 4))
        top_k = min(top_k, num_keys)
        groups = [rng.permutation(num_keys)[:top_k].tolist() for _ in range(int(rng.integers(0, 14)))]
        stream = stream_of([groups], num_keys)
        keys, offsets, tokens, seqs, _ = _args(stream)
        batch = naive.lru_batch_reference_hit_counts(keys, offsets, seqs, num_keys, num_keys)
        np.testing.assert_array_equal(lru_hit_counts(keys, offsets, seqs, num_keys, num_keys, 0, True), batch)


# ---------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("policy", list(POLICY_CODES.values()))
@pytest.mark.parametrize("accounting", MODES)
def test_empty_sequences_groups_and_streams(policy, accounting):
    stream = stream_of([[], [[], [2], [], [2, 0]], [[]]], 4)
    keys, offsets, tokens, seqs, num_keys = _args(stream)
    if policy == FIFO:
        got = fifo_hit_counts(keys, offsets, seqs, num_keys, 4, accounting, True)
    elif policy == LRU:
        got = lru_hit_counts(keys, offsets, seqs, num_keys, 4, accounting, True)
    else:
        got = stack_hit_counts(keys, offsets, tokens, seqs, num_keys, 4, policy, accounting, True, 2)
    want = naive.per_size_hit_counts(keys, offsets, tokens, seqs, num_keys, range(1, 5), policy, accounting, True, 2)
    np.testing.assert_array_equal(got, want)
    assert got[0].tolist() == [0, 0, 0, 0] and got[2].tolist() == [0, 0, 0, 0]
    nothing = stream_of([], 3)
    assert stack_hit_counts(*_args(nothing)[:4], 3, 3, LFU, accounting, True, 1).shape == (0, 3)
    assert cache_hit_flags(*_args(nothing), 2, policy, accounting, True, 1).shape == (0,)


def test_pinned_sizes_below_a_group_are_not_applicable_per_sequence():
    stream = stream_of([[[0, 1, 2], [3]], [[1], [0, 2]]], 4)
    keys, offsets, tokens, seqs, num_keys = _args(stream)
    got = stack_hit_counts(keys, offsets, tokens, seqs, num_keys, 4, BELADY, 2, False, 1)
    assert got[0, :2].tolist() == [-1, -1] and got[0, 2] >= 0
    assert got[1, 0] == -1 and got[1, 1] >= 0
    flags = cache_hit_flags(keys, offsets, tokens, seqs, num_keys, 2, BELADY, 2, False, 1)
    assert flags[:4].tolist() == [-1] * 4 and (flags[4:] >= 0).all()


def test_fifo_shows_beladys_anomaly():
    """FIFO is not a stack algorithm: on 1 2 3 4 1 2 5 1 2 3 4 5 a 4-slot FIFO misses more than a
    3-slot one (Belady, Nelson & Shedler 1969); LRU, being a stack algorithm, cannot."""
    stream = stream_of([[[x] for x in [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]]], 6)
    keys, offsets, tokens, seqs, num_keys = _args(stream)
    fifo = fifo_hit_counts(keys, offsets, seqs, num_keys, 5, 1, False)[0]
    assert fifo[2] == 3 and fifo[3] == 2  # 9 misses with 3 slots, 10 with 4
    lru = lru_hit_counts(keys, offsets, seqs, num_keys, 5, 1, False)[0]
    assert (np.diff(lru) >= 0).all()


# ---------------------------------------------------------------------------- libCacheSim
def _oracle_general(path, keys):
    """libCacheSim's oracleGeneral binary trace: (clock u32, id u64, size u32, next access i64)."""
    record = np.dtype([("clock", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next_access", "<i8")])
    rows = np.zeros(len(keys), dtype=record)
    next_access = np.full(len(keys), -1, dtype=np.int64)
    last: dict[int, int] = {}
    for i in range(len(keys) - 1, -1, -1):
        next_access[i] = last.get(int(keys[i]), -1)
        last[int(keys[i])] = i
    rows["clock"] = np.arange(len(keys))
    rows["obj_id"] = keys.astype(np.uint64) + 1
    rows["obj_size"] = 1
    rows["next_access"] = next_access
    rows.tofile(path)


@pytest.mark.parametrize("seed", range(3))
def test_request_accounting_with_cold_misses_equals_libcachesim(tmp_path, seed):
    """k = 1, per-request accounting, every first request a miss: LRU, FIFO and Belady miss counts
    equal libCacheSim's (unit-size objects, cache size in objects). libCacheSim's LFU differs by
    definition (its counts start over when an object is evicted; ours are kept, as in the paper)."""
    lcs = pytest.importorskip("libcachesim")
    rng = np.random.default_rng(seed)
    num_keys = int(rng.integers(20, 80))
    keys = (rng.zipf(1.2 + 0.3 * seed, 5000) % num_keys).astype(np.int32)
    path = tmp_path / "stream.oracleGeneral"
    _oracle_general(path, keys)
    stream = stream_of([[[int(x)] for x in keys]], num_keys)
    k, offsets, tokens, seqs, _ = _args(stream)
    ours = {
        "lru": lru_hit_counts(k, offsets, seqs, num_keys, num_keys, 1, False)[0],
        "fifo": fifo_hit_counts(k, offsets, seqs, num_keys, num_keys, 1, False)[0],
        "belady": stack_hit_counts(k, offsets, tokens, seqs, num_keys, num_keys, BELADY, 1, False, 1)[0],
    }
    for name, cls in [("lru", lcs.LRU), ("fifo", lcs.FIFO), ("belady", lcs.Belady)]:
        for size in (1, 2, 5, num_keys // 3, num_keys - 1):
            reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE, lcs.ReaderInitParam())
            miss_ratio, _ = cls(size, hashpower=12).process_trace(reader)
            assert round(miss_ratio * len(keys)) == len(keys) - ours[name][size - 1], (name, size)
