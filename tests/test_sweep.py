"""Sweeps: expansion and validation, stable ids, the results dataset (streaming, compaction,
resume after a real kill, Ctrl-C), failed-point isolation, worker loss, local vs Ray, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moesim.cli import main
from moesim.errors import ConfigError, MissingExtraError, SweepError
from moesim.sweep import (
    LATENCY_QUANTILES,
    LocalExecutor,
    ResultsWriter,
    SweepSpec,
    check_traces,
    config_hash,
    expand,
    parse_grid,
    plan_sweep,
    read_manifest,
    read_results,
    run_sweep,
    spec_from_table,
)
from moesim.sweep.dataset import _dedupe, _unify, rows_to_table
from tests.conftest import REPO, SCENARIOS_DIR

TRACE = REPO / "traces" / "gpt-oss-20b-fingerprinting.parquet"
# Columns that legitimately differ between two runs of the same sweep (host time).
HOST_COLUMNS = ("wall_s",)


def write_scenario(directory: Path, sweep: str = "", *, max_steps: int = 12, name: str = "tiny") -> Path:
    """GPT-OSS-20B with bf16 experts on an RTX 4090 (so it offloads), one sequence, a few steps."""
    path = directory / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n'
        'model = {preset = "gpt-oss-20b", expert_format = "bf16"}\n'
        'hardware = "rtx4090-pcie4"\n'
        f'[trace]\npath = "{TRACE}"\nmax_sequences = 1\n'
        f"[workload]\nmax_steps = {max_steps}\n" + sweep
    )
    return path


GRID = '[sweep]\n"cache.capacity" = [96, 192]\ncache.eviction = ["lru", "lfu"]\n'


def comparable(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in HOST_COLUMNS if c in table.column_names])


# ---------------------------------------------------------------------- spec parsing
def test_dotted_and_nested_keys_are_the_same_axes():
    quoted = spec_from_table({"cache.capacity": [1, 2], "prefetch.predictor": ["none"]})
    nested = spec_from_table({"cache": {"capacity": [1, 2]}, "prefetch": {"predictor": ["none"]}})
    assert quoted == nested
    assert quoted.paths == ("cache.capacity", "prefetch.predictor") and quoted.num_points == 2


def test_zip_groups_vary_together():
    one = spec_from_table({"a.x": [1, 2], "zip": {"b": ["p", "q", "r"], "c.y": [7, 8, 9]}})
    assert one.num_points == 6
    assert list(one.combinations())[:3] == [
        {"a.x": 1, "b": "p", "c.y": 7},
        {"a.x": 1, "b": "q", "c.y": 8},
        {"a.x": 1, "b": "r", "c.y": 9},
    ]
    several = spec_from_table({"zip": [{"b": [1, 2]}, {"c": ["u", "v"], "d": [0, 1]}]})
    assert several.num_points == 4 and [len(a.paths) for a in several.axes] == [1, 2]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"cache.capacity": 64}, "sweep.cache.capacity: expected a list of values to sweep, got 64; write [64]"),
        ({"cache.capacity": []}, "cache.capacity needs a non-empty list"),
        ({"cache.capacity": [8, 16, 8]}, "8 appears twice (positions 1 and 3)"),
        ({"zip": {"a": [1, 2], "b": [1]}}, "need one length (a has 2, b has 1)"),
        ({"a": [1], "zip": {"a": [2]}}, "a is swept twice"),
        ({"zip": 3}, "sweep.zip: expected a table"),
        ({"sweep.x": [1]}, "cannot sweep the sweep table"),
    ],
)
def test_bad_sweep_tables_name_the_path(table, message):
    with pytest.raises(ConfigError, match=None) as info:
        spec_from_table(table)
    assert message in str(info.value)


def test_parse_grid_values_like_set():
    assert parse_grid("cache.capacity=8,16,32") == ("cache.capacity", [8, 16, 32])
    assert parse_grid("hardware=rtx4090-pcie4,h100-pcie5") == ("hardware", ["rtx4090-pcie4", "h100-pcie5"])
    assert parse_grid("cache.capacity=auto,64") == ("cache.capacity", ["auto", 64])
    assert parse_grid("x=[1, 2]") == ("x", [1, 2])
    assert parse_grid('model={preset = "a", top_k = 2},{preset = "b"}') == (
        "model",
        [{"preset": "a", "top_k": 2}, {"preset": "b"}],
    )
    assert parse_grid('x="a,b",c') == ("x", ["a,b", "c"])
    for bad in ("cache.capacity", "=1,2", "a..b=1", "x=1,,2", "x="):
        with pytest.raises(ConfigError, match="--grid"):
            parse_grid(bad)


WORDS = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True).filter(lambda w: w not in ("inf", "nan", "true", "false"))


@given(st.lists(st.one_of(st.integers(-(10**6), 10**6), WORDS), min_size=1, max_size=6))
def test_parse_grid_round_trips_plain_values(values):
    assert parse_grid("a.b=" + ",".join(str(v) for v in values)) == ("a.b", values)


def test_command_line_axes_replace_or_extend_the_file():
    spec = spec_from_table({"a": [1, 2], "zip": {"b": [1, 2], "c": [3, 4]}})
    changed = spec.with_axes([("a", [5]), ("d", [6, 7])], [("e", [0, 1]), ("f", [2, 3])])
    assert [a.paths for a in changed.axes] == [("a",), ("b", "c"), ("d",), ("e", "f")]
    assert changed.axes[0].values == ((5,),) and changed.num_points == 1 * 2 * 2 * 2
    with pytest.raises(ConfigError, match="--grid b: the scenario sweeps b in a zip group with c"):
        spec.with_axes([("b", [9])])


# ---------------------------------------------------------------------- expansion and ids
def test_expansion_is_the_cartesian_product_in_order(tmp_path):
    path = write_scenario(
        tmp_path,
        '[sweep]\n"cache.capacity" = [96, 192, 288]\n'
        '[sweep.zip]\ncache.eviction = ["lru", "lfu"]\n"prefetch.predictor" = ["none", "oracle"]\n',
    )
    plan = plan_sweep(path, grid=["workload.batch_size=1,2"])
    assert len(plan) == 3 * 2 * 2
    assert [p.index for p in plan.points] == list(range(12))
    first = [
        (
            p.values["cache.capacity"],
            p.values["cache.eviction"],
            p.values["prefetch.predictor"],
            p.values["workload.batch_size"],
        )
        for p in plan.points[:4]
    ]
    assert first == [(96, "lru", "none", 1), (96, "lru", "none", 2), (96, "lfu", "oracle", 1), (96, "lfu", "oracle", 2)]
    for point in plan.points:  # every point is validated into a Scenario with its values
        assert point.scenario.cache.capacity == point.values["cache.capacity"]
        assert point.scenario.prefetch.predictor == point.values["prefetch.predictor"]
        assert point.scenario.workload.batch_size == point.values["workload.batch_size"]
        assert "sweep" not in point.raw
    assert len({p.point_id for p in plan.points}) == 12


def test_ids_are_stable_hashes_of_the_resolved_configuration(tmp_path):
    path = write_scenario(tmp_path, GRID)
    plan = plan_sweep(path)
    again = plan_sweep(path)
    assert [p.point_id for p in plan.points] == [p.point_id for p in again.points]
    # axis order, labels and the way a value got there do not matter; the configuration does
    reordered = write_scenario(
        tmp_path, '[sweep]\ncache.eviction = ["lfu", "lru"]\n"cache.capacity" = [192, 96]\n', name="other-name"
    )
    by_values = {(p.values["cache.capacity"], p.values["cache.eviction"]): p.point_id for p in plan.points}
    for point in plan_sweep(reordered).points:
        assert point.point_id == by_values[point.values["cache.capacity"], point.values["cache.eviction"]]
    single = plan_sweep(
        write_scenario(tmp_path, name="single"), overrides=[("cache.capacity", 192), ("cache.eviction", "lfu")]
    )
    assert len(single) == 1 and single.points[0].point_id == by_values[192, "lfu"]
    assert all(p.point_id == config_hash(p.raw) for p in plan.points)
    # a different base (here max_steps) gives other ids and another fingerprint
    other = plan_sweep(write_scenario(tmp_path, GRID, max_steps=13, name="steps"))
    assert not {p.point_id for p in other.points} & set(by_values.values())
    assert other.fingerprint != plan.fingerprint


@given(
    st.lists(st.integers(4, 400), min_size=1, max_size=4, unique=True),
    st.lists(st.sampled_from(["lru", "lfu", "fifo", "belady"]), min_size=1, max_size=3, unique=True),
    st.lists(st.integers(1, 16), min_size=1, max_size=3, unique=True),
)
def test_every_combination_appears_once_with_a_unique_id(capacities, evictions, batches):
    base = {"model": "gpt-oss-20b", "hardware": "rtx4090-pcie4", "trace": {"path": str(TRACE)}}
    spec = SweepSpec.grid(
        {"cache.capacity": capacities, "cache.eviction": evictions},
        zips=[{"workload.batch_size": batches, "seed": list(range(len(batches)))}],
    )
    plan = expand(base, spec)
    combos = [
        (p.values["cache.capacity"], p.values["cache.eviction"], p.values["workload.batch_size"]) for p in plan.points
    ]
    assert len(plan) == len(capacities) * len(evictions) * len(batches) == len(set(combos))
    assert len({p.point_id for p in plan.points}) == len(plan)
    assert [p.point_id for p in expand(base, spec).points] == [p.point_id for p in plan.points]


def test_a_bad_point_fails_fast_naming_the_point_and_path(tmp_path, capsys):
    path = write_scenario(tmp_path, '[sweep]\n"cache.capacity" = [96, 192]\ncache.eviction = ["lru", "nope"]\n')
    with pytest.raises(ConfigError) as info:
        plan_sweep(path)
    message = str(info.value)
    assert 'sweep point 2 of 4 (cache.capacity=96, cache.eviction="nope")' in message
    assert "cache.eviction" in message and "lru" in message  # the registry lists the valid names
    out = tmp_path / "out"
    code = main(["sweep", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "sweep point 2 of 4" in err
    assert not out.exists()  # nothing ran, nothing was written


def test_a_trace_that_does_not_fit_a_model_fails_before_anything_runs(tmp_path, capsys):
    path = write_scenario(tmp_path, '[sweep]\nmodel = ["gpt-oss-20b", "mixtral-8x7b"]\n')
    plan = plan_sweep(path)
    with pytest.raises(ConfigError, match=r"sweep point 2 of 2 \(model=\"mixtral-8x7b\"\): trace: .* does not fit"):
        check_traces(plan)
    code = main(["sweep", str(path), "--out", str(tmp_path / "out")])
    assert code == 2 and "does not fit model 'mixtral-8x7b'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_set_and_grid_conflicts_are_errors(tmp_path):
    path = write_scenario(tmp_path, GRID)
    with pytest.raises(ConfigError, match="--set cache.capacity: cache.capacity is swept"):
        plan_sweep(path, overrides=[("cache.capacity", 64)])
    with pytest.raises(ConfigError, match="--set sweep.x: change sweep axes with --grid"):
        plan_sweep(path, overrides=[("sweep.x", [1])])


def test_table_and_field_axes_compose_in_either_order():
    base = {"model": "gpt-oss-20b", "hardware": "rtx4090-pcie4", "trace": {"path": str(TRACE)}}
    for grid in (
        {"hardware.h2d.efficiency": [0.5], "hardware": ["h100-pcie5"]},
        {"hardware": ["h100-pcie5"], "hardware.h2d.efficiency": [0.5]},
    ):
        (point,) = expand(base, SweepSpec.grid(grid)).points
        assert point.scenario.hardware.name == "h100-pcie5" and point.scenario.hardware.h2d.efficiency == 0.5


# ---------------------------------------------------------------------- dataset pieces
def test_rows_to_table_types_and_unify():
    rows = [
        {
            "point_id": "a",
            "point_index": 0,
            "values": {"cache.capacity": 8},
            "status": "ok",
            "x": 1.5,
            "n": 3,
            "decode_latency_quantiles_s": [0.1, 0.2],
        },
        {
            "point_id": "b",
            "point_index": 1,
            "values": {"cache.capacity": 16},
            "status": "failed",
            "error": "boom",
            "x": float("nan"),
        },
    ]
    table = rows_to_table(rows, {"cache.capacity": "int64"})
    assert table.schema.field("cache.capacity").type == pa.int64()
    assert table.column("x").to_pylist() == [1.5, None]  # NaN is written as null
    assert table.column("decode_latency_quantiles_s").to_pylist() == [[0.1, 0.2], None]
    later = rows_to_table(
        [{"point_id": "c", "point_index": 2, "values": {"cache.capacity": "auto"}, "status": "ok", "x": 2.0}],
        {"cache.capacity": "string"},
    )
    merged = _unify([table, later])
    assert merged.column("cache.capacity").to_pylist() == ["8", "16", "auto"]
    assert merged.column("n").to_pylist() == [3, None, None]


def test_dedupe_keeps_the_last_row_of_each_point():
    table = pa.table({"point_id": ["a", "b", "a", "c", "b"], "v": [1, 2, 3, 4, 5]})
    assert _dedupe(table).to_pydict() == {"point_id": ["a", "c", "b"], "v": [3, 4, 5]}


def test_writer_refuses_to_clobber_or_mix(tmp_path):
    plan = plan_sweep(write_scenario(tmp_path, GRID))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="holds other files"):
        ResultsWriter.create(tmp_path / "busy", plan)
    with pytest.raises(SweepError, match="cannot create the results directory"):
        ResultsWriter.create(tmp_path / "busy" / "notes.txt", plan)
    with ResultsWriter.create(tmp_path / "out", plan):
        pass
    with ResultsWriter.create(tmp_path / "out", plan) as writer:  # nothing to lose in an empty dataset
        (point,) = [p for p in plan.points if p.index == 0]
        writer.append([{"point_id": point.point_id, "point_index": 0, "status": "ok", "values": point.values}])
    with pytest.raises(SweepError, match=r"already holds sweep results \(1 point\); pass --resume"):
        ResultsWriter.create(tmp_path / "out", plan)
    with (
        ResultsWriter.resume(tmp_path / "out", plan),
        pytest.raises(SweepError, match="being written by another moesim sweep"),
    ):
        ResultsWriter.resume(tmp_path / "out", plan)
    other = plan_sweep(write_scenario(tmp_path, GRID, max_steps=30, name="other"))
    with pytest.raises(SweepError, match=r"different base scenario \(workload.max_steps \(12 in the results, 30 now\)"):
        ResultsWriter.resume(tmp_path / "out", other)


# ---------------------------------------------------------------------- running
def test_rows_hold_exactly_what_the_simulator_reports(tmp_path):
    from moesim.scenario import load_trace
    from moesim.sim import run

    plan = plan_sweep(write_scenario(tmp_path, GRID))
    summary = run_sweep(plan, tmp_path / "out", jobs=1)
    assert (summary.num_points, summary.num_run, summary.num_ok, summary.num_failed) == (4, 4, 4, 0)
    assert not summary.interrupted
    table = read_results(tmp_path / "out")
    assert table.column("point_id").to_pylist() == [p.point_id for p in plan.points]  # expansion order
    assert table.column("status").to_pylist() == ["ok"] * 4
    manifest = read_manifest(tmp_path / "out")
    assert manifest["files"] == ["results.parquet"] and manifest["state"] == "complete"
    assert not (tmp_path / "out" / "parts").exists() or not any((tmp_path / "out" / "parts").iterdir())
    for point, row in zip(plan.points, table.to_pylist()):
        result = run(load_trace(point.scenario), point.scenario)
        assert row["cache.capacity"] == point.values["cache.capacity"]
        assert row["cache.eviction"] == point.values["cache.eviction"]
        assert row["decode_tokens_per_s"] == result.summary["decode_tokens_per_s"]
        assert row["time_breakdown_s.stall_fetch"] == result.summary["time_breakdown_s"]["stall_fetch"]
        assert row["hits"] == result.summary["hits"] and row["engine_used"] == result.engine
        assert row["cfg.capacity_experts"] == point.values["cache.capacity"]
        assert row["cfg.rho"] == point.values["cache.capacity"] / (4 * 24)
        decode = result.steps.filter(pa.compute.equal(result.steps["phase"], 1)).column("latency_s").to_numpy()
        assert row["decode_latency_quantiles_s"] == list(np.quantile(decode, LATENCY_QUANTILES))
        assert json.loads(row["scenario_json"])["memory"]["capacity_experts"] == point.values["cache.capacity"]


def test_traces_are_staged_as_arrow_and_opened_once_per_worker(tmp_path, monkeypatch):
    import moesim.trace
    from moesim.sweep import worker
    from moesim.sweep.runner import TRACE_CACHE, stage_traces

    plan = plan_sweep(write_scenario(tmp_path, GRID))
    files = check_traces(plan)
    ((key, source),) = files.items()
    assert source == TRACE
    staged = stage_traces(files, tmp_path / "cache")
    assert staged[key].suffix == ".arrow" and moesim.trace.read_trace(staged[key]).equals(
        moesim.trace.read_trace(TRACE)
    )
    stamp = staged[key].stat().st_mtime_ns
    assert stage_traces(files, tmp_path / "cache")[key].stat().st_mtime_ns == stamp  # converted once, then reused
    opened = []
    real_read = moesim.trace.read_trace

    def counting_read(path, **kwargs):
        opened.append((Path(path), kwargs))
        return real_read(path, **kwargs)

    monkeypatch.setattr(moesim.trace, "read_trace", counting_read)
    worker._OPEN_TRACES.clear()
    run_sweep(plan, tmp_path / "out", jobs=1)
    # the driver validates the Parquet file once; the worker maps the staged Arrow copy once for 4 points
    assert [(p.suffix, k) for p, k in opened] == [
        (".parquet", {}),
        (".parquet", {"validate": False}),
        (".arrow", {"validate": False}),
    ]
    assert not (tmp_path / "out" / TRACE_CACHE).exists()  # removed when the sweep completes


def test_a_failing_point_is_recorded_and_the_rest_go_on(tmp_path, monkeypatch):
    import moesim.sim

    real_run = moesim.sim.run

    def flaky_run(trace, scenario, engine=None):
        if scenario.cache.eviction == "lfu" and scenario.cache.capacity == 192:
            raise ZeroDivisionError("simulated bug")
        return real_run(trace, scenario, engine=engine)

    monkeypatch.setattr(moesim.sim, "run", flaky_run)
    # 700 experts do not fit in 24 GiB with bf16 experts: a user error found when the point runs
    path = write_scenario(tmp_path, '[sweep]\n"cache.capacity" = [96, 192, 700]\ncache.eviction = ["lru", "lfu"]\n')
    summary = run_sweep(plan_sweep(path), tmp_path / "out", jobs=1)
    assert (summary.num_ok, summary.num_failed) == (3, 3)
    rows = {(r["cache.capacity"], r["cache.eviction"]): r for r in read_results(tmp_path / "out").to_pylist()}
    bug = rows[192, "lfu"]
    assert bug["status"] == "failed" and bug["error_type"] == "ZeroDivisionError" and bug["error"] == "simulated bug"
    assert "flaky_run" in bug["error_traceback"]  # a bug keeps its traceback ...
    for eviction in ("lru", "lfu"):
        too_big = rows[700, eviction]
        assert too_big["status"] == "failed" and too_big["error_type"] == "ConfigError"
        assert too_big["error"].startswith("cache.capacity: 700 experts need") and too_big["error_traceback"] is None
        assert too_big["cfg.eviction"] == eviction and too_big["decode_tokens_per_s"] is None
    assert all(rows[c, e]["status"] == "ok" for c, e in [(96, "lru"), (96, "lfu"), (192, "lru")])
    # --resume skips recorded points; --retry-failed runs the failed ones again and replaces their rows
    monkeypatch.setattr(moesim.sim, "run", real_run)
    again = run_sweep(plan_sweep(path), tmp_path / "out", jobs=1, resume=True)
    assert (again.num_skipped, again.num_run) == (6, 0)
    retried = run_sweep(plan_sweep(path), tmp_path / "out", jobs=1, resume=True, retry_failed=True)
    assert (retried.num_run, retried.num_ok, retried.num_failed) == (3, 1, 2)
    table = read_results(tmp_path / "out")
    assert table.num_rows == 6 and len(set(table.column("point_id").to_pylist())) == 6
    assert {(r["cache.capacity"], r["cache.eviction"]): r["status"] for r in table.to_pylist()}[192, "lfu"] == "ok"


def test_resume_after_extending_the_grid_runs_only_new_points(tmp_path):
    path = write_scenario(tmp_path, GRID)
    run_sweep(plan_sweep(path), tmp_path / "out", jobs=1)
    first = read_results(tmp_path / "out")
    more = run_sweep(plan_sweep(path, grid=["cache.capacity=96,192,288"]), tmp_path / "out", jobs=1, resume=True)
    assert (more.num_skipped, more.num_run) == (4, 2)
    table = read_results(tmp_path / "out")
    assert table.column("cache.capacity").to_pylist() == [96, 96, 192, 192, 288, 288]
    old = {r["point_id"]: r for r in comparable(first).to_pylist()}
    assert all(old[r["point_id"]] == r for r in comparable(table).to_pylist() if r["point_id"] in old)


def _crash_on_three(task: int) -> int:
    if task == 3:
        os._exit(13)  # a worker killed mid-point (think: the OOM killer)
    return task * 10


def test_a_dead_worker_loses_only_its_own_point():
    executor = LocalExecutor(2, in_process=False)
    outcomes = list(executor.map_unordered(_crash_on_three, range(8)))
    results = {task: (result, failure) for task, result, failure in outcomes}
    assert sorted(results) == list(range(8))
    assert results[3][0] is None and "worker process died" in results[3][1]
    assert all(results[t] == (t * 10, None) for t in range(8) if t != 3)


def _sweep_command(path: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "moesim", "sweep", str(path), "--out", str(out), *extra]


def _wait_for_parts(out: Path, process: subprocess.Popen, count: int, reads: list[int]) -> None:
    """Poll until ``count`` parts are listed, reading the dataset each time (it must always read)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "manifest.json").exists():
            manifest = read_manifest(out)
            rows = read_results(out).num_rows
            assert not reads or rows >= reads[-1]
            reads.append(rows)
            assert manifest.get("state") != "complete", "the sweep finished before it could be stopped; lengthen it"
            if len([f for f in manifest["files"] if f.startswith("parts/")]) >= count:
                return
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    raise AssertionError("no parts were written in time")


