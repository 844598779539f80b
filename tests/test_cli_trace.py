"""``moesim trace info|validate|convert`` and the statistics behind ``info`` (moesim.trace.stats)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from moesim import Trace, read_trace, write_trace
from moesim.cli import main
from moesim.trace.importers import import_trace
from moesim.trace.stats import expert_popularity, previous_token_reuse
from tests.conftest import TRACES_DIR
from tests.strategies import traces

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "importers"
JSONL = FIXTURES / "routing.jsonl"
SHIPPED = TRACES_DIR / "gpt-oss-20b-fingerprinting.parquet"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------- statistics
def _naive_reuse(trace: Trace):
    num_layers = trace.num_layers
    matches, slots, products = [0] * num_layers, [0] * num_layers, [0] * num_layers
    for t in range(1, trace.num_tokens):
        if trace.seq_ids[t] != trace.seq_ids[t - 1]:
            continue
        for layer in range(num_layers):
            current = {int(x) for x in trace.experts[t, layer] if x >= 0}
            previous = {int(x) for x in trace.experts[t - 1, layer] if x >= 0}
            matches[layer] += len(current & previous)
            slots[layer] += len(current)
            products[layer] += len(current) * len(previous)
    return matches, slots, [p / trace.num_experts for p in products]


@given(traces(max_tokens=30, max_layers=3, max_experts=12, optional_columns=False))
def test_reuse_and_popularity_equal_plain_counting(trace):
    reuse = previous_token_reuse(trace)
    matches, slots, expected = _naive_reuse(trace)
    assert reuse.matches.tolist() == matches and reuse.slots.tolist() == slots
    assert reuse.expected_matches.tolist() == expected
    popularity = expert_popularity(trace)
    naive = np.zeros((trace.num_layers, trace.num_experts), dtype=np.int64)
    for t, layer, slot in np.ndindex(trace.experts.shape):
        if trace.experts[t, layer, slot] >= 0:
            naive[layer, trace.experts[t, layer, slot]] += 1
    assert np.array_equal(popularity.counts, naive)
    assert popularity.counts.sum() == (trace.experts >= 0).sum()


def test_reuse_chunks_do_not_change_the_result(monkeypatch):
    trace = read_trace(SHIPPED)
    whole = previous_token_reuse(trace)
    from moesim.trace import stats

    monkeypatch.setattr(stats, "_REUSE_CHUNK_ROWS", 7)  # chunk edges fall inside and between sequences
    chunked = previous_token_reuse(trace)
    assert np.array_equal(whole.matches, chunked.matches) and np.array_equal(whole.slots, chunked.slots)
    assert np.array_equal(whole.expected_matches, chunked.expected_matches)


def test_statistics_of_balanced_and_skewed_routing():
    # Every expert exactly as often, and tokens that never repeat the previous token's experts.
    balanced = Trace.from_arrays(np.array([[[0, 1]], [[2, 3]], [[0, 1]], [[2, 3]]]), num_experts=4)
    popularity = expert_popularity(balanced)
    assert popularity.top_share.tolist() == [0.25]
    assert popularity.entropy.tolist() == pytest.approx([1.0])
    assert popularity.cv.tolist() == [0.0] and popularity.load_balance.tolist() == [0.0]
    reuse = previous_token_reuse(balanced)
    assert (reuse.overall, reuse.uniform, reuse.lift) == (0.0, 0.5, 0.0)
    # One expert always, the other slot spread: frequencies [1, 1/3, 1/3, 1/3] -> LB = SD of them.
    skewed = Trace.from_arrays(np.array([[[0, 1]], [[0, 2]], [[0, 3]]]), num_experts=4)
    popularity = expert_popularity(skewed)
    assert popularity.frequencies.tolist() == [[1.0, 1 / 3, 1 / 3, 1 / 3]]
    assert popularity.load_balance[0] == pytest.approx(np.std([1.0, 1 / 3, 1 / 3, 1 / 3]))
    assert popularity.top_share[0] == 0.5 and popularity.top_expert.tolist() == [0]
    assert previous_token_reuse(skewed).overall == 0.5  # expert 0 is reused, the other slot never


def test_uniform_random_routing_reuses_k_over_e():
    rng = np.random.default_rng(3)
    experts = np.argsort(rng.random((20000, 2, 16)), axis=-1)[..., :4]
    reuse = previous_token_reuse(Trace.from_arrays(experts, num_experts=16))
    assert reuse.uniform == 0.25
    # 20k tokens x 2 layers x 4 slots: the SD of the estimate is about 0.002
    assert abs(reuse.overall - 0.25) < 0.01
    assert np.all(np.abs(reuse.per_layer - 0.25) < 0.015)


def test_empty_and_single_token_traces_have_nan_statistics():
    single = Trace.from_arrays(np.array([[[0, 1]]]), num_experts=4)
    reuse = previous_token_reuse(single)
    assert reuse.slots.tolist() == [0] and np.isnan(reuse.overall) and np.isnan(reuse.per_layer[0])
    empty = Trace.from_arrays(np.zeros((0, 2, 1), dtype=np.int16), num_experts=4)
    popularity = expert_popularity(empty)
    assert popularity.counts.shape == (2, 4) and np.isnan(popularity.entropy).all()
    assert np.isnan(popularity.load_balance_model) and popularity.top_expert.tolist() == [-1, -1]


def test_info_on_a_trace_without_token_pairs(capsys, tmp_path):
    path = write_trace(Trace.from_arrays(np.zeros((0, 2, 1), dtype=np.int16), num_experts=4), tmp_path / "e.arrow")
    code, out, err = run(capsys, "trace", "info", path)
    assert (code, err) == (0, "")
    assert "tokens        0 (prefill 0, decode 0)" in out
    assert out.splitlines()[-1] == "reuse: no token has a previous token in its sequence"
    code, out, _ = run(capsys, "trace", "info", path, "--json")
    info = json.loads(out)
    assert info["layers"][0]["top_expert"] == -1 and info["layers"][0]["reuse"] is None
    assert info["overall"]["reuse"] is None and info["overall"]["unused_experts"] == 8


# ---------------------------------------------------------------------- info
def test_info_json_on_the_fixture_has_hand_computed_values(capsys):
    code, out, err = run(capsys, "trace", "info", JSONL, "--num-experts", "8", "--model", "tiny", "--json")
    assert code == 0 and err == ""
    info = json.loads(out)
    assert info["path"] == str(JSONL)
    assert (info["model"], info["num_experts"], info["top_k"], info["num_layers"]) == ("tiny", 8, 2, 2)
    assert info["moe_layers"] == [1, 3] and info["num_sequences"] == 2 and info["num_tokens"] == 5
    assert info["tokens_by_phase"] == {"prefill": 1, "decode": 4}
    assert (info["routed_slots"], info["empty_slots"]) == (19, 1)
    assert info["columns"] == {"weights": True, "predicted_experts": False, "router_logits": False}
    assert info["synthetic"] is False
    assert info["metadata"] == {"source": {"file": str(JSONL), "format": "jsonl"}}
    layer0, layer1 = info["layers"]
    # layer 0: expert 5 in 3 of 10 slots, expert 7 never; reuse 1+1 (seq 7) + 1 (seq 3) of 6 slots
    assert (layer0["model_layer"], layer0["top_expert"], layer0["unused_experts"]) == (1, 5, 1)
    assert layer0["top_share"] == 0.3
    assert (layer0["reuse"], layer0["reuse_uniform"]) == (0.5, 0.25)
    # layer 1: expert 1 in 3 of 9 slots; reuse 2 + 1 + 1 of 2 + 2 + 1 slots (token 4 has an empty slot)
    assert (layer1["top_expert"], layer1["top_share"], layer1["unused_experts"]) == (1, 1 / 3, 3)
    assert (layer1["reuse"], layer1["reuse_uniform"]) == (0.8, 0.25)
    overall = info["overall"]
    assert overall["reuse"] == 7 / 11 and overall["reuse_uniform"] == 0.25
    assert overall["reuse_lift"] == pytest.approx(28 / 11)
    counts = np.array([[1, 1, 1, 1, 1, 3, 2, 0], [2, 3, 2, 1, 0, 0, 0, 1]])
    assert layer0["load_balance"] == pytest.approx(np.std(counts[0] / 5))
    assert overall["load_balance_model"] == pytest.approx(np.std(counts / 5))
    assert layer0["cv"] == pytest.approx(np.std(counts[0]) / np.mean(counts[0]))
    shares = counts[1][counts[1] > 0] / 9
    assert layer1["entropy"] == pytest.approx(-(shares * np.log(shares)).sum() / np.log(8))


def test_info_text_on_the_shipped_trace(capsys):
    code, out, err = run(capsys, "trace", "info", SHIPPED)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"trace         {SHIPPED}"
    for expected in (
        "model         openai/gpt-oss-20b",
        "experts       E=32 per MoE layer, top-k 4",
        "MoE layers    24 (model layers 0..23)",
        "sequences     33",
        "tokens        8229 (prefill 0, decode 8229)",
        "routed slots  789984",
        "columns       weights yes, predicted_experts no, router_logits no",
        "synthetic     no",
        "source        gptoss-json 'data'",
        "license       Apache-2.0",
        "repository    https://github.com/AmanPriyanshu/GPT-OSS-MoE-ExpertFingerprinting",
        "commit        72b368f60045221f21eeb65debb27d58de92e565",
        "metadata      description, sequences (see --json)",
    ):
        assert expected in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("layer  model_layer"))
    assert lines[header].split() == ["layer", "model_layer", "top_expert", "top_share", "entropy", "cv", "LB",
                                     "unused", "reuse", "uniform"]
    rows = lines[header + 2 : header + 2 + 25]
    assert [row.split()[0] for row in rows] == [str(i) for i in range(24)] + ["all"]
    assert rows[-1].split()[-2:] == ["0.4313", "0.125"]
    assert lines[-1] == "reuse 0.4313 vs uniform 0.1250: 3.45x the temporal locality of independent routing"


def test_info_errors_are_one_line_exit_2(capsys):
    code, out, err = run(capsys, "trace", "info", JSONL)
    assert code == 2 and out == ""
    assert err.startswith("moesim: error: format 'jsonl': option 'num_experts' is required") and err.count("\n") == 1
    code, _, err = run(capsys, "trace", "info", SHIPPED, "--num-experts", "32")
    assert code == 2
    assert err == ("moesim: error: format 'moesim': unknown option(s) 'num_experts'; valid options: metadata\n")


# ---------------------------------------------------------------------- validate
def test_validate_valid_trace_prints_one_line(capsys):
    code, out, err = run(capsys, "trace", "validate", SHIPPED)
    assert (code, err) == (0, "")
    assert out == (f"'{SHIPPED}': valid: 8229 tokens (decode 8229) in 33 sequences, 24 MoE layers, E=32, k=4, "
                   f"model openai/gpt-oss-20b\n")


def test_validate_foreign_format(capsys):
    code, out, _ = run(capsys, "trace", "validate", JSONL, "--num-experts", "8")
    assert code == 0
    assert out == (f"'{JSONL}': valid: 5 tokens (prefill 1, decode 4) in 2 sequences, 2 MoE layers, E=8, k=2, "
                   f"model unknown\n")


def test_validate_invalid_trace_exit_2_one_line(capsys, tmp_path, tiny_trace):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(JSONL.read_text().replace('"layer": 1,', '"layer": 1, "expert": 1,', 1))
    code, out, err = run(capsys, "trace", "validate", bad, "--num-experts", "8")
    assert (code, out) == (2, "")
    assert err == (f"moesim: error: file '{bad}' line 1: unknown field 'expert'; expected seq, pos, layer, experts, "
                   f"weights, phase\n")
    truncated = write_trace(tiny_trace, tmp_path / "t.parquet")
    truncated.write_bytes(truncated.read_bytes()[:300])
    code, out, err = run(capsys, "trace", "validate", truncated)
    assert (code, out) == (2, "")
    assert err.startswith(f"moesim: error: file '{truncated}': cannot be read as Parquet") and err.count("\n") == 1


# ---------------------------------------------------------------------- convert
@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_convert_jsonl_writes_the_imported_trace(capsys, tmp_path, suffix):
    out_path = tmp_path / f"t{suffix}"
    code, out, err = run(capsys, "trace", "convert", JSONL, out_path, "--num-experts", "8", "--model", "tiny",
                         "--meta", "license=CC0-1.0", "--meta", 'capture={"engine": "test"}')
    assert (code, err) == (0, "")
    assert out == (f"wrote '{out_path}': 5 tokens (prefill 1, decode 4) in 2 sequences, 2 MoE layers, E=8, k=2, "
                   f"model tiny\n")
    expected = import_trace(JSONL, num_experts=8, model="tiny",
                            metadata={"license": "CC0-1.0", "capture": {"engine": "test"}})
    assert read_trace(out_path).equals(expected)
    assert [p.name for p in tmp_path.iterdir()] == [out_path.name]  # no temporary left behind


def test_convert_directory_and_native_traces(capsys, tmp_path):
    gptoss = FIXTURES / "gptoss"
    first = tmp_path / "g.parquet"
    assert run(capsys, "trace", "convert", gptoss, first, "--from", "gptoss-json")[0] == 0
    assert read_trace(first).equals(import_trace(gptoss, "gptoss-json"))
    # A moesim trace converts between Parquet and Arrow unchanged (format from the extension).
    second = tmp_path / "g.arrow"
    assert run(capsys, "trace", "convert", first, second)[0] == 0
    assert read_trace(second).equals(read_trace(first))


def test_convert_importer_options(capsys, tmp_path):
    out_path = tmp_path / "n.parquet"
    code, _, err = run(capsys, "trace", "convert", FIXTURES / "routing.npy", out_path, "--num-experts", "8",
                       "-o", "prompt_tokens=2", "-o", "moe_layers=[1, 3]")
    assert (code, err) == (0, "")
    trace = read_trace(out_path)
    assert trace.phases.tolist() == [0, 0, 1, 1, 1] and trace.moe_layers == (1, 3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--force", "--from", "csv"],
         "unknown trace format 'csv'; valid formats: gptoss-json, jsonl, moesim, npy, npz"),
        ([], "'{out}' exists; pass --force to replace it"),
        (["--force", "-o", "phase"], "--option 'phase': expected KEY=VALUE, e.g. --option phase=prefill"),
        (["--force", "-o", "num_experts=8"], "--option num_experts=... repeats --num-experts; give it once"),
        (["--force", "-o", "bogus=1"],
         "format 'jsonl': unknown option(s) 'bogus'; valid options: num_experts, model, metadata"),
        (["--force", "--meta", "top_k=3"], "metadata key(s) ['top_k'] are reserved; pass them as arguments"),
    ],
)
def test_convert_errors_exit_2_and_keep_the_old_file(capsys, tmp_path, extra, message):
    out_path = tmp_path / "t.parquet"
    out_path.write_bytes(b"old")
    code, out, err = run(capsys, "trace", "convert", JSONL, out_path, "--num-experts", "8", *extra)
    assert (code, out) == (2, "")
    assert err.startswith("moesim: error: ") and err.count("\n") == 1
    assert message.format(out=out_path) in err
    assert out_path.read_bytes() == b"old"


def test_convert_refuses_bad_output_names(capsys, tmp_path):
    code, _, err = run(capsys, "trace", "convert", JSONL, tmp_path / "t.csv", "--num-experts", "8")
    assert code == 2 and "unknown trace extension '.csv'; use .parquet" in err
    same = tmp_path / "t.parquet"
    write_trace(read_trace(SHIPPED).select(seqs=[0]), same)
    code, _, err = run(capsys, "trace", "convert", same, same, "--force")
    assert code == 2 and f"'{same}' is also the input; write to another file" in err


# ---------------------------------------------------------------------- checks behind validate
from hypothesis import strategies as st  # noqa: E402

from moesim.errors import TraceError  # noqa: E402
from moesim.kernels.trace_checks import rows_repeat_an_id  # noqa: E402
from moesim.trace import validate  # noqa: E402
from tests import naive  # noqa: E402


@st.composite
def id_rows(draw, top_k):
    """int16 ids ``[rows, k]`` with rows * k a multiple of 4 (whole 64-bit words), often with repeats."""
    unit = 4 // np.gcd(top_k, 4)
    rows = unit * draw(st.integers(0, 40 // unit))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        ids = rng.integers(-2**15, 2**15, size=(rows, top_k))
    else:
        num_experts = draw(st.integers(top_k, 3 * top_k))
        ids = np.argsort(rng.random((rows, num_experts)), axis=1)[:, :top_k]
        ids[rng.random(ids.shape) < 0.1] = -1
        if rows and top_k > 1 and draw(st.booleans()):
            row, a, b = rng.integers(rows), *rng.choice(top_k, 2, replace=False)
            ids[row, a] = ids[row, b]
    return ids.astype(np.int16)


def _screen(ids):
    top_k = ids.shape[1]
    words = ids.reshape(-1).view(np.uint64)
    masks = validate.row_masks(top_k)
    return bool(rows_repeat_an_id(words, top_k, masks)), naive.rows_repeat_an_id(words, top_k, masks)


@pytest.mark.parametrize("top_k", range(1, 13))
@settings(max_examples=25)
@given(data=st.data())
def test_repeat_screening_kernel_equals_its_twin(top_k, data):
    kernel, twin = _screen(data.draw(id_rows(top_k)))
    assert kernel == twin


@pytest.mark.parametrize("top_k", range(2, 13))
def test_repeat_screening_finds_every_slot_pair_in_every_row(top_k):
    # Rows fill whole words after 4 / gcd(k, 4) rows; two such groups cover every lane alignment.
    rows = 2 * (4 // np.gcd(top_k, 4))
    distinct = np.arange(rows * top_k, dtype=np.int16).reshape(rows, top_k)
    assert _screen(distinct) == (False, False)
    assert _screen(np.full_like(distinct, -1)) == (False, False)  # empty slots may repeat
    for row in range(rows):
        for a in range(top_k):
            for b in range(a + 1, top_k):
                ids = distinct.copy()
                ids[row, b] = ids[row, a]
                assert _screen(ids) == (True, True), (row, a, b)
                ids[row, a] = ids[row, b] = -1
                assert _screen(ids) == (False, False), (row, a, b)


def _message(call):
    try:
        call()
    except TraceError as exc:
        return str(exc)
    return None


@given(traces(max_tokens=30, max_layers=3, max_experts=12, optional_columns=False), st.data())
def test_screened_validation_gives_the_exact_messages(monkeypatch_module, trace, data):
    experts = trace.experts.copy()
    if experts.size and trace.top_k > 1 and data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 3))):  # repeats in several slot pairs and rows
            t, layer = data.draw(st.integers(0, trace.num_tokens - 1)), data.draw(st.integers(0, trace.num_layers - 1))
            a, b = data.draw(st.lists(st.integers(0, trace.top_k - 1), min_size=2, max_size=2, unique=True))
            experts[t, layer, a] = max(experts[t, layer, b], 0)
    weights = np.abs(np.random.default_rng(0).standard_normal(experts.shape)).astype(np.float32)
    if weights.size and data.draw(st.booleans()):
        weights.reshape(-1)[data.draw(st.integers(0, weights.size - 1))] = data.draw(
            st.sampled_from([np.nan, np.inf, -np.inf, -0.5, -0.0]))

    def run_checks():
        validate.check_expert_ids("trace", "experts", experts, trace.num_experts)
        validate.check_weights("trace", weights)

    monkeypatch_module.setattr(validate, "SCREEN_MIN_ENTRIES", 2**62)
    exact = _message(run_checks)
    monkeypatch_module.setattr(validate, "SCREEN_MIN_ENTRIES", 0)
    assert _message(run_checks) == exact


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch
