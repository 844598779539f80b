"""Importers: the registry, each format's happy path and every error message, and the shipped traces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim import ConfigError, Trace, TraceError, read_trace
from moesim.trace.importers import (
    get_importer,
    import_trace,
    importer_names,
    infer_format,
    register_importer,
    registry,
    source_metadata,
)
from moesim.trace.importers import jsonl as jsonl_module
from tests.conftest import TRACES_DIR
from tests.fixtures.importers import make_fixtures as fx
from tests.strategies import traces

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "importers"
JSONL = FIXTURES / "routing.jsonl"
GPTOSS = FIXTURES / "gptoss"


def _expected(fmt: str, path: Path, **overrides):
    """The fixture trace as the importer of ``fmt`` should produce it from ``path``."""
    kwargs = dict(
        num_experts=8,
        seq_ids=fx.SEQ_IDS,
        positions=fx.POSITIONS,
        phases=fx.PHASES,
        weights=fx.WEIGHTS,
        moe_layers=fx.MOE_LAYERS,
        source=source_metadata(fmt, path),
    )
    kwargs.update(overrides)
    return Trace.from_arrays(fx.EXPERTS, **kwargs)


def test_fixtures_are_what_make_fixtures_writes(tmp_path):
    fx.write_jsonl(tmp_path / "routing.jsonl")
    fx.write_gptoss(tmp_path / "gptoss")
    fx.write_arrays(tmp_path)
    assert (tmp_path / "routing.jsonl").read_text() == JSONL.read_text()
    for path in sorted(GPTOSS.rglob("*.json")):
        assert (tmp_path / "gptoss" / path.relative_to(GPTOSS)).read_text() == path.read_text()
    for name in ("routing.npy", "routing.npz"):
        assert (tmp_path / name).read_bytes() == (FIXTURES / name).read_bytes()


# ---------------------------------------------------------------------- registry
def test_registry_lists_and_infers_formats(tmp_path):
    assert importer_names() == ["gptoss-json", "jsonl", "moesim", "npy", "npz"]
    assert [infer_format(Path(n)) for n in ("a.jsonl", "b.NPZ", "c.npy", "d.json", "e.parquet", "f.arrow")] == [
        "jsonl", "npz", "npy", "gptoss-json", "moesim", "moesim",
    ]
    assert get_importer("jsonl").options == ("num_experts", "model", "metadata")
    assert get_importer("gptoss-json").directories and not get_importer("npz").directories
    assert get_importer("jsonl").summary.startswith("JSON Lines, one record per token and layer")


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: import_trace(JSONL, "csv"), ConfigError,
         r"^unknown trace format 'csv'; valid formats: gptoss-json, jsonl, moesim, npy, npz$"),
        (lambda: import_trace(JSONL, num_experts=8, experts=8), ConfigError,
         r"^format 'jsonl': unknown option\(s\) 'experts'; valid options: num_experts, model, metadata$"),
        (lambda: import_trace(Path("x.csv")), ConfigError,
         r"^'x.csv': the file name matches no format; give the format \(--from NAME\); known: gptoss-json \(\.json\), "
         r"jsonl \(\.jsonl \.ndjson\), moesim \(\.parquet \.pq \.arrow \.ipc \.feather\), "
         r"npy \(\.npy\), npz \(\.npz\)$"),
        (lambda: import_trace(GPTOSS), ConfigError,
         r"is a directory: say which format it holds \(--from NAME\); formats that read directories: gptoss-json$"),
        (lambda: import_trace(FIXTURES / "absent.jsonl", num_experts=8), TraceError,
         r"^file '.*absent.jsonl': no such file or directory$"),
        (lambda: import_trace(GPTOSS, "jsonl", num_experts=8), TraceError,
         r"^file '.*gptoss': is a directory; format 'jsonl' reads one file$"),
        (lambda: import_trace(JSONL, num_experts="8"), ConfigError,
         r"^format 'jsonl': option 'num_experts' must be an integer >= 1, got '8'$"),
        (lambda: import_trace(JSONL, num_experts=0), ConfigError,
         r"^format 'jsonl': option 'num_experts' must be an integer >= 1, got 0$"),
        (lambda: import_trace(JSONL, num_experts=8, metadata=[1]), ConfigError,
         r"option 'metadata' must be a mapping"),
        (lambda: import_trace(JSONL, num_experts=8, metadata={"top_k": 3}), TraceError, r"reserved"),
    ],
)
def test_registry_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_register_importer_adds_a_format(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_IMPORTERS", dict(registry._IMPORTERS))

    @register_importer("toy", suffixes=(".toy",))
    def import_toy(path, *, num_experts=4):
        """Toy: every line is one token's expert id."""
        ids = [int(x) for x in path.read_text().split()]
        return Trace.from_arrays(np.array(ids).reshape(-1, 1, 1), num_experts=num_experts,
                                 source=registry.source_metadata("toy", path))

    path = tmp_path / "t.toy"
    path.write_text("1 3 2")
    trace = import_trace(path, num_experts=5, metadata={"license": "CC0-1.0"})
    assert trace.experts[:, 0, 0].tolist() == [1, 3, 2] and trace.num_experts == 5
    assert trace.metadata["source"] == {"format": "toy", "file": str(path)}
    assert trace.metadata["license"] == "CC0-1.0"
    assert "toy" in importer_names()
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register_importer("toy")(import_toy)


