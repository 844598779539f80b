"""``moesim report``: Markdown tables and PNG plots of sweep results and of ``moesim metrics --json``."""

from __future__ import annotations

import json
import shlex
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moesim.cli import main
from moesim.errors import ConfigError
from moesim.report.sweep_report import (
    best_table,
    choose_cdf_points,
    dimension_table,
    load_sweep_results,
    reproduce_command,
    write_report,
    write_sweep_report,
)
from moesim.sweep import ResultsWriter, plan_sweep, read_results, run_sweep
from tests.test_cli_metrics import trace_path  # noqa: F401 (a module fixture: a toy trace with locality)
from tests.test_sweep import write_scenario

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SWEEP = (
    '[sweep]\n"cache.capacity" = [96, 192, 700]\ncache.eviction = ["lru", "belady"]\n'
    '"prefetch.predictor" = ["none", "oracle"]\n'
)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """12 points: 8 ok, and 4 with 700 experts, more than an RTX 4090 holds (failed)."""
    tmp = tmp_path_factory.mktemp("sweep")
    path = write_scenario(tmp, SWEEP, max_steps=20)
    summary = run_sweep(plan_sweep(path), tmp / "out", jobs=1)
    assert (summary.num_ok, summary.num_failed) == (8, 4)
    return tmp / "out"


