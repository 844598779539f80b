"""Synthetic traces: kernels vs twins, parameters, generator properties, statistics, fit, CLI."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.naive.synthetic as naive
from moesim import ConfigError, Trace, TraceError, read_trace, write_trace
from moesim.cli import main
from moesim.kernels import synthetic as kernels
from moesim.trace.stats import expert_popularity as trace_popularity
from moesim.trace.stats import previous_token_reuse
from moesim.trace.synthetic import (
    SynthParams,
    cross_layer_map,
    generate,
    layer_popularity,
    rank_popularity,
)
from moesim.trace.synthetic import generator as generator_module
from moesim.trace.synthetic.fitting import fit, params_from_document
from moesim.trace.synthetic.generator import _layout, draw_experts
from moesim.trace.synthetic.stats import (
    cross_layer_predictability,
    routing_stats,
    sequence_entropy,
    top_k_share,
    window_reuse,
)
from tests.conftest import TRACES_DIR
from tests.strategies import expert_arrays

UINT64 = st.integers(0, 2**64 - 1)
GPT_OSS = TRACES_DIR / "gpt-oss-20b-fingerprinting.parquet"


def small(**changes) -> SynthParams:
    fields = dict(num_experts=16, top_k=4, num_layers=3, tokens_per_sequence=50, num_sequences=4, seed=1)
    fields.update(changes)
    return SynthParams(**fields)


# ---------------------------------------------------------------------- kernels vs twins
@given(seed=UINT64, stream=UINT64, counter=st.integers(0, 2**63))
def test_random_stream_matches_twin(seed, stream, counter):
    assert int(kernels.mix64(np.uint64(seed))) == naive.mix64(seed)
    key = np.uint64(kernels.stream_key(np.uint64(seed), np.uint64(stream)))  # numba hands back an int
    assert int(key) == naive.stream_key(seed, stream)
    assert kernels.uniform(key, np.uint64(counter)) == naive.uniform(int(key), counter)
    bits = kernels.stream_bits(np.uint64(seed), np.uint64(stream), 5)
    assert bits.tolist() == naive.stream_bits(seed, stream, 5).tolist()


@given(shape=st.floats(1e-12, 50.0), seed=UINT64, counter=st.integers(0, 2**62))
def test_gamma_variate_matches_twin(shape, seed, counter):
    key = np.uint64(kernels.stream_key(np.uint64(seed), np.uint64(1)))
    value, after = kernels.log_gamma_variate(shape, key, np.uint64(counter))
    assert (value, int(after)) == naive.log_gamma_variate(shape, int(key), counter)


@st.composite
def synth_cases(draw):
    num_experts = draw(st.integers(1, 9))
    persistence = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    params = SynthParams(
        num_experts=num_experts,
        top_k=draw(st.integers(1, num_experts)),
        num_layers=draw(st.integers(1, 3)),
        tokens_per_sequence=1,
        popularity_skew=draw(st.sampled_from([0.0, 0.5, 0.95, 0.999])),
        popularity_tail=draw(st.sampled_from([0.0, 1.0, 30.0])),
        persistence=persistence,
        cross_layer=draw(st.sampled_from([0.0, 0.4, 1.0])) * (1.0 - persistence),
        sequence_affinity=draw(st.sampled_from([0.0, 0.05, 0.5, 0.99])),
        seed=draw(UINT64),
    )
    lengths = draw(st.lists(st.integers(0, 6), min_size=1, max_size=3))
    return params, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), draw(st.integers(0, 1000))


@given(case=synth_cases())
def test_synth_kernel_matches_twin(case):
    params, offsets, first_seq = case
    rank_probability, order, rank = _layout(params)
    args = (params.persistence, params.cross_layer, params.sequence_affinity, rank_probability, order, rank)
    shape = (int(offsets[-1]), params.num_layers, params.top_k)
    fast = kernels.synth_experts(np.empty(shape, np.int16), np.uint64(params.seed), first_seq, offsets, *args)
    slow = naive.synth_experts(np.empty(shape, np.int16), params.seed, first_seq, offsets, *args)
    assert np.array_equal(fast, slow)


@given(case=expert_arrays(max_tokens=30, max_layers=3, max_experts=40, max_k=8, empty_slots=True))
def test_cross_layer_kernel_matches_twin(case):
    experts, num_experts = case
    fast = kernels.cross_layer_hits(np.ascontiguousarray(experts), num_experts)
    slow = naive.cross_layer_hits(experts, num_experts)
    assert fast[0].tolist() == slow[0].tolist() and fast[1].tolist() == slow[1].tolist()


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_experts", 0, "num_experts: expected an integer in 1..32767"),
        ("num_experts", 2.0, "num_experts: expected an integer"),
        ("top_k", 17, "top_k: expected at most num_experts"),
        ("num_layers", 0, "num_layers: expected an integer >= 1"),
        ("tokens_per_sequence", True, "tokens_per_sequence: expected an integer"),
        ("num_sequences", -1, "num_sequences: expected an integer >= 1"),
        ("popularity_skew", 1.0, r"popularity_skew: expected a number in \[0, 1\)"),
        ("popularity_tail", 101, r"popularity_tail: expected a number in \[0, 100\]"),
        ("persistence", float("nan"), r"persistence: expected a number in \[0, 1\]"),
        ("cross_layer", -0.1, r"cross_layer: expected a number in \[0, 1\]"),
        ("sequence_affinity", 1.0, r"sequence_affinity: expected a number in \[0, 1\)"),
        ("seed", -1, "seed: expected an integer in 0..18446744073709551615"),
        ("phase", "generate", "phase: expected one of prefill, decode"),
        ("model", "", "model: expected a non-empty label"),
        ("source_trace", 3, "source_trace: expected a string or None"),
    ],
)
def test_params_reject_bad_fields(field, value, message):
    with pytest.raises(ConfigError, match=message):
        small(**{field: value})


def test_params_reject_two_sources_above_one():
    with pytest.raises(ConfigError, match=r"persistence \+ cross_layer: expected at most 1"):
        small(persistence=0.6, cross_layer=0.5)


def test_params_round_trip_and_mapping_errors():
    params = small(popularity_skew=0.3, popularity_tail=2.0, persistence=0.2, source_trace="x.parquet")
    assert SynthParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    assert isinstance(small(num_experts=np.int64(16)).num_experts, int)
    with pytest.raises(ConfigError, match=r"params: unknown key\(s\) \['skew'\]; valid keys are num_experts"):
        SynthParams.from_dict({**params.to_dict(), "skew": 1})
    with pytest.raises(ConfigError, match=r"params: missing key\(s\) \['top_k'\]"):
        SynthParams.from_dict({"num_experts": 4, "num_layers": 1, "tokens_per_sequence": 2})
    with pytest.raises(ConfigError, match=r"f\.json\.persistence: expected a number in \[0, 1\]"):
        SynthParams.from_dict({**params.to_dict(), "persistence": 2}, where="f.json")


def test_rescaled_keeps_the_routing_parameters_and_relabels():
    params = small(popularity_skew=0.3, popularity_tail=1.5, persistence=0.2, cross_layer=0.4, sequence_affinity=0.1)
    finer = params.rescaled(num_experts=64, top_k=16)
    assert (finer.num_experts, finer.top_k, finer.num_layers) == (64, 16, 3)
    routing = ("popularity_skew", "popularity_tail", "persistence", "cross_layer", "sequence_affinity", "seed")
    assert all(getattr(finer, name) == getattr(params, name) for name in routing)
    assert finer.model == "synthetic[rescaled E=64 k=16 L=3]"
    assert finer.rescaled(num_layers=6).model == "synthetic[rescaled E=64 k=16 L=6]"
    assert params.rescaled(num_experts=16) is params
    with pytest.raises(ConfigError, match="top_k: expected at most num_experts"):
        params.rescaled(num_experts=2)


@pytest.mark.parametrize("skew, tail", [(0.0, 0.0), (0.4, 0.0), (0.2, 1.5), (0.7, 4.0)])
def test_rank_popularity_is_independent_of_expert_count(skew, tail):
    coarse = rank_popularity(skew, tail, 32)
    fine = rank_popularity(skew, tail, 128)
    assert coarse.sum() == pytest.approx(1.0) and np.all(np.diff(coarse) <= 1e-15)
    # Splitting each expert in four keeps the share of every rank fraction (up to the 1e-12 floor).
    assert np.allclose(fine.reshape(32, 4).sum(axis=1), coarse, rtol=1e-9, atol=1e-11)
    if skew == 0.0 and tail == 0.0:
        assert np.allclose(coarse, 1 / 32)


# ---------------------------------------------------------------------- generator
def test_generate_makes_a_valid_described_trace():
    routing = dict(popularity_skew=0.5, persistence=0.3, cross_layer=0.3, sequence_affinity=0.2)
    params = small(source_trace="real.parquet", **routing)
    trace = generate(params)
    assert (trace.num_tokens, trace.num_layers, trace.top_k, trace.num_experts) == (200, 3, 4, 16)
    assert trace.sequence_ids.tolist() == [0, 1, 2, 3] and trace.positions[:3].tolist() == [0, 1, 2]
    assert trace.phase_counts() == {"prefill": 0, "decode": 200}
    experts = np.sort(trace.experts, axis=-1)
    assert experts.min() >= 0 and np.all(np.diff(experts, axis=-1) > 0)  # distinct per token and layer
    metadata = trace.metadata
    assert trace.is_synthetic and metadata["generator"] == "moesim.trace.synthetic"
    assert SynthParams.from_dict(metadata["synth_params"]) == params
    assert metadata["source_trace"] == "real.parquet" and trace.model == "synthetic"
    assert "source_trace" not in generate(small()).metadata


def test_generate_is_deterministic_and_seeded():
    params = small(popularity_skew=0.5, persistence=0.3, cross_layer=0.3, sequence_affinity=0.2)
    assert generate(params).equals(generate(params))
    assert not np.array_equal(generate(params).experts, generate(dataclasses.replace(params, seed=2)).experts)


def test_shorter_traces_are_prefixes():
    params = small(persistence=0.4, cross_layer=0.3, sequence_affinity=0.3, tokens_per_sequence=20, num_sequences=5)
    full = generate(params).experts.reshape(5, 20, 3, 4)
    fewer = generate(dataclasses.replace(params, num_sequences=3)).experts.reshape(3, 20, 3, 4)
    shorter = generate(dataclasses.replace(params, tokens_per_sequence=7)).experts.reshape(5, 7, 3, 4)
    assert np.array_equal(fewer, full[:3]) and np.array_equal(shorter, full[:, :7])
    mixed = draw_experts(params, np.array([0, 3, 3, 20]))
    assert np.array_equal(mixed[:3], full[0, :3]) and np.array_equal(mixed[3:], full[2, :17])


def test_threads_do_not_change_the_result(monkeypatch):
    params = small(persistence=0.3, sequence_affinity=0.2, num_sequences=7)
    serial = generate(params)
    monkeypatch.setattr(generator_module, "_MIN_SLOTS_PER_THREAD", 1)
    monkeypatch.setattr(generator_module.os, "cpu_count", lambda: 3)
    assert generate(params).equals(serial)


def _slot0_deviation(trace: Trace, popularity: np.ndarray) -> float:
    """Largest |frequency - probability| of the top-1 expert, in binomial standard errors."""
    worst = 0.0
    for layer in range(trace.num_layers):
        frequency = np.bincount(trace.experts[:, layer, 0], minlength=trace.num_experts) / trace.num_tokens
        error = np.sqrt(popularity[layer] * (1 - popularity[layer]) / trace.num_tokens)
        worst = max(worst, float(np.max(np.abs(frequency - popularity[layer]) / error)))
    return worst


def test_top_expert_follows_the_popularity_through_cross_layer_maps():
    # Slot 0 is a fresh draw or a rank-preserving copy, so at every layer it follows the layer's
    # popularity exactly; with persistence 0 tokens are independent, so binomial errors apply.
    params = small(popularity_skew=0.5, popularity_tail=1.0, cross_layer=0.8, tokens_per_sequence=4000, num_sequences=5)
    popularity = layer_popularity(params)
    assert np.allclose(popularity.sum(axis=1), 1.0)
    assert np.allclose(np.sort(popularity, axis=1)[:, ::-1], rank_popularity(0.5, 1.0, 16))
    assert _slot0_deviation(generate(params), popularity) < 4.5
    # A uniform router would be far off.
    assert _slot0_deviation(generate(small(tokens_per_sequence=4000, num_sequences=5)), popularity) > 10


def _chance_reuse(trace: Trace) -> float:
    """Previous-token reuse of independent tokens with the trace's own expert frequencies."""
    frequency = trace_popularity(trace).counts / trace.num_tokens
    return float(np.mean((frequency**2).sum(axis=1)) / trace.top_k)