# ---------------------------------------------------------------------- jsonl
def test_jsonl_fixture_records_in_any_order():
    trace = import_trace(JSONL, num_experts=8, model="tiny", metadata={"license": "CC0-1.0"})
    assert trace.equals(_expected("jsonl", JSONL, model="tiny", license="CC0-1.0"))
    assert trace.sequence_ids.tolist() == [7, 3]  # order of first appearance


def test_jsonl_readers_agree_on_the_fixture():
    fast = jsonl_module._read_arrow(JSONL)
    exact = jsonl_module._read_lines(JSONL)
    assert fast is not None and fast.lines is None
    assert exact.lines.tolist() == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]  # line 6 is blank
    for name in ("seq", "pos", "layer", "experts", "expert_counts", "weights", "weight_counts", "phase"):
        a, b = getattr(fast, name), getattr(exact, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def _write_jsonl(trace: Trace, path: Path, rng: np.random.Generator, *, weights: bool, phase: bool) -> None:
    records = []
    for t in range(trace.num_tokens):
        for index, layer in enumerate(trace.moe_layers):
            record = {"seq": int(trace.seq_ids[t]), "pos": int(trace.positions[t]), "layer": layer,
                      "experts": trace.experts[t, index].tolist()}
            if weights:
                record["weights"] = trace.weights[t, index].tolist()
            if phase:
                record["phase"] = "prefill" if trace.phases[t] == 0 else "decode"
            records.append(json.dumps(record))
    # Shuffle within each sequence only: sequences keep their order of first appearance.
    order = np.argsort(np.repeat(np.arange(trace.num_sequences), np.diff(trace.seq_offsets) * trace.num_layers)
                       + rng.random(len(records)) * 0.5, kind="stable")
    path.write_text("\n".join(records[i] for i in order) + "\n")


@settings(max_examples=30)
@given(trace=traces(max_tokens=12, max_layers=3, optional_columns=False), seed=st.integers(0, 2**16),
       with_weights=st.booleans(), with_phase=st.booleans())
def test_jsonl_round_trip_any_record_order(tmp_path_factory, trace, seed, with_weights, with_phase):
    rng = np.random.default_rng(seed)
    if trace.num_tokens == 0:
        return
    weights = rng.random(trace.experts.shape).astype(np.float32) if with_weights else None
    trace = trace._replace(weights=weights)
    if not with_phase:
        trace = trace._replace(phases=np.ones(trace.num_tokens, dtype=np.int8))
    path = tmp_path_factory.mktemp("jsonl") / "t.jsonl"
    _write_jsonl(trace, path, rng, weights=with_weights, phase=with_phase)
    fast = import_trace(path, num_experts=trace.num_experts)
    assert fast.equals(trace._replace(model=None, metadata={"source": source_metadata("jsonl", path)}))
    exact = jsonl_module._assemble(path, jsonl_module._read_lines(path), trace.num_experts, None)
    assert exact.equals(fast)


def _jsonl_lines():
    return JSONL.read_text().splitlines()


def _mutate(lines, index, **changes):
    record = json.loads(lines[index])
    for key, value in changes.items():
        if value is _DROP:
            record.pop(key)
        else:
            record[key] = value
    lines[index] = json.dumps(record)
    return lines


_DROP = object()


def _case(index=None, raw=None, **changes):
    def build():
        lines = _jsonl_lines()
        if raw is not None:
            lines[index] = raw
        elif index is not None:
            _mutate(lines, index, **changes)
        return lines
    return build


def _drop_line(index):
    def build():
        lines = _jsonl_lines()
        del lines[index]
        return lines
    return build


def _duplicate_line(index):
    def build():
        lines = _jsonl_lines()
        return lines + [lines[index]]
    return build


def _all_records(**changes):
    def build():
        lines = _jsonl_lines()
        for i, line in enumerate(lines):
            if line:
                _mutate(lines, i, **changes)
        return lines
    return build


@pytest.mark.parametrize(
    "build, message",
    [
        (_case(2, expert=[1, 2]),
         r"line 3: unknown field 'expert'; expected seq, pos, layer, experts, weights, phase$"),
        (_case(3, raw='{"seq": 7, "pos": 11,'),
         r"line 4: not valid JSON \(Expecting property name enclosed in double quotes at column 22\); one JSON "
         r"object per line$"),
        (_case(3, raw='[1, 2]'), r"line 4: expected a JSON object, got a JSON list$"),
        (_case(3, raw='{"seq": 7, "seq": 8, "pos": 1, "layer": 1, "experts": [1, 2]}'),
         r"line 4: field 'seq' appears twice$"),
        (_case(0, pos=_DROP), r"line 1: missing field 'pos'; every record needs seq, pos, layer, experts$"),
        (_case(0, pos=None), r"line 1: missing field 'pos'; every record needs seq, pos, layer, experts$"),
        (_case(7, pos=1.5), r"line 8: field 'pos' is 1.5, expected an integer$"),
        (_case(7, layer=True), r"line 8: field 'layer' is True, expected an integer$"),
        (_case(7, seq=2**70), r"line 8: field 'seq' is 1180591620717411303424, expected an integer$"),
        (_case(4, experts=[1, "2"]),
         r"line 5: field 'experts' is \[1, \"2\"\], expected a list of integer expert ids$"),
        (_case(4, experts=[1, None]),
         r"line 5: field 'experts' is \[1, null\], expected a list of integer expert ids$"),
        (_case(4, weights=[0.5, "x"]), r"line 5: field 'weights' is \[0.5, \"x\"\], expected a list of numbers$"),
        (_case(4, phase="generate"), r"line 5: field 'phase' is \"generate\", expected one of prefill, decode$"),
        (_case(4, experts=[1, 2, 3], weights=[0.5, 0.25, 0.25]),
         r"line 5: 3 experts, expected 2 like the first record; every record needs the same number of slots \(pad "
         r"with -1\)$"),
        (_all_records(experts=[]), r"line 1: field 'experts' is empty; list the token's routed experts$"),
        (_case(4, weights=[1.0]), r"line 5: 1 weights for 2 experts; give one weight per expert$"),
        (_case(4, weights=_DROP),
         r"line 5: no field 'weights', but line 1 has it; give weights on every record or on none$"),
        (_case(0, weights=_DROP),
         r"line 1: no field 'weights', but line 2 has it; give weights on every record or on none$"),
        (_case(8, weights=[-0.5, 1.0]),
         r"line 9: weights \[-0.5, 1.0\] are not all finite and >= 0; store the router's gate \(softmax\) weights$"),
        (_case(8, raw='{"seq": 7, "pos": 11, "layer": 3, "experts": [1, 0], "weights": [NaN, 0.5], "phase": "decode"}'),
         r"line 9: weights \[nan, 0.5\] are not all finite and >= 0"),
        (_case(9, phase=_DROP),
         r"line 10: no field 'phase', but line 1 has it; give the phase on every record or on none \(default "
         r"decode\)$"),
        (_case(1, pos=-3), r"line 2: field 'pos' is -3, expected 0..2147483647$"),
        (_case(1, layer=2**31), r"line 2: field 'layer' is 2147483648, expected 0..2147483647$"),
        (_case(3, experts=[8, 1]),
         r"line 4: expert 8 is not an id 0..7 \(-1 marks an empty slot\); if the model has more experts pass "
         r"num_experts$"),
        (_case(3, experts=[-2, 1]), r"line 4: expert -2 is not an id 0\.\.7"),
        (_case(3, experts=[4, 4]), r"line 4: expert 4 appears twice in \[4, 4\]; a token's experts are distinct$"),
        (_duplicate_line(2), r"line 12: second record for seq 7 pos 11 layer 1 \(the first is on line 3\)$"),
        (_drop_line(1),
         r"line 7: seq 3 pos 0 has no record for layer 1; every token needs one record for each of the 2 layers in "
         r"the file \(1, 3\)$"),
        (_case(2, layer=5),
         r"line 1: seq 7 pos 10 has no record for layer 5; every token needs one record for each of the 3 layers in "
         r"the file \(1, 3, 5\)$"),
        (_case(6, phase="decode"),
         r"line 7: phase 'decode', but line 1 gives 'prefill' for seq 7 pos 10; a token has one phase$"),
        (lambda: ["", "  "], r"no records; expected one JSON object per line with seq, pos, layer, experts$"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, build, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(build()) + "\n")
    with pytest.raises(TraceError, match=message) as info:
        import_trace(path, num_experts=8)
    assert str(info.value).startswith(f"file '{path}'")
    assert "\n" not in str(info.value)


def test_jsonl_needs_num_experts():
    message = (
        r"option 'num_experts' is required for '.*routing.jsonl' \(routed experts per MoE layer of the model; the "
        r"largest id in the file is 7, so at least 8\); pass num_experts=E or --num-experts E$"
    )
    with pytest.raises(ConfigError, match=message):
        import_trace(JSONL)


# ---------------------------------------------------------------------- npy / npz
def test_npz_fixture_and_agreement_with_jsonl():
    path = FIXTURES / "routing.npz"
    trace = import_trace(path, num_experts=8, moe_layers=[1, 3], model="tiny")
    assert trace.equals(_expected("npz", path, model="tiny"))
    jsonl_trace = import_trace(JSONL, num_experts=8, model="tiny")
    assert trace.with_metadata(source=None).equals(jsonl_trace.with_metadata(source=None))


def test_npy_fixture_one_sequence_with_phase_options():
    path = FIXTURES / "routing.npy"
    trace = import_trace(path, num_experts=8)
    bare = dict(seq_ids=None, positions=None, phases=None, weights=None, moe_layers=None)
    assert trace.equals(_expected("npy", path, **bare))
    assert import_trace(path, "npy", num_experts=8, phase="prefill").phase_counts() == {"prefill": 5, "decode": 0}
    prompt = import_trace(path, num_experts=8, prompt_tokens=2)
    assert prompt.phases.tolist() == [0, 0, 1, 1, 1]


def test_npz_prompt_tokens_count_per_sequence(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, experts=fx.EXPERTS, seq_ids=[7, 3, 7, 3, 7])
    trace = import_trace(path, num_experts=8, prompt_tokens=1)
    assert trace.seq_ids.tolist() == [7, 7, 7, 3, 3]
    assert trace.phases.tolist() == [0, 1, 1, 0, 1]


def _save(tmp_path, name, **arrays):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, arrays["experts"])
    else:
        np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "name, arrays, options, error, message",
    [
        ("t.npz", dict(experts=fx.EXPERTS, gates=fx.WEIGHTS, extra=fx.SEQ_IDS), {}, TraceError,
         r"unknown array\(s\) 'extra', 'gates'; an \.npz trace holds experts, weights, seq_ids, positions, phases"),
        ("t.npz", dict(ids=fx.EXPERTS), {}, TraceError, r"unknown array\(s\) 'ids'"),
        ("t.npz", dict(weights=fx.WEIGHTS), {}, TraceError,
         r"no 'experts' array \(found weights\); save the \[tokens, layers, top_k\] expert ids"),
        ("t.npy", dict(experts=fx.EXPERTS[:, 0, :]), {}, TraceError,
         r"array 'experts' has shape \(5, 2\), expected \[tokens, layers, top_k\]; add the missing axis"),
        ("t.npy", dict(experts=fx.WEIGHTS), {}, TraceError,
         r"array 'experts' has dtype float32, expected integer expert ids"),
        ("t.npy", dict(experts=fx.EXPERTS), {"num_experts": None}, ConfigError,
         r"option 'num_experts' is required for '.*t.npy' \(.*the largest id in the file is 7, so at least 8\)"),
        ("t.npy", dict(experts=fx.EXPERTS), {"num_experts": 7}, TraceError,
         r"^file '.*t.npy': column 'experts': value 7 at token 2 layer 1 >= num_experts \(7\)"),
        ("t.npz", dict(experts=fx.EXPERTS, phases=fx.PHASES), {"phase": "decode"}, ConfigError,
         r"the file's 'phases' array and phase both set the phases of '.*t.npz'; use one"),
        ("t.npy", dict(experts=fx.EXPERTS), {"phase": "generate"}, ConfigError,
         r"option 'phase' must be one of prefill, decode, got 'generate'"),
        ("t.npz", dict(experts=fx.EXPERTS, weights=fx.WEIGHTS[:3]), {}, TraceError,
         r"^file '.*t.npz': column 'weights': shape \(3, 2, 2\) != experts shape \(5, 2, 2\)"),
        ("t.npz", dict(experts=fx.EXPERTS, positions=[0, 1, 1, 2, 3]), {}, TraceError,
         r"^file '.*t.npz': column 'position': position 1 at token 2 does not increase"),
    ],
)
def test_array_errors(tmp_path, name, arrays, options, error, message):
    path = _save(tmp_path, name, **arrays)
    kwargs = {"num_experts": 8, **options}
    if kwargs["num_experts"] is None:
        del kwargs["num_experts"]
    with pytest.raises(error, match=message):
        import_trace(path, **kwargs)


def test_array_files_of_the_wrong_kind(tmp_path):
    npz = _save(tmp_path, "t.npz", experts=fx.EXPERTS)
    with pytest.raises(TraceError, match=r"holds several arrays \(an \.npz archive\); import it with format 'npz'"):
        import_trace(npz, "npy", num_experts=8)
    npy = _save(tmp_path, "t.npy", experts=fx.EXPERTS)
    with pytest.raises(TraceError, match=r"holds a single array, not an \.npz archive; import it with format 'npy'"):
        import_trace(npy, "npz", num_experts=8)
    objects = tmp_path / "o.npy"
    np.save(objects, np.array([[[1]]], dtype=object), allow_pickle=True)
    with pytest.raises(TraceError, match=r"holds Python objects \(a pickled array\); save plain numeric arrays"):
        import_trace(objects, num_experts=8)
    broken = tmp_path / "b.npz"
    broken.write_bytes(npz.read_bytes()[:100])
    with pytest.raises(TraceError, match=r"^file '.*b.npz': cannot be read as npz .*truncated or corrupt"):
        import_trace(broken, num_experts=8)


# ---------------------------------------------------------------------- gptoss-json
def test_gptoss_directory_in_component_order():
    trace = import_trace(GPTOSS, "gptoss-json")
    assert trace.model == "openai/gpt-oss-20b"
    assert (trace.num_experts, trace.num_layers, trace.top_k) == (32, 24, 4)
    assert trace.moe_layers == tuple(range(24))
    assert trace.phase_counts() == {"prefill": 0, "decode": 5}
    assert trace.positions.tolist() == [120, 121, 122, 40, 41]
    assert trace.seq_ids.tolist() == [0, 0, 0, 1, 1]
    meta = trace.metadata
    assert meta["source"] == {"format": "gptoss-json", "file": str(GPTOSS)}
    assert meta["license"] == "Apache-2.0"
    assert meta["repository"] == "https://github.com/AmanPriyanshu/GPT-OSS-MoE-ExpertFingerprinting"
    assert meta["sequences"] == [
        {"seq_id": 0, "file": "mmlu/world religions/True_False_examples.json", "dataset": "mmlu_test",
         "category": "world_religions", "row_index": 11, "finished_successfully": True, "has_repetition": False,
         "prompt_tokens": 120, "decode_tokens": 3},
        {"seq_id": 1, "file": "mmlu pro/biology/False_False_examples.json", "dataset": "mmlu_pro_test",
         "category": "biology", "row_index": 12, "finished_successfully": False, "has_repetition": False,
         "prompt_tokens": 40, "decode_tokens": 2},
    ]
    document = json.loads((GPTOSS / "mmlu/world religions/True_False_examples.json").read_text())
    layer = document["router_data"][1]["token_121"]["layer_7"]
    assert trace.experts[1, 7].tolist() == layer["selected_experts"]
    assert trace.weights[1, 7].tolist() == [float(np.float32(p)) for p in layer["selected_probs"]]


def test_gptoss_single_file_and_other_models(tmp_path):
    path = GPTOSS / "mmlu pro/biology/False_False_examples.json"
    trace = import_trace(path)  # .json -> gptoss-json
    assert trace.num_tokens == 2 and trace.metadata["sequences"][0]["file"] == "False_False_examples.json"
    # A model the importer does not know: shape from the first token, E from the option.
    custom = import_trace(path, model="my/gpt-oss-variant", num_experts=40)
    assert (custom.model, custom.num_experts, custom.num_layers, custom.top_k) == ("my/gpt-oss-variant", 40, 24, 4)
    with pytest.raises(TraceError, match=r"router_data\[0\] token_40: missing layer_24, layer_25, .*layer_35; every "
                                         r"token needs layer_0..layer_35"):
        import_trace(path, num_experts=128)  # 128 experts -> gpt-oss-120b, which has 36 layers
    with pytest.raises(ConfigError, match=r"no known GPT-OSS model has 40 experts per layer \(openai/gpt-oss-20b: 32, "
                                          r"openai/gpt-oss-120b: 128\); pass model=NAME too"):
        import_trace(path, num_experts=40)
    with pytest.raises(ConfigError, match=r"openai/gpt-oss-20b has 32 experts per layer, not 64"):
        import_trace(path, model="openai/gpt-oss-20b", num_experts=64)
    with pytest.raises(ConfigError, match=r"model 'other' is not one of .*; pass num_experts"):
        import_trace(path, model="other")


def _gptoss_document():
    return json.loads((GPTOSS / "mmlu pro/biology/False_False_examples.json").read_text())


def _layer(document, step, layer):
    (entry,) = document["router_data"][step].values()
    return entry[f"layer_{layer}"]


def _set(path_in_doc, value):
    def change(document):
        target = document
        for key in path_in_doc[:-1]:
            target = target[key]
        target[path_in_doc[-1]] = value
    return change


def _rename_token(document):
    (layers,) = document["router_data"][1].values()
    document["router_data"][1] = {"token_43": layers}


def _drop_layer(document):
    (layers,) = document["router_data"][1].values()
    del layers["layer_23"]


def _extra_layer(document):
    (layers,) = document["router_data"][0].values()
    layers["layer_24"] = layers["layer_0"]


@pytest.mark.parametrize(
    "change, message",
    [
        (_rename_token,
         r"router_data\[1\]: token_43 follows token_40; positions must be contiguous \(expected token_41\)$"),
        (_drop_layer, r"router_data\[1\] token_41: missing layer_23; every token needs layer_0..layer_23$"),
        (_extra_layer, r"router_data\[0\] token_40: unexpected layer_24; every token needs layer_0..layer_23$"),
        (lambda d: _layer(d, 1, 5).update(selected_experts=[1, 2, 3]),
         r"router_data\[1\] token_41 layer_5: 'selected_experts' has 3 ids, expected 4 \(the model's top-k\)$"),
        (lambda d: _layer(d, 0, 2).update(selected_experts=[1, 2, 32, 4]),
         r"router_data\[0\] token_40 layer_2: selected_experts\[2\] = 32 is not an expert id 0..31; if the model has "
         r"more experts pass num_experts$"),
        (lambda d: _layer(d, 0, 2).update(selected_experts=[1, 2, 1, 4]),
         r"layer_2: selected_experts \[1, 2, 1, 4\] repeats an expert; top-k experts are distinct$"),
        (lambda d: _layer(d, 0, 3).update(selected_probs=[0.1, 0.2, 0.3, 0.4]),
         r"layer_3: selected_probs \[0.1, 0.2, 0.3, 0.4\] are not in descending order; the format lists experts by "
         r"descending router weight$"),
        (lambda d: _layer(d, 0, 3).update(selected_probs=[0.5, 0.3, 0.2]),
         r"layer_3: 'selected_probs' has 3 values for 4 experts$"),
        (lambda d: _layer(d, 0, 3).update(selected_probs=[0.5, 0.3, -0.2, -0.3]),
         r"layer_3: selected_probs\[2\] = -0.2 is not a finite probability >= 0$"),
        (lambda d: _layer(d, 0, 3).pop("selected_probs"), r"layer_3: 'selected_probs' is missing, expected a list$"),
        (_set(["router_data", 0], {"tok_40": {}}), r"router_data\[0\]: key 'tok_40' is not 'token_<pos>'$"),
        (_set(["router_data", 0], {"token_40": {}, "token_41": {}}),
         r"router_data\[0\]: expected an object with one key 'token_<pos>', got an object with keys "
         r"\['token_40', 'token_41'\]$"),
        (_set(["router_data"], []),
         r": 'router_data' is empty \(the prompt produced no decode step\); remove the file$"),
        (lambda d: d.pop("router_data"), r": no 'router_data'; a GPT-OSS fingerprinting file has 'router_data'"),
        (_set(["row_index"], "12"), r": field 'row_index' is '12', expected a JSON int$"),
    ],
)
def test_gptoss_errors_name_file_token_and_layer(tmp_path, change, message):
    document = _gptoss_document()
    change(document)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(document))
    with pytest.raises(TraceError, match=message) as info:
        import_trace(path)
    assert str(info.value).startswith(f"file '{path}'")