def markdown_rows(text: str, heading: str) -> list[list[str]]:
    """Cells of the first Markdown table after ``heading``."""
    lines = text[text.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > 200 and width > 300


def test_sweep_report_writes_tables_and_plots(results_dir, tmp_path):
    files = write_sweep_report(results_dir, tmp_path / "report")
    assert files.markdown == tmp_path / "report" / "report.md"
    assert [p.name for p in files.plots] == [
        "throughput_vs_cache.png",
        "hit_rate_vs_rho.png",
        "time_breakdown.png",
        "latency_cdf.png",
    ]
    for plot in files.plots:
        assert_png(plot)
    text = files.markdown.read_text()
    assert text.startswith("# Sweep report: tiny\n")
    assert "12 points: 8 ok, 4 failed." in text
    for name in ("cache.capacity", "cache.eviction", "prefetch.predictor"):
        assert f"### {name}" in text
    assert "model **gpt-oss-20b** (bf16 experts, 47.5 MiB each)" in text
    assert "hardware **rtx4090-pcie4**" in text
    for plot in files.plots:
        assert f"]({plot.name})" in text
    rows = [r for r in read_results(results_dir).to_pylist() if r["status"] == "ok"]
    best = max(rows, key=lambda r: r["decode_tokens_per_s"])
    table = markdown_rows(text, "## Best configurations")
    assert len(table) == 8 and table[0][0] == "1" and table[0][-1] == best["point_id"]
    ranked = [float(r[4]) for r in table]  # rank, three swept values, then the metric
    assert ranked == sorted(ranked, reverse=True)
    assert ranked[0] == pytest.approx(best["decode_tokens_per_s"], rel=1e-3)
    by_capacity = markdown_rows(text, "### cache.capacity")
    assert [(r[0], r[1]) for r in by_capacity] == [("96", "4/4"), ("192", "4/4"), ("700", "0/4")]
    failed = markdown_rows(text, "## Failed points (4)")
    assert len(failed) == 4 and all(r[2] == "ConfigError" and "cache.capacity: 700 experts" in r[3] for r in failed)


def test_reproduce_command_reruns_the_best_point(results_dir, tmp_path, capsys):
    text = write_sweep_report(results_dir, tmp_path / "report").markdown.read_text()
    command = text.split("Reproduce the best point:\n\n```\n", 1)[1].split("\n```", 1)[0]
    argv = shlex.split(command)
    assert argv[:2] == ["moesim", "run"]
    assert main([*argv[1:], "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    best = max(
        (r for r in read_results(results_dir).to_pylist() if r["status"] == "ok"),
        key=lambda r: r["decode_tokens_per_s"],
    )
    assert summary["decode_tokens_per_s"] == best["decode_tokens_per_s"]


def test_reproduce_command_carries_set_values_and_table_values(tmp_path, capsys):
    path = write_scenario(
        tmp_path,
        '[sweep]\nmodel = [{preset = "gpt-oss-20b", expert_format = "bf16"}, '
        '{preset = "gpt-oss-20b", expert_format = "fp8"}]\n"cache.capacity" = [96, "auto"]\n',
    )
    plan = plan_sweep(path, overrides=[("workload.max_steps", 9), ("cache.eviction", "lfu")])
    run_sweep(plan, tmp_path / "out", jobs=1)
    results = load_sweep_results(tmp_path / "out")
    assert results.overrides == (("workload.max_steps", 9), ("cache.eviction", "lfu"))
    for row in results.ok:
        command = reproduce_command(results, row)
        assert "--set workload.max_steps=9 --set cache.eviction=lfu --set 'model={" in command
        assert main([*shlex.split(command)[1:], "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)["summary"]
        assert (summary["num_steps"], summary["hits"]) == (row["num_steps"], row["hits"])
        assert summary["decode_tokens_per_s"] == row["decode_tokens_per_s"]


def test_report_reads_the_dataset_only(results_dir, tmp_path, monkeypatch):
    import moesim.sim

    def no_simulation(*args, **kwargs):
        raise AssertionError("the report must not simulate")

    monkeypatch.setattr(moesim.sim, "run", no_simulation)
    assert write_sweep_report(results_dir, tmp_path / "r").markdown.is_file()


def test_ranking_follows_the_metric_direction(results_dir):
    results = load_sweep_results(results_dir)
    table = best_table(results, metric="decode_step_latency_s.p99", top=3)
    assert table.headers[4] == "decode_step_latency_s.p99" and len(table.rows) == 3
    fastest = sorted(results.ok, key=lambda r: (r["decode_step_latency_s.p99"], r["point_index"]))[:3]
    assert [row[-1] for row in table.rows] == [r["point_id"] for r in fastest]  # lowest first, ties by point
    with pytest.raises(ConfigError, match="--metric: 'tokens' is not a numeric column"):
        write_sweep_report(results_dir, metric="tokens")


def test_dimension_table_summarises_each_value(results_dir):
    results = load_sweep_results(results_dir)
    table = dimension_table(results, "cache.eviction")
    assert [row[0] for row in table.rows] == ["belady", "lru"]
    for row in table.rows:
        tps = [r["decode_tokens_per_s"] for r in results.ok if r["cache.eviction"] == row[0]]
        assert float(row[2]) == pytest.approx(max(tps), rel=1e-3)
        assert float(row[3]) == pytest.approx(float(np.median(tps)), rel=1e-3)


def test_latency_cdf_points(results_dir):
    results = load_sweep_results(results_dir)
    default = choose_cdf_points(results)
    lines = {(r["cache.eviction"], r["prefetch.predictor"]) for r in default}
    assert len(default) == 4 and lines == {(e, p) for e in ("lru", "belady") for p in ("none", "oracle")}
    for row in default:  # the best point of its line
        same = [
            r["decode_tokens_per_s"]
            for r in results.ok
            if (r["cache.eviction"], r["prefetch.predictor"]) == (row["cache.eviction"], row["prefetch.predictor"])
        ]
        assert row["decode_tokens_per_s"] == max(same)
    first, second = results.ok[0], results.ok[1]
    chosen = choose_cdf_points(results, [str(first["point_index"] + 1), second["point_id"][:8]])
    assert [r["point_id"] for r in chosen] == [first["point_id"], second["point_id"]]
    with pytest.raises(ConfigError, match="matches 12 points"):
        choose_cdf_points(results, [""])
    failed = results.failed[0]
    with pytest.raises(ConfigError, match="has no decode latencies"):
        choose_cdf_points(results, [failed["point_id"]])


def test_report_on_the_parquet_file_and_on_uncompacted_parts(results_dir, tmp_path):
    from_file = write_report(results_dir / "results.parquet", tmp_path / "a").markdown.read_text()
    from_dir = write_report(results_dir, tmp_path / "b").markdown.read_text()
    assert from_file.count("###") == from_dir.count("###") == 3
    # a sweep still running (or killed): rows only in part files
    plan = plan_sweep(write_scenario(tmp_path, SWEEP, max_steps=20))
    rows = read_results(results_dir).to_pylist()
    with ResultsWriter.create(tmp_path / "parts", plan) as writer:
        for point, row in zip(plan.points, rows[:5]):
            writer.append([{**row, "values": point.values}])
    files = write_report(tmp_path / "parts", tmp_path / "c")
    assert "5 points of 12 planned" in files.markdown.read_text()


def test_report_of_a_sweep_where_everything_failed(tmp_path):
    path = write_scenario(tmp_path, '[sweep]\n"cache.capacity" = [700, 768]\n')
    run_sweep(plan_sweep(path), tmp_path / "out", jobs=1)
    files = write_sweep_report(tmp_path / "out")
    text = files.markdown.read_text()
    assert files.plots == () and "2 points: 0 ok, 2 failed." in text and "## Failed points (2)" in text
    assert "Best configurations" not in text


# ---------------------------------------------------------------------- metrics JSON
def test_metrics_report_plots_srp_and_sch_against_segment(trace_path, tmp_path, capsys):  # noqa: F811 (the fixture)
    code = main(
        ["metrics", str(trace_path), "--json", "--segments", "2,4,8", "--rho", "1,2", "--policies", "lru,belady,sch"]
    )
    assert code == 0
    json_path = tmp_path / "m.json"
    json_path.write_text(capsys.readouterr().out)
    data = json.loads(json_path.read_text())
    files = write_report(json_path)
    assert files.markdown == tmp_path / "m-report" / "report.md"
    assert [p.name for p in files.plots] == ["srp_vs_segment.png", "sch_vs_segment.png"]
    for plot in files.plots:
        assert_png(plot)
    text = files.markdown.read_text()
    srp = markdown_rows(text, "## SRP against segment length")
    assert [(r[0], r[1]) for r in srp] == [(str(m), level) for m in (2, 4, 8) for level in ("layer", "model")]
    pooled = {(r["level"], r["segment"]): r for r in data["srp"] if r["layer"] is None}
    for row in srp:
        assert row[2] == f"{100 * pooled[row[1], int(row[0])]['srp']:.1f}%"
    sch = markdown_rows(text, "## SCH against segment length")
    assert len(sch) == 2 * 2 * 3  # levels x rho x segments
    lru = next(r for r in data["hit_rates"] if r["policy"] == "lru" and r["level"] == "model" and r["layer"] is None)
    assert sch[-1][4] == f"{100 * lru['rates'][1]['rate']:.1f}%"  # model level, rho 2, LRU column


def test_report_cli(results_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(results_dir, out)
    assert main(["report", str(out), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert f"report: {out}/report/report.md" in text and text.count("plot:") == 4 and "rank" in text
    assert (out / "report" / "latency_cdf.png").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file or directory" in err
    (tmp_path / "x.json").write_text(json.dumps({"trace": {}, "settings": {}, "hit_rates": [], "srp": []}))
    assert main(["report", str(tmp_path / "x.json"), "--metric", "hit_rate"]) == 2
    assert "--metric: applies to sweep results" in capsys.readouterr().err
    scaling = tmp_path / "granularity"
    scaling.mkdir()
    metadata = {b"moesim.dataset": json.dumps({"kind": "moesim.scaling.granularity", "schema_version": 1}).encode()}
    pq.write_table(pa.table({"x": [1]}).replace_schema_metadata(metadata), scaling / "results.parquet")
    rendered = []
    import moesim.scaling.report as scaling_report

    monkeypatch.setattr(scaling_report, "render", lambda path: rendered.append(path) or scaling / "report.md")
    for target in (scaling, scaling / "results.parquet"):
        assert main(["report", str(target)]) == 0  # scaling results render through moesim.scaling.report
        assert f"report: {scaling}/report.md" in capsys.readouterr().out
    assert rendered == [str(scaling), str(scaling / "results.parquet")]