@pytest.mark.parametrize("persistence", [0.0, 0.3, 0.7])
def test_persistence_sets_previous_token_reuse(persistence):
    params = small(
        num_experts=64, popularity_skew=0.4, persistence=persistence, tokens_per_sequence=1000, num_sequences=10
    )
    trace = generate(params)
    reuse, chance = previous_token_reuse(trace).overall, _chance_reuse(trace)
    documented = persistence + (1 - persistence) * chance
    # Copies land in the previous set for sure; fresh draws by chance, slightly less often
    # because they avoid the experts the token already holds.
    assert documented - 0.015 <= reuse <= documented + 0.005
    assert reuse >= persistence


@pytest.mark.parametrize("cross_layer", [0.0, 0.3, 0.7])
def test_cross_layer_sets_the_followed_fraction(cross_layer):
    params = small(
        num_experts=64, popularity_skew=0.4, cross_layer=cross_layer, tokens_per_sequence=1000, num_sequences=10
    )
    trace, mapping = generate(params), cross_layer_map(params)
    experts = trace.experts.astype(np.int64)
    followed = np.mean(
        [(experts[:, l, :, None] == mapping[l][experts[:, l - 1, :]][:, None, :]).any(-1).mean() for l in (1, 2)]
    )
    chance = _chance_reuse(trace)  # same-size overlap of two independent draws
    assert cross_layer - 0.005 <= followed <= cross_layer + (1 - cross_layer) * chance + 0.01
    assert (mapping[0] == -1).all() and all(sorted(row) == list(range(64)) for row in mapping[1:])