def test_gptoss_broken_json_and_mixed_models(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{\n  "router_data": [\n    {"token_1": }\n  ]\n}\n')
    with pytest.raises(TraceError, match=r"^file '.*p.json' line 3 column 17: not valid JSON \(Expecting value\); the "
                                         r"file is truncated or corrupt"):
        import_trace(path)
    tree = tmp_path / "tree"
    shutil.copytree(GPTOSS, tree)
    small = _gptoss_document()
    for entry in small["router_data"]:
        (layers,) = entry.values()
        for name in list(layers):
            layers[name]["selected_experts"] = layers[name]["selected_experts"][:2]
            layers[name]["selected_probs"] = layers[name]["selected_probs"][:2]
    (tree / "z.json").write_text(json.dumps(small))
    with pytest.raises(TraceError, match=r"z.json': 24 layers with top-2, but '.*True_False_examples.json' has 24 "
                                         r"layers with top-4; import files of one model together"):
        import_trace(tree, "gptoss-json", model="custom", num_experts=32)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TraceError, match=r"directory holds no \*\.json files"):
        import_trace(empty, "gptoss-json")


# ---------------------------------------------------------------------- shipped traces
SHIPPED = TRACES_DIR / "gpt-oss-20b-fingerprinting.parquet"


def test_shipped_gptoss_trace_matches_its_documentation():
    trace = read_trace(SHIPPED)
    assert trace.model == "openai/gpt-oss-20b"
    assert (trace.num_experts, trace.num_layers, trace.top_k) == (32, 24, 4)
    assert (trace.num_sequences, trace.num_tokens) == (33, 8229)
    assert trace.phase_counts() == {"prefill": 0, "decode": 8229}
    assert trace.weights is not None and trace.predicted_experts is None and trace.router_logits is None
    meta = trace.metadata
    assert meta["license"] == "Apache-2.0"
    assert meta["repository"] == "https://github.com/AmanPriyanshu/GPT-OSS-MoE-ExpertFingerprinting"
    assert meta["commit"] == "72b368f60045221f21eeb65debb27d58de92e565"
    assert meta["source"] == {"format": "gptoss-json", "file": "data"}
    sequences = meta["sequences"]
    assert [s["seq_id"] for s in sequences] == trace.sequence_ids.tolist() == list(range(33))
    assert [s["decode_tokens"] for s in sequences] == np.diff(trace.seq_offsets).tolist()
    assert sum(not s["finished_successfully"] for s in sequences) == 4
    assert len({s["dataset"] for s in sequences}) == 11
    assert all(s["file"].startswith("data/") for s in sequences)
    # decode steps start right after the prompt and are contiguous
    starts = trace.positions[trace.seq_offsets[:-1]]
    assert starts.tolist() == [s["prompt_tokens"] for s in sequences]
    assert SHIPPED.stat().st_size < 5 * 2**20