@pytest.mark.slow
def test_resume_after_a_kill_loses_and_duplicates_nothing(tmp_path):
    path = write_scenario(
        tmp_path,
        '[sweep]\n"cache.capacity" = [96, 128, 160, 192, 224, 256, 288, 320]\n'
        'cache.eviction = ["lru", "lfu", "fifo"]\n"prefetch.predictor" = ["none", "oracle"]\n',
        max_steps=40,
    )
    plan = plan_sweep(path)
    out = tmp_path / "out"
    process = subprocess.Popen(
        _sweep_command(path, out, "--jobs", "2", "--flush-interval", "0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    reads: list[int] = []
    try:
        _wait_for_parts(out, process, 3, reads)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep, no cleanup
        process.wait()
    after_kill = read_results(out)
    done = after_kill.num_rows
    assert 3 <= done < len(plan) and after_kill.column("status").to_pylist() == ["ok"] * done
    assert len(set(after_kill.column("point_id").to_pylist())) == done
    assert len(reads) >= 2  # read while the sweep was writing
    resumed = subprocess.run(
        _sweep_command(path, out, "--jobs", "2", "--resume"), capture_output=True, text=True, check=False
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} already in" in resumed.stdout
    table = read_results(out)
    assert table.column("point_id").to_pylist() == [p.point_id for p in plan.points]  # none lost, none twice
    assert read_manifest(out)["files"] == ["results.parquet"]
    # the interrupted-and-resumed dataset equals one run without interruption (here in-process)
    clean = run_sweep(plan, tmp_path / "clean", jobs=1)
    assert clean.num_ok == len(plan)
    assert comparable(read_results(tmp_path / "clean")).equals(comparable(table))


@pytest.mark.slow
def test_ctrl_c_leaves_a_consistent_dataset(tmp_path):
    path = write_scenario(
        tmp_path,
        '[sweep]\n"cache.capacity" = [96, 128, 160, 192, 224, 256, 288, 320]\n'
        'cache.eviction = ["lru", "lfu", "fifo"]\n',
        max_steps=60,
    )
    out = tmp_path / "out"
    process = subprocess.Popen(
        _sweep_command(path, out, "--jobs", "2", "--flush-interval", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_parts(out, process, 2, [])
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends the whole group on Ctrl-C
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130 and err.strip().splitlines()[-1] == "moesim: interrupted"
    manifest = read_manifest(out)
    assert manifest["state"] == "interrupted" and manifest["runs"][-1]["state"] == "interrupted"
    table = read_results(out)
    assert 2 <= table.num_rows < 24 and set(table.column("status").to_pylist()) == {"ok"}
    ResultsWriter.resume(out, plan_sweep(path)).close()  # the lock died with the driver


# ---------------------------------------------------------------------- executors
def test_missing_ray_is_a_one_line_install_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'moesim\[ray\]'"):
        run_sweep(plan_sweep(write_scenario(tmp_path, GRID)), tmp_path / "out", executor="ray")
    code = main(["sweep", str(write_scenario(tmp_path, GRID)), "--out", str(tmp_path / "o2"), "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'moesim[ray]'" in err


def test_executor_options_are_checked(tmp_path):
    plan = plan_sweep(write_scenario(tmp_path, GRID))
    with pytest.raises(ConfigError, match="--address: only the ray executor"):
        run_sweep(plan, tmp_path / "a", executor="local", address="auto")
    with pytest.raises(ConfigError, match="--executor: expected one of local, ray"):
        run_sweep(plan, tmp_path / "b", executor="slurm")
    with pytest.raises(ConfigError, match="--jobs"):
        run_sweep(plan, tmp_path / "c", jobs=0)
    with pytest.raises(ConfigError, match="--retry-failed: only meaningful with --resume"):
        run_sweep(plan, tmp_path / "d", retry_failed=True)


@pytest.mark.ray
@pytest.mark.slow
def test_local_processes_and_ray_give_identical_datasets(tmp_path):
    pytest.importorskip("ray")
    plan = plan_sweep(
        write_scenario(
            tmp_path, '[sweep]\n"cache.capacity" = [96, 192, 288]\ncache.eviction = ["lru", "belady"]\n', max_steps=20
        )
    )
    local = run_sweep(plan, tmp_path / "local", executor="local", jobs=2)
    ray_run = run_sweep(plan, tmp_path / "ray", executor="ray", jobs=2)
    assert (local.num_ok, ray_run.num_ok, ray_run.executor, ray_run.jobs) == (6, 6, "ray", 2)
    assert comparable(read_results(tmp_path / "ray")).equals(comparable(read_results(tmp_path / "local")))
    assert read_manifest(tmp_path / "ray")["runs"][-1]["executor"] == "ray"


# ---------------------------------------------------------------------- CLI
def test_cli_dry_run_lists_points(tmp_path, capsys):
    path = write_scenario(tmp_path, GRID)
    code = main(["sweep", str(path), "--grid", "prefetch.predictor=none,oracle", "--dry-run"])
    out = capsys.readouterr().out
    assert (
        code == 0 and "8 points over cache.capacity (2), cache.eviction (2), prefetch.predictor (2); all valid" in out
    )
    assert 'cache.capacity=192, cache.eviction="lfu", prefetch.predictor="oracle"' in out


def test_cli_runs_resumes_and_refuses_to_clobber(tmp_path, capsys):
    path = write_scenario(tmp_path, GRID)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1"]) == 0
    text = capsys.readouterr().out
    assert "4 points in" in text and "4 ok, 0 failed" in text and f"next: moesim report {out}" in text
    assert "best configurations" in text
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1"]) == 2
    assert "already holds sweep results (4 points); pass --resume" in capsys.readouterr().err
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1", "--resume"]) == 0
    assert "4 already in" in capsys.readouterr().out
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1", "--overwrite"]) == 0
    assert read_results(out).num_rows == 4


def test_cli_json_and_exit_status(tmp_path, capsys):
    path = write_scenario(tmp_path, '[sweep]\n"cache.capacity" = [96, 900]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "a"), "--jobs", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["num_points"], data["num_ok"], data["num_failed"], data["interrupted"]) == (2, 1, 1, False)
    assert (
        data["failures"][0]["values"] == {"cache.capacity": 900} and "exceeds the 768" in data["failures"][0]["error"]
    )
    assert data["results"] == str(tmp_path / "a" / "results.parquet")
    assert (
        main(
            ["sweep", str(path), "--grid", "cache.capacity=900", "--out", str(tmp_path / "b"), "--jobs", "1", "--json"]
        )
        == 1
    )
    assert json.loads(capsys.readouterr().out)["num_ok"] == 0  # every point failed: exit status 1
    assert main(["sweep", str(path), "--dry-run", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["values"] for p in listed["points"]] == [{"cache.capacity": 96}, {"cache.capacity": 900}]


def test_shipped_sweep_scenario_expands_and_checks():
    plan = plan_sweep(SCENARIOS_DIR / "sweep-gptoss-cache.toml")
    assert len(plan) == 36 and plan.swept_paths == ("cache.capacity", "cache.eviction", "prefetch.predictor")
    assert check_traces(plan)  # the shipped trace fits the model of every point
    assert {p.scenario.model.expert_format for p in plan.points} == {"bf16"}


@pytest.mark.slow
def test_shipped_sweep_scenario_runs(tmp_path):
    # every point of the shipped sweep, each cut to its first 40 steps to keep the test quick
    plan = plan_sweep(SCENARIOS_DIR / "sweep-gptoss-cache.toml", overrides=[("workload.max_steps", 40)])
    summary = run_sweep(plan, tmp_path / "out", jobs=2)
    assert (summary.num_ok, summary.num_failed) == (36, 0)
    table = read_results(tmp_path / "out")
    assert table.num_rows == 36 and set(table.column("cfg.rho").to_pylist()) == {1.0, 2.0, 3.0, 4.0}