def test_sequence_affinity_narrows_each_sequence_but_not_the_layer():
    def trace_with(affinity):
        shape = dict(tokens_per_sequence=200, num_sequences=200)
        return generate(small(popularity_skew=0.3, sequence_affinity=affinity, **shape))

    plain, focused = trace_with(0.0), trace_with(0.3)
    assert np.nanmean(sequence_entropy(focused)) < np.nanmean(sequence_entropy(plain)) - 0.1
    # Averaged over sequences the Dirichlet preferences have the layer's popularity as mean.
    assert np.allclose(trace_popularity(focused).shares, trace_popularity(plain).shares, atol=0.02)


def test_generate_rejects_non_params():
    with pytest.raises(ConfigError, match="params: expected a SynthParams, got dict"):
        generate({"num_experts": 4})


# ---------------------------------------------------------------------- statistics
def test_statistics_on_a_hand_made_trace():
    # Layer 1 is a fixed function of layer 0 (e -> e + 4), so it is perfectly predictable.
    layer0 = np.array([[0, 1], [0, 2], [3, 1], [0, 1]])
    experts = np.stack([layer0, layer0 + 4], axis=1)
    trace = Trace.from_arrays(experts, num_experts=8, seq_ids=[0, 0, 1, 1])
    assert cross_layer_predictability(trace)[1] == 1.0 and np.isnan(cross_layer_predictability(trace)[0])
    assert top_k_share(trace).tolist() == [6 / 8, 6 / 8]  # experts 0 and 1 take 3 of the 8 slots each
    assert window_reuse(trace, 1).tolist() == [0.5, 0.5]  # token 1 keeps 0; token 3 keeps neither of 3, 1
    stats = routing_stats(trace, lru_capacities=[2, 16])
    # Caches start empty per sequence; with room for all 16 keys the hits are the repeats: keys 0 and
    # 12 in the first sequence, 1 and 13 in the second, out of 16 requests.
    assert stats.lru_hit_rate[1] == pytest.approx(4 / 16)
    assert stats.summary()["cross_layer"] == 1.0


