"""``moesim metrics``: options, tables, JSON, CIs, plot, and one-line errors for bad arguments."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest

from moesim import Trace, write_trace
from moesim.cli import main
from moesim.cli import metrics as cli_metrics
from moesim.metrics import bootstrap
from moesim.metrics.srp import mean_srp, srp, srp_by_layer

HAVE_HIT_CURVE = importlib.util.find_spec("moesim.metrics.hit_curve") is not None
needs_hit_curve = pytest.mark.skipif(not HAVE_HIT_CURVE, reason="moesim.metrics.hit_curve not available")


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory):
    """Six sequences, 3 layers, E=8, k=2, with some locality (experts persist for a few tokens)."""
    rng = np.random.default_rng(11)
    num_tokens, num_layers, num_experts, top_k = 240, 3, 8, 2
    experts = np.empty((num_tokens, num_layers, top_k), dtype=np.int16)
    for t in range(num_tokens):
        for layer in range(num_layers):
            if t % 40 and rng.random() < 0.6:
                experts[t, layer] = experts[t - 1, layer]
            else:
                experts[t, layer] = rng.choice(num_experts, top_k, replace=False)
    trace = Trace.from_arrays(experts, num_experts=num_experts, seq_ids=np.arange(num_tokens) // 40, model="toy")
    path = tmp_path_factory.mktemp("traces") / "toy.parquet"
    write_trace(trace, path)
    return path


def run(capsys, *argv):
    code = main(["metrics", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------- SRP output
def test_json_srp_matches_library(capsys, trace_path):
    from moesim import read_trace

    code, out, err = run(capsys, trace_path, "--policies", "none", "--segments", "4,6", "--ci-level", "0.9",
                         "--num-boot", "200", "--seed", "3", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    trace = read_trace(trace_path)
    assert data["trace"]["layers"] == [0, 1, 2] and data["hit_rates"] == []
    rows = {(r["level"], r["layer"], r["segment"]): r for r in data["srp"]}
    assert len(rows) == 2 * (1 + 3 + 1)
    for segment in (4, 6):
        model = srp(trace, segment, level="model")
        row = rows["model", None, segment]
        assert (row["srp"], row["alpha"], row["baseline"]) == (model.srp, model.alpha, model.baseline)
        assert (row["ci_low"], row["ci_high"]) == model.confidence_interval(0.9, 200, 3)
        layers = srp_by_layer(trace, segment)
        summary = mean_srp(layers, ci=0.9, num_boot=200, seed=3)
        row = rows["layer", None, segment]
        assert (row["srp"], row["ci_low"], row["ci_high"]) == (summary.srp, summary.ci_low, summary.ci_high)
        for layer, result in enumerate(layers):
            assert rows["layer", layer, segment]["srp"] == result.srp


def test_table_shows_levels_layers_and_ci(capsys, trace_path):
    code, out, _ = run(capsys, trace_path, "--policies", "none", "--segments", "4", "--level", "layer",
                       "--layers", "0,2", "--ci", "--num-boot", "50", "--per-layer")
    assert code == 0
    assert "layer (mean of 2)" in out and "layer 2" in out and "layer 1 " not in out
    assert "model" not in out.split("SRP (%)")[1]
    assert "[95% CI]" in out and "iid" in out
    code, out_model, _ = run(capsys, trace_path, "--policies", "none", "--segments", "4", "--level", "model", "--layers", "0-1")
    trace_model = srp(__import__("moesim").read_trace(trace_path).select(layers=[0, 1]), 4, level="model")
    assert f"{100 * trace_model.srp:.2f}" in out_model and "layer (mean" not in out_model


def test_phase_selects_tokens(capsys, tmp_path):
    experts = np.array([0, 0, 0, 0, 1, 2, 3, 1], dtype=np.int16).reshape(8, 1, 1)
    path = tmp_path / "phases.parquet"
    write_trace(Trace.from_arrays(experts, num_experts=4, phases=["prefill"] * 4 + ["decode"] * 4), path)
    outputs = {}
    for phase in ("prefill", "decode"):
        code, out, _ = run(capsys, path, "--policies", "none", "--segments", "2", "--level", "model", "--phase", phase, "--json")
        assert code == 0
        outputs[phase] = json.loads(out)["srp"][0]["srp"]
    assert outputs == {"prefill": 1.0, "decode": pytest.approx(2 / 3)}  # decode windows 12, 23, 31


def test_output_is_deterministic(capsys, trace_path):
    args = (trace_path, "--policies", "none", "--segments", "3", "--ci", "--num-boot", "100", "--json")
    assert run(capsys, *args)[1] == run(capsys, *args)[1]
    assert run(capsys, *args)[1] != run(capsys, *args, "--seed", "1")[1]


# ---------------------------------------------------------------------------- hit-rate summaries
def _fake_curve(hits, num_requests, rho):
    hits, num_requests = np.asarray(hits), np.asarray(num_requests)
    with np.errstate(invalid="ignore"):
        rate = np.nanmean(hits / num_requests[:, None], axis=0)
    return SimpleNamespace(hits=hits, num_requests=num_requests, rho=np.asarray(rho, float), rate=rate)


def test_layer_mean_uses_a_joint_bootstrap_over_sequences():
    rng = np.random.default_rng(0)
    curves = []
    for _ in range(3):
        requests = rng.integers(5, 20, 7)
        hits = np.minimum(np.cumsum(rng.integers(0, 4, (7, 4)), axis=1), requests[:, None])
        curves.append(_fake_curve(hits, requests, [0.5, 1.0, 1.5, 2.0]))
    got = cli_metrics.summarise_curves(curves, [1.0, 2.0, 9.0], 2, ci=0.9, num_boot=300, seed=4)
    weights = bootstrap.resample_counts(7, 300, 4)
    for (point, low, high), column in zip(got, [1, 3, 3]):  # rho 9 > largest cache -> everything fits
        per_layer = [c.hits[:, column] / c.num_requests for c in curves]
        assert point == pytest.approx(np.mean([r.mean() for r in per_layer]), abs=1e-12)
        replicates = np.mean([(weights @ r) / weights.sum(axis=1) for r in per_layer], axis=0)
        expected = bootstrap.basic_interval(point, replicates, 0.9)
        assert (low, high) == pytest.approx((float(expected[0]), float(expected[1])), abs=1e-12)


def test_sequences_without_requests_and_inapplicable_sizes():
    curve = _fake_curve([[1, 2], [0, 0], [3, 4]], [4, 0, 4], [1.0, 2.0])
    curve.rate[0] = np.nan  # e.g. pinned accounting below k
    (first, *_), (second, low, high) = cli_metrics.summarise_curves([curve], [1.0, 2.0], 1, ci=0.95, num_boot=50, seed=0)
    assert np.isnan(first) and second == pytest.approx(0.75) and low <= high
    with pytest.raises(Exception, match="whole number"):
        cli_metrics.summarise_curves([curve], [1.5], 1, ci=None, num_boot=50, seed=0)


@needs_hit_curve
def test_hit_rates_match_hit_curve(capsys, trace_path):
    from moesim import read_trace
    from moesim.metrics.hit_curve import hit_curve

    code, out, _ = run(capsys, trace_path, "--policies", "lru,sch", "--segments", "4", "--rho", "1,2",
                       "--ci", "--num-boot", "100", "--json")
    assert code == 0
    trace = read_trace(trace_path)
    rows = {(r["level"], r["layer"], r["policy"], r["segment"]): r["rates"] for r in json.loads(out)["hit_rates"]}
    assert set(p for _, _, p, _ in rows) == {"lru", "sch"}
    model = hit_curve(trace, "sch", level="model", segment=4)
    low, high = model.confidence_interval(0.95, 100, 0)
    for entry in rows["model", None, "sch", 4]:
        index = int(np.flatnonzero(np.isclose(model.rho, entry["rho"]))[0])
        assert entry["rate"] == pytest.approx(model.rate_at(entry["rho"]), abs=1e-12)
        assert (entry["ci_low"], entry["ci_high"]) == pytest.approx((low[index], high[index]), abs=1e-12)
    per_layer = [hit_curve(trace, "lru", layer=i).rate_at(2.0) for i in range(3)]
    assert rows["layer", None, "lru", None][1]["rate"] == pytest.approx(np.mean(per_layer), abs=1e-12)


@needs_hit_curve
def test_table_and_plot(capsys, trace_path, tmp_path):
    pytest.importorskip("matplotlib")
    out_png = tmp_path / "curves.png"
    code, out, _ = run(capsys, trace_path, "--segments", "4,8", "--plot", out_png)
    assert code == 0
    for policy in ("lru", "lfu", "fifo", "belady", "sch"):
        assert f" {policy} " in out
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_helper_writes_an_image_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    from moesim.errors import ConfigError
    from moesim.report.metrics_plot import plot_hit_curves

    rho = np.arange(1, 9) / 2
    series = {"layer": [("lru", rho, rho / 4), ("sch m=4", rho, np.sqrt(rho / 4))], "model": [("lru", rho, rho / 4)]}
    path = plot_hit_curves(series, tmp_path / "out.png", title="t", rhos=[1, 2])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    with pytest.raises(ConfigError, match="suffix"):
        plot_hit_curves(series, tmp_path / "out.txt")


# ---------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--level", "token"], "--level"),
        (["--policies", "lru,mru"], "'mru'"),
        (["--segments", "0"], "--segments"),
        (["--segments", "4,x"], "'x'"),
        (["--rho", "0"], "--rho"),
        (["--rho", "1.3"], "whole number"),
        (["--accounting", "strict"], "--accounting"),
        (["--cold-fill", "warm"], "--cold-fill"),
        (["--ci", "--ci-level", "95"], "--ci-level"),
        (["--ci", "--ci-level", "high"], "--ci-level"),
        (["--ci", "--num-boot", "1"], "--num-boot"),
        (["--num-boot", "many"], "--num-boot"),
        (["--seed", "-1"], "--seed"),
        (["--layers", "7"], "layer 7"),
        (["--layers", "1-"], "'1-'"),
        (["--phase", "train"], "--phase"),
        (["--phase", "prefill"], "no prefill tokens"),
        (["--plot", "out.txt"], "suffix"),
        (["--rho", "1,2", "--level", "model", "--rho", "0.1"], "whole number"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, trace_path, argv, fragment):
    # Every check happens before any hit curve is computed, so "--policies lru" costs nothing here.
    code, out, err = run(capsys, trace_path, "--policies", "lru", "--segments", "4", *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err


def test_missing_file_and_missing_argument(capsys, tmp_path):
    code, _, err = run(capsys, tmp_path / "nope.parquet")
    assert code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["metrics"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "TRACE" in err


@needs_hit_curve
@pytest.mark.slow
def test_shipped_gpt_oss_trace_full_table(capsys):
    from tests.conftest import TRACES_DIR

    code, out, err = run(capsys, TRACES_DIR / "gpt-oss-20b-fingerprinting.parquet", "--level", "both", "--ci")
    assert code == 0 and "Traceback" not in err
    hit_table, srp_table = out.split("SRP (%)")
    for policy in ("lru", "lfu", "fifo", "belady", "sch"):
        assert f"layer (mean of 24)  {policy}" in hit_table and f"model               {policy}" in hit_table
    assert srp_table.count("layer (mean of 24)") == 3 and srp_table.count("model") == 3
