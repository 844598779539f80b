"""Scenario files: loading, --set overrides, and one-line errors naming the dotted path."""

from __future__ import annotations

import pytest

from moesim.cli import main
from moesim.errors import ConfigError
from moesim.scenario import load_scenario, parse_assignment, parse_value
from tests.conftest import REPO

BASE = f"""
name = "t"
[trace]
path = "{REPO / 'traces' / 'gpt-oss-20b-fingerprinting.parquet'}"
max_sequences = 1
[model]
preset = "gpt-oss-20b"
expert_format = "bf16"
[hardware]
preset = "rtx4090-pcie4"
[cache]
capacity = 64
[workload]
max_steps = 5
"""


def _write(tmp_path, text=BASE):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_parse_values_like_toml():
    assert parse_value("16") == 16 and parse_value("0.8") == 0.8 and parse_value("true") is True
    assert parse_value("lru") == "lru" and parse_value("24GiB") == "24GiB" and parse_value("[1, 2]") == [1, 2]
    assert parse_assignment("cache.capacity=64") == ("cache.capacity", 64)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignment("cache.capacity")


def test_overrides_reach_presets_and_nested_tables(tmp_path):
    path = _write(tmp_path)
    scenario = load_scenario(path, [parse_assignment(a) for a in (
        "hardware.h2d.efficiency=0.5", "model.top_k=4", "cache.eviction=belady", "prefetch.predictor=oracle")])
    assert scenario.hardware.h2d.efficiency == 0.5
    assert scenario.cache.eviction == "belady" and scenario.prefetch.predictor == "oracle"
    swapped = load_scenario(path, [("hardware", "h100-pcie5")])
    assert swapped.hardware.name.startswith("h100")


@pytest.mark.parametrize(
    "override, message",
    [
        (("cache.capacity", 0), r"cache\.capacity: expected a number of experts >= 1"),
        (("cache.colour", "red"), r"cache\.colour: unknown key; valid keys in \[cache\] are"),
        (("cache.eviction", "lfru"), r"cache\.eviction: unknown eviction policy 'lfru'; use one of"),
        (("prefetch.predictor", "psychic"), r"prefetch\.predictor: unknown prefetch predictor 'psychic'"),
        (("offload.miss", "pray"), r"offload\.miss: unknown miss policy 'pray'"),
        (("hardware.h2d.bandwidth_bps", "-5GB/s"), r"hardware\.h2d\.bandwidth_bps: "),
        (("hardware.h2d.bandwidth_bps", 0), r"hardware\.h2d\.bandwidth_bps: "),
        (("hardware", "rtx9090"), r"hardware: unknown .*'rtx9090'"),
        (("model", "gpt-5"), r"model: unknown .*'gpt-5'"),
        (("workload.batch_size", 0), r"workload\.batch_size: expected an integer >= 1"),
        (("timing.combine", "5 parsecs"), r"timing\.combine: unknown time unit"),
        (("cache.eviction", "sch"), r"cache\.eviction_params\.segment: eviction policy 'sch' needs it"),
        (("offload.host_eviction", "belady"), r"offload\.host_eviction: 'belady' needs the future"),
        (("trace.path", "missing.parquet"), r"no such"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_path(tmp_path, capsys, override, message):
    path = _write(tmp_path)
    key, value = override
    code = main(["run", str(path), "--set", f"{key}={value}" if not isinstance(value, str) else f'{key}="{value}"'])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("moesim: error: ")
    import re

    assert re.search(message, err), err


def test_cache_larger_than_memory_says_what_fits(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["run", str(path), "--set", "cache.capacity=700"]) == 2
    err = capsys.readouterr().err
    assert "cache.capacity: 700 experts need" in err and "only" in err and "fit" in err


def test_trace_must_fit_the_model(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["run", str(path), "--set", 'model="mixtral-8x7b"']) == 2
    err = capsys.readouterr().err
    assert "does not fit model 'mixtral-8x7b'" in err and "E=32 vs the model's 8" in err


def test_invalid_toml_names_the_file(tmp_path, capsys):
    path = _write(tmp_path, BASE + "\n[cache\n")
    assert main(["run", str(path)]) == 2
    assert f"scenario '{path}': invalid TOML" in capsys.readouterr().err


def test_run_writes_its_results_atomically(tmp_path, capsys):
    import json

    import pyarrow.parquet as pq

    path = _write(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == ["layers.parquet", "scenario.json", "steps.parquet", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["num_steps"] == printed["summary"]["num_steps"] == 5
    assert pq.read_table(out / "steps.parquet").num_rows == 5
    assert main(["run", str(path), "--out", str(out), "--set", "workload.max_steps=3"]) == 0
    assert pq.read_table(out / "steps.parquet").num_rows == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