def test_window_reuse_generalises_previous_token_reuse():
    trace = generate(small(persistence=0.3, sequence_affinity=0.2))
    assert np.allclose(window_reuse(trace, 1), previous_token_reuse(trace).per_layer)
    assert np.all(window_reuse(trace, 8) >= window_reuse(trace, 1))


def test_sequence_entropy_of_one_sequence_is_the_load_entropy():
    trace = generate(small(popularity_skew=0.5, num_sequences=1, tokens_per_sequence=300))
    assert np.allclose(sequence_entropy(trace), trace_popularity(trace).entropy)


def test_routing_stats_validates_its_options():
    trace = generate(small())
    with pytest.raises(ConfigError, match=r"lru_capacities: expected cache sizes in experts, integers in 1\.\.48"):
        routing_stats(trace, lru_capacities=[0])
    with pytest.raises(ConfigError, match="window_tokens: expected an integer >= 1"):
        routing_stats(trace, window_tokens=0)


# ---------------------------------------------------------------------- fit
def _popularity_gap(fitted: SynthParams, true: SynthParams) -> float:
    """Largest gap between the two cumulative rank-popularity curves."""
    a = np.cumsum(rank_popularity(fitted.popularity_skew, fitted.popularity_tail, fitted.num_experts))
    b = np.cumsum(rank_popularity(true.popularity_skew, true.popularity_tail, true.num_experts))
    return float(np.abs(a - b).max())


@pytest.mark.parametrize(
    "routing",
    [
        # Close to what GPT-OSS-20B gives (flat head, thin tail, per-prompt preferences).
        dict(popularity_skew=0.1, popularity_tail=1.5, persistence=0.15, cross_layer=0.45, sequence_affinity=0.13),
        # A Zipf router with strong persistence and independent sequences.
        dict(popularity_skew=0.3, popularity_tail=0.0, persistence=0.6, cross_layer=0.1, sequence_affinity=0.0),
    ],
)
def test_fit_recovers_known_parameters(routing):
    shape = dict(num_experts=32, top_k=4, num_layers=12, tokens_per_sequence=400, num_sequences=20)
    true = SynthParams(seed=3, **shape, **routing)
    result = fit(generate(true), seed=9)
    got = result.params
    assert _popularity_gap(got, true) < 0.03
    assert got.persistence == pytest.approx(true.persistence, abs=0.02)
    assert got.cross_layer == pytest.approx(true.cross_layer, abs=0.02)
    assert got.sequence_affinity == pytest.approx(true.sequence_affinity, abs=0.03)
    fitted = [row for row in result.diagnostics() if row.fitted]
    assert len(fitted) == 5 and max(abs(row.difference) for row in fitted) < 2e-3
    assert (got.num_sequences, got.tokens_per_sequence, got.seed) == (20, 400, 9)


def test_fit_reproduces_the_shipped_gpt_oss_trace():
    real = read_trace(GPT_OSS)
    result = fit(real, source_trace=str(GPT_OSS))
    assert result.phase == "decode" and result.num_tokens_used == real.num_tokens == 8229
    assert result.params.model == "openai/gpt-oss-20b" and result.params.source_trace == str(GPT_OSS)
    rows = {row.statistic: row for row in result.diagnostics()}
    for name in ("load_entropy", "sequence_entropy", "top_k_share", "reuse_prev", "cross_layer"):
        assert rows[name].fitted and abs(rows[name].difference) < 2e-3, name
    # Not fitted, still reproduced: reuse over 8 tokens and shared-LRU hit rates (1/8..1/2 of 768).
    assert abs(rows["reuse_window8"].difference) < 0.03
    for capacity in (96, 192, 384):
        assert abs(rows[f"lru_hit_rate@{capacity}"].difference) < 0.04
    # The synthetic stand-in keeps the trace's locality far above independent uniform routing (k/E).
    assert result.synthetic.summary()["reuse_prev"] > 3 * 4 / 32


def test_fit_is_deterministic_and_serialisable():
    routing = dict(popularity_skew=0.4, persistence=0.3, cross_layer=0.3, sequence_affinity=0.1)
    real = generate(small(tokens_per_sequence=200, **routing))
    first, second = fit(real, seed=4), fit(real, seed=4)
    assert first.params == second.params
    document = json.loads(json.dumps(first.to_dict(), allow_nan=False))
    assert params_from_document(document) == first.params
    assert params_from_document(first.params.to_dict()) == first.params
    assert document["observed"]["cross_layer"][0] is None  # NaN at layer 0 becomes null
    with pytest.raises(ConfigError, match="format 'other' version 1 is not 'moesim.synthetic.fit'"):
        params_from_document({**document, "format": "other"})


def test_fit_subsamples_whole_sequences():
    real = generate(small(persistence=0.3, tokens_per_sequence=100, num_sequences=10))
    result = fit(real, max_tokens=250)
    assert result.num_tokens_used == 250 and result.num_sequences_used == 3
    assert result.observed.num_tokens == result.synthetic.num_tokens == 250
    assert (result.params.num_sequences, result.params.tokens_per_sequence) == (10, 100)


def test_fit_fits_the_decode_phase_by_default():
    params = small(persistence=0.5, tokens_per_sequence=40, num_sequences=3)
    trace = generate(params)
    phases = np.tile(np.r_[np.zeros(10), np.ones(30)], 3).astype(np.int8)
    mixed = Trace.from_arrays(trace.experts, num_experts=16, seq_ids=trace.seq_ids, phases=phases)
    result = fit(mixed)
    assert result.phase == "decode" and result.num_tokens_used == 90 and result.params.phase == "decode"
    assert fit(mixed, phase="prefill").num_tokens_used == 30
    with pytest.raises(TraceError, match="has no prefill tokens to fit"):
        fit(trace, phase="prefill")


def test_fit_says_what_it_cannot_identify():
    one_layer = fit(generate(small(num_layers=1, persistence=0.3)))
    assert one_layer.params.cross_layer == 0.0
    assert any("cross_layer is not identifiable" in note for note in one_layer.notes)
    single_tokens = fit(generate(small(tokens_per_sequence=1, num_sequences=40)))
    assert single_tokens.params.persistence == 0.0 and single_tokens.params.sequence_affinity == 0.0
    assert any("persistence is not identifiable" in note for note in single_tokens.notes)
    everything = fit(generate(small(num_experts=4, top_k=4)))
    assert "nothing to fit" in everything.notes[0] and everything.fitted_moments == ()


def test_fit_rejects_bad_arguments():
    trace = generate(small())
    with pytest.raises(ConfigError, match="max_tokens: expected an integer >= 2"):
        fit(trace, max_tokens=1)
    with pytest.raises(ConfigError, match="trace: expected a moesim Trace, got list"):
        fit([])
    with pytest.raises(ConfigError, match="phase: expected one of prefill, decode"):
        fit(trace, phase="both")
    with pytest.raises(ConfigError, match="seed: expected an integer"):
        fit(trace, seed=-3)


# ---------------------------------------------------------------------- CLI
SYNTH = ["trace", "synth"]
SHAPE = ["--experts", "16", "--top-k", "4", "--layers", "3", "--tokens", "30", "--sequences", "4"]


def test_cli_synth_writes_the_trace_generate_makes(tmp_path, capsys):
    out = tmp_path / "s.parquet"
    argv = SYNTH + [str(out), *SHAPE, "--skew", "0.4", "--tail", "1", "--persistence", "0.3", "--cross-layer", "0.2"]
    assert main(argv + ["--sequence-affinity", "0.1", "--seed", "5", "--model", "toy"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote '{out}': 120 tokens (decode 120) in 4 sequences")
    routing = dict(popularity_skew=0.4, popularity_tail=1.0, persistence=0.3, cross_layer=0.2, sequence_affinity=0.1)
    expected = generate(small(tokens_per_sequence=30, seed=5, model="toy", **routing))
    assert read_trace(out).equals(expected)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--persistence", "1.5"], r"--persistence: expected a number in \[0, 1\], got 1.5"),
        (["--experts", "x"], "--experts: expected an integer, got 'x'"),
        (["--top-k", "40"], "--top-k: expected at most num_experts"),
        (["--skew", "nan"], "--skew: expected a finite number"),
        (["--persistence", "0.6", "--cross-layer", "0.6"], r"persistence \+ cross_layer: expected at most 1"),
    ],
)
def test_cli_synth_bad_values_exit_2_with_one_line(tmp_path, capsys, extra, message):
    assert main(SYNTH + [str(tmp_path / "s.parquet"), *SHAPE, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moesim: error: ")
    assert re.search(message, err)
    assert not (tmp_path / "s.parquet").exists()


def test_cli_synth_usage_errors(tmp_path, capsys):
    assert main(SYNTH + [str(tmp_path / "s.parquet"), "--experts", "8"]) == 2
    assert "--top-k, --layers, --tokens: required without --from-fit" in capsys.readouterr().err
    assert main(SYNTH + [str(tmp_path / "s.csv"), *SHAPE]) == 2
    assert "unknown trace extension '.csv'" in capsys.readouterr().err
    (tmp_path / "s.parquet").write_bytes(b"old")
    assert main(SYNTH + [str(tmp_path / "s.parquet"), *SHAPE]) == 2
    assert "exists; pass --force to replace it" in capsys.readouterr().err
    assert (tmp_path / "s.parquet").read_bytes() == b"old"


def test_cli_fit_then_synth_from_fit(tmp_path, capsys):
    real = tmp_path / "real.parquet"
    routing = dict(popularity_skew=0.4, persistence=0.3, cross_layer=0.3)
    write_trace(generate(small(tokens_per_sequence=100, model="toy/moe", **routing)), real)
    fit_json = tmp_path / "fit.json"
    assert main(["trace", "fit", str(real), "--out", str(fit_json), "--per-layer"]) == 0
    text = capsys.readouterr().out
    assert "popularity_skew" in text and "reuse_prev*" in text and "lru_hit_rate@" in text and "wrote" in text
    # Per-layer rows: cross_layer starts at layer 1 (layer 0 has nothing to predict from).
    assert re.search(r"^cross_layer +1 ", text, re.M) and not re.search(r"^cross_layer +0 ", text, re.M)
    document = json.loads(fit_json.read_text())
    assert document["format"] == "moesim.synthetic.fit" and document["params"]["source_trace"] == str(real)

    assert main(["trace", "fit", str(real), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["params"] == document["params"]

    out = tmp_path / "finer.arrow"
    assert main(SYNTH + [str(out), "--from-fit", str(fit_json), "--experts", "64", "--top-k", "16", "--seed", "2"]) == 0
    capsys.readouterr()
    finer = read_trace(out)
    assert (finer.num_experts, finer.top_k, finer.num_layers, finer.num_tokens) == (64, 16, 3, 400)
    params = SynthParams.from_dict(finer.metadata["synth_params"])
    assert params.persistence == document["params"]["persistence"] and params.seed == 2
    assert finer.model == "toy/moe[rescaled E=64 k=16 L=3]"
    assert finer.metadata["source_trace"] == str(real)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-tokens", "abc"], "--max-tokens: expected an integer, got 'abc'"),
        (["--out", "fit.txt"], "expected a .json file name"),
        (["--seed", "-1"], "seed: expected an integer in 0.."),
    ],
)
def test_cli_fit_bad_values_exit_2_with_one_line(tmp_path, capsys, argv, message):
    real = tmp_path / "real.parquet"
    write_trace(generate(small()), real)
    assert main(["trace", "fit", str(real), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_fit_and_synth_report_unreadable_files(tmp_path, capsys):
    assert main(["trace", "fit", str(tmp_path / "missing.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "fit.json"
    bad.write_text("{oops")
    assert main(SYNTH + [str(tmp_path / "s.parquet"), "--from-fit", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"params": {"num_experts": 4}}))
    assert main(SYNTH + [str(tmp_path / "s.parquet"), "--from-fit", str(bad)]) == 2
    assert "params: missing key(s) ['top_k', 'num_layers', 'tokens_per_sequence']" in capsys.readouterr().err
