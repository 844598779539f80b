"""Reports of sweep results and of ``moesim metrics --json`` output: Markdown plus PNG plots.

A sweep report reads the results dataset only (no re-simulation) and writes ``report.md`` with
the best configurations, one table per swept dimension, the settings every point shares and the
failed points, and plots:

* ``throughput_vs_cache.png``: decode tokens/s against the GPU expert-cache capacity, one line per
  policy setting (the swept ``cache.*``/``prefetch.*``/``offload.miss`` values), one panel per
  setting of the other swept dimensions (hardware, batch size, ...);
* ``hit_rate_vs_rho.png``: hit rate against rho = capacity / experts one token activates in the
  cache's scope (Liang et al. 2025), laid out the same way;
* ``time_breakdown.png``: time per token split into dense layers, expert kernels, combine + head
  and stalls, one bar per point, best first;
* ``latency_cdf.png``: decode step latency CDFs of chosen points (by default the best point of
  each policy line), from the quantiles every point records.

A metrics report turns ``moesim metrics --json`` output into ``report.md`` and plots of SRP
(with its i.i.d. baseline) and SCH hit rate against segment length.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from moesim.errors import ConfigError
from moesim.units import format_bytes, format_rate

DEFAULT_METRIC = "decode_tokens_per_s"
#: Swept paths that are policy choices: drawn as separate lines rather than separate panels.
POLICY_PATHS = ("cache.eviction", "cache.preload", "cache.layout", "prefetch.", "offload.miss")
#: Swept paths that set the cache size: the x axis of the cache plots, never a panel.
SIZE_PATHS = ("cache.capacity", "cache.reserve")
MAX_PANELS = 6
LINE_STYLES = ("-", "--", ":", "-.")
MAX_BARS = 40
MAX_CDF_CURVES = 10  # one colour each (tab10)
BREAKDOWN = {
    "time_breakdown_s.dense": "dense layers (attention, shared)",
    "time_breakdown_s.expert_gpu": "expert kernels (GPU)",
    "time_breakdown_s.overhead": "combine + head",
    "time_breakdown_s.stall_fetch": "stall: expert transfers",
    "time_breakdown_s.stall_cpu": "stall: CPU experts",
}
LABELS = {
    "decode_tokens_per_s": "decode throughput (tokens/s)",
    "tokens_per_s": "throughput (tokens/s)",
    "hit_rate": "hit rate",
    "decode_step_latency_s.p99": "p99 decode step latency (s)",
}


@dataclass(frozen=True)
class ReportFiles:
    """What a report wrote: the Markdown file and the plots (PNG), in the order shown."""

    markdown: Path
    plots: tuple[Path, ...]


@dataclass(frozen=True)
class Table:
    """A small table: column headers and rows of display strings."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class SweepResults:
    """A results dataset as plain rows, with what its manifest or file metadata say."""

    name: str
    source: str | None
    swept: tuple[str, ...]
    quantiles: tuple[float, ...]
    rows: tuple[dict[str, Any], ...]
    num_planned: int | None
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("status") == "ok"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("status") != "ok"]

    def varying(self) -> list[str]:
        """Swept paths that take more than one value among the rows."""
        return [p for p in self.swept if len({_key(row.get(p)) for row in self.rows}) > 1]


# ---------------------------------------------------------------------- loading
def load_sweep_results(path: str | os.PathLike) -> SweepResults:
    """Rows and description of a results directory or ``results.parquet`` file."""
    from moesim.sweep.dataset import LATENCY_QUANTILES, is_dataset, read_manifest, read_results, sweep_metadata

    path = Path(path)
    table = read_results(path)
    if is_dataset(path):
        manifest = read_manifest(path)
        name, source = manifest.get("name") or path.name, manifest.get("scenario")
        swept = tuple(path for path, _ in manifest.get("swept", []))
        quantiles = tuple(manifest.get("latency_quantiles", LATENCY_QUANTILES))
        planned = manifest.get("num_points")
        overrides = tuple((path, value) for path, value in manifest.get("overrides", []))
    else:
        overrides = ()
        meta = sweep_metadata(table)
        name, source, planned = path.parent.name or path.stem, None, None
        swept = tuple(meta.get("swept", ()))
        quantiles = tuple(meta.get("latency_quantiles", LATENCY_QUANTILES))
    swept = tuple(p for p in swept if p in table.column_names)
    return SweepResults(
        name=name,
        source=source,
        swept=swept,
        quantiles=quantiles,
        rows=tuple(table.to_pylist()),
        num_planned=planned,
        overrides=overrides,
    )


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def metric_higher_is_better(metric: str) -> bool:
    """Throughputs, hit rates, accuracies and utilisations are better high; times, latencies,
    bytes, misses and stalls low."""
    leaf = metric.rsplit(".", 1)[-1]
    return (
        (metric.endswith("per_s") and "bytes" not in metric)
        or leaf in ("hit_rate", "accuracy", "useful")
        or metric.startswith("utilisation.")
    )


def _check_metric(results: SweepResults, metric: str) -> None:
    present = {k for row in results.rows for k, v in row.items() if isinstance(v, (int, float)) and k != "point_index"}
    if results.ok and metric not in present:
        numeric = sorted(k for k in present if not k.startswith("cfg."))
        raise ConfigError(
            f"--metric: {metric!r} is not a numeric column of the results; try one of {', '.join(numeric[:12])}, ..."
        )


def _rank(rows: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    sign = -1.0 if metric_higher_is_better(metric) else 1.0
    usable = [r for r in rows if isinstance(r.get(metric), (int, float))]
    return sorted(usable, key=lambda r: (sign * r[metric], r.get("point_index") or 0))


# ---------------------------------------------------------------------- tables
def _fmt(value: Any, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if column == "hit_rate" or column.endswith("accuracy") or column.startswith("utilisation."):
            return f"{100 * value:.1f}%"
        if column.endswith("per_s"):
            return f"{value:.4g}"
        if column.endswith(("_s", ".mean")) or ".p" in column:
            return f"{1e3 * value:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
        return f"{value:.4g}"
    if isinstance(value, int) and column.endswith("_bytes"):
        return format_bytes(value)
    return str(value)


def _stall_share(row: dict[str, Any]) -> float | None:
    total = row.get("total_time_s")
    stall = (row.get("time_breakdown_s.stall_fetch") or 0.0) + (row.get("time_breakdown_s.stall_cpu") or 0.0)
    return stall / total if total else None


def best_table(results: SweepResults, *, metric: str = DEFAULT_METRIC, top: int = 10) -> Table:
    """The ``top`` points by ``metric``: their swept values and the headline numbers."""
    varying = results.varying() or list(results.swept)
    extra = [c for c in (DEFAULT_METRIC, "hit_rate", "decode_step_latency_s.p99") if c != metric]
    headers = ("rank", *varying, metric, *extra, "stall share", "point_id")
    rows = []
    for rank, row in enumerate(_rank(results.ok, metric)[:top], 1):
        share = _stall_share(row)
        rows.append(
            (
                str(rank),
                *(_fmt(row.get(p)) for p in varying),
                _fmt(row.get(metric), metric),
                *(_fmt(row.get(c), c) for c in extra),
                "-" if share is None else f"{100 * share:.0f}%",
                row["point_id"],
            )
        )
    return Table(headers, tuple(rows))


def best_points(path: str | os.PathLike, *, metric: str = DEFAULT_METRIC, top: int = 5) -> Table | None:
    """:func:`best_table` of the dataset at ``path``, or None when no point succeeded."""
    results = load_sweep_results(path)
    return best_table(results, metric=metric, top=top) if results.ok else None


def dimension_table(results: SweepResults, path: str, *, metric: str = DEFAULT_METRIC) -> Table:
    """One row per value of swept ``path``: points, best and median ``metric``, mean hit rate and
    the other swept values of the best point at that value."""
    others = [p for p in results.varying() if p != path]
    groups: dict[str, list[dict[str, Any]]] = {}
    shown: dict[str, Any] = {}
    for row in results.rows:
        key = _key(row.get(path))
        groups.setdefault(key, []).append(row)
        shown[key] = row.get(path)
    order = sorted(groups, key=lambda k: _sort_key(shown[k]))
    rows = []
    for key in order:
        group = groups[key]
        ranked = _rank([r for r in group if r.get("status") == "ok"], metric)
        values = np.array([r[metric] for r in ranked], dtype=np.float64)
        hits = np.array([r["hit_rate"] for r in ranked if r.get("hit_rate") is not None], dtype=np.float64)
        best = ranked[0] if ranked else None
        rows.append(
            (
                _fmt(shown[key]),
                f"{len(ranked)}/{len(group)}",
                _fmt(best[metric], metric) if best else "-",
                _fmt(float(np.median(values)), metric) if len(values) else "-",
                _fmt(float(hits.mean()), "hit_rate") if len(hits) else "-",
                ", ".join(f"{p}={_fmt(best.get(p))}" for p in others) if best and others else "-",
            )
        )
    headers = (path, "ok/points", f"best {metric}", f"median {metric}", "mean hit rate", "best with")
    return Table(headers, tuple(rows))


def _sort_key(value: Any) -> tuple:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return (1, 0.0, str(value))
    return (0, float(value), "")


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    numeric = [all(_looks_numeric(row[i]) for row in table.rows) and table.rows for i in range(len(table.headers))]
    lines = [
        "| " + " | ".join(cell(h) for h in table.headers) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    lines.extend("| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows)
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    head = text.split(" ")[0].rstrip("%")
    try:
        float(head)
    except ValueError:
        return text in ("-", "n/a")
    return True


def reproduce_command(results: SweepResults, row: Mapping[str, Any]) -> str | None:
    """``moesim run SCENARIO --set path=value ...`` for one point (the sweep's own ``--set`` values,
    then the point's), if the scenario file is known."""
    if not results.source:
        return None
    parts = ["moesim", "run", results.source]
    given = json.loads(row["values_json"]) if row.get("values_json") else {}
    settings = [
        *results.overrides,
        *((p, given[p] if p in given else _stored_value(row.get(p))) for p in results.swept),
    ]
    for path, value in settings:
        parts += ["--set", f"{path}={_set_text(value)}"]
    return " ".join(shlex.quote(p) for p in parts)


def _stored_value(value: Any) -> Any:
    """A swept value as the sweep gave it: tables and arrays are stored as JSON text."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _set_text(value: Any) -> str:
    from moesim.scenario import parse_value
    from moesim.sweep.spec import toml_value

    if isinstance(value, str) and parse_value(value) == value:
        return value  # a bare word --set reads back as the same string
    return toml_value(value)


def _fixed_settings(results: SweepResults) -> list[str]:
    rows = results.rows

    def same(column: str) -> Any:
        values = {_key(r.get(column)) for r in rows}
        return rows[0].get(column) if len(values) == 1 else None

    lines = []
    if same("cfg.model") is not None:
        fmt, size = same("cfg.expert_format"), same("cfg.expert_bytes")
        detail = ", ".join(
            x for x in (f"{fmt} experts" if fmt else "", f"{format_bytes(size)} each" if size else "") if x
        )
        lines.append(f"model **{same('cfg.model')}**" + (f" ({detail})" if detail else ""))
    if same("cfg.hardware") is not None:
        link, bps = same("cfg.h2d_link"), same("cfg.h2d_bps")
        extra = f" (GPU {same('cfg.gpu')}, host-to-GPU {link} at {format_rate(bps)} achieved)" if link and bps else ""
        lines.append(f"hardware **{same('cfg.hardware')}**{extra}")
    if same("cfg.trace") is not None:
        limit = same("cfg.max_sequences")
        lines.append(f"trace `{Path(str(same('cfg.trace'))).name}`" + (f", first {limit} sequences" if limit else ""))
    for column, label in (
        ("cfg.batch_size", "batch size"),
        ("cfg.eviction", "eviction"),
        ("cfg.prefetch", "prefetch predictor"),
        ("cfg.miss", "on a miss"),
        ("cfg.cache_layout", "cache layout"),
        ("cfg.capacity_experts", "cache capacity (experts)"),
        ("engine_used", "engine"),
    ):
        if same(column) is not None:
            lines.append(f"{label}: {same(column)}")
    return lines


# ---------------------------------------------------------------------- plots
def _roles(results: SweepResults) -> tuple[list[str], list[str]]:
    """(series paths, panel paths) among the varying swept paths."""
    varying = results.varying()
    series = [p for p in varying if p.startswith(POLICY_PATHS)]
    panels = [p for p in varying if p not in series and not p.startswith(SIZE_PATHS)]
    return series, panels


def _series_label(row: Mapping[str, Any], series_paths: Sequence[str]) -> str:
    from moesim.report.plots import short_label

    if series_paths:
        return short_label({p: row.get(p) for p in series_paths})
    return f"{row.get('cfg.eviction')}, prefetch {row.get('cfg.prefetch')}"


def _panels_by(
    results: SweepResults, x: str, y: Callable[[dict[str, Any]], float | None], best: Callable[[Sequence[float]], float]
):
    """Panels of lines for plotting ``y`` against column ``x`` (the best ``y`` where several points
    share a line and an x)."""
    from moesim.report.plots import Panel, Series, short_label

    series_paths, panel_paths = _roles(results)
    rows = [r for r in results.ok if r.get(x) is not None and y(r) is not None]
    combos = {_key([r.get(p) for p in panel_paths]): r for r in rows}
    aggregated = len(combos) > MAX_PANELS
    if aggregated:
        panel_paths = []
    grouped: dict[str, dict[str, dict[float, list[float]]]] = {}
    titles: dict[str, str] = {}
    looks: dict[str, tuple[str, ...]] = {}
    for row in sorted(rows, key=lambda r: [_sort_key(r.get(p)) for p in panel_paths]):
        panel = _key([row.get(p) for p in panel_paths])
        titles[panel] = short_label({p: row.get(p) for p in panel_paths}) if panel_paths else ""
        line = _series_label(row, series_paths)
        grouped.setdefault(panel, {}).setdefault(line, {}).setdefault(float(row[x]), []).append(float(y(row)))
        # two policy dimensions read best as colour (the first) and line style (the second)
        looks.setdefault(line, tuple(_key(row.get(p)) for p in series_paths[:2]))
    second = list(dict.fromkeys(look[1] for look in looks.values() if len(look) > 1))
    panels = []
    for panel, lines in grouped.items():
        series = []
        for label, points in lines.items():
            xs = sorted(points)
            look = looks[label]
            paired = len(series_paths) == 2
            series.append(
                Series(
                    label=label,
                    x=xs,
                    y=[best(points[v]) for v in xs],
                    key=look[0] if paired else None,
                    marker_key=look[1] if paired else None,
                    style=LINE_STYLES[second.index(look[1]) % len(LINE_STYLES)] if paired else "-",
                )
            )
        panels.append(Panel(title=titles[panel], series=tuple(series)))
    if aggregated:
        others = ", ".join(p for p in results.varying() if p not in series_paths and not p.startswith(SIZE_PATHS))
        panels = [Panel(title=f"best over {others}", series=panels[0].series)] if panels else []
    return panels


def _plot_throughput(results: SweepResults, out: Path) -> Path | None:
    from moesim.report.plots import plot_lines

    rows = results.ok
    if len({r.get("cfg.capacity_experts") for r in rows} - {None}) < 2:
        return None
    panels = _panels_by(results, "cfg.capacity_experts", lambda r: r.get(DEFAULT_METRIC), max)
    return plot_lines(
        out / "throughput_vs_cache.png",
        panels,
        xlabel="GPU expert cache capacity (experts)",
        ylabel="decode throughput (tokens/s)",
        title=f"{results.name}: decode throughput against cache size",
        ylim=(0, None),
    )


def _plot_hit_rate(results: SweepResults, out: Path) -> Path | None:
    from moesim.report.plots import plot_lines

    rows = results.ok
    if len({r.get("cfg.rho") for r in rows} - {None}) < 2:
        return None
    panels = _panels_by(results, "cfg.rho", lambda r: None if r.get("hit_rate") is None else 100 * r["hit_rate"], max)
    return plot_lines(
        out / "hit_rate_vs_rho.png",
        panels,
        xlabel="cache size rho (capacity / experts a token activates in the cache)",
        ylabel="expert hit rate (%)",
        title=f"{results.name}: hit rate against rho",
        ylim=(0, 100),
    )


def _bar_label(row: Mapping[str, Any], varying: Sequence[str]) -> str:
    from moesim.report.plots import short_label

    return short_label({p: row.get(p) for p in varying}) if varying else row["point_id"]


def _plot_breakdown(results: SweepResults, out: Path, metric: str) -> Path | None:
    from moesim.report.plots import plot_stacked_bars

    ranked = [r for r in _rank(results.ok, metric) if (r.get("decode_tokens") or 0) + (r.get("prefill_tokens") or 0)]
    if not ranked:
        return None
    shown = ranked[:MAX_BARS]
    varying = results.varying()
    labels = [_bar_label(r, varying) for r in shown]
    tokens = np.array([r["decode_tokens"] + r["prefill_tokens"] for r in shown], dtype=np.float64)
    components = {
        label: np.array([r.get(column) or 0.0 for r in shown]) * 1e3 / tokens for column, label in BREAKDOWN.items()
    }
    title = f"{results.name}: time per token by component, best {metric} at the top"
    title += f" (best {MAX_BARS} of {len(ranked)})" if len(ranked) > MAX_BARS else ""
    return plot_stacked_bars(out / "time_breakdown.png", labels, components, xlabel="time per token (ms)", title=title)


def choose_cdf_points(
    results: SweepResults, selectors: Sequence[str] = (), *, metric: str = DEFAULT_METRIC
) -> list[dict[str, Any]]:
    """Rows for the latency CDF: those ``selectors`` name (point ids, unique id prefixes or
    1-based point numbers as ``moesim sweep --dry-run`` lists them), else the best point of each
    policy line (best, median and worst when there is one line)."""
    rows = [r for r in results.ok if r.get("decode_latency_quantiles_s")]
    if selectors:
        chosen = []
        for text in selectors:
            text = text.strip()
            if text.isdigit():
                match = [r for r in results.rows if (r.get("point_index") or 0) + 1 == int(text)]
            else:
                match = [r for r in results.rows if r["point_id"].startswith(text)]
            if len(match) != 1:
                raise ConfigError(
                    f"--points: {text!r} matches {len(match)} points; give a point id (or a unique "
                    f"prefix) or a point number from moesim sweep --dry-run"
                )
            if not match[0].get("decode_latency_quantiles_s"):
                raise ConfigError(f"--points: point {text} has no decode latencies (status {match[0].get('status')})")
            chosen.append(match[0])
        return chosen
    ranked = _rank(rows, metric)
    if not ranked:
        return []
    series_paths, _ = _roles(results)
    if not series_paths:
        picks = [ranked[0], ranked[len(ranked) // 2], ranked[-1]]
        return list({r["point_id"]: r for r in picks}.values())
    best: dict[str, dict[str, Any]] = {}
    for row in ranked:
        best.setdefault(_series_label(row, series_paths), row)
    return list(best.values())[:MAX_CDF_CURVES]


def _plot_cdf(results: SweepResults, out: Path, chosen: Sequence[dict[str, Any]]) -> Path | None:
    from moesim.report.plots import plot_cdfs

    if not chosen:
        return None
    varying = results.varying()
    curves = []
    for row in chosen:
        label = _bar_label(row, varying)
        tps = row.get(DEFAULT_METRIC)
        label += f" ({tps:.3g} tok/s)" if isinstance(tps, float) else ""
        curves.append((label, 1e3 * np.asarray(row["decode_latency_quantiles_s"]), results.quantiles))
    return plot_cdfs(
        out / "latency_cdf.png",
        curves,
        xlabel="decode step latency (ms)",
        title=f"{results.name}: decode step latency distribution",
    )


# ---------------------------------------------------------------------- the report
def write_sweep_report(
    path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    metric: str = DEFAULT_METRIC,
    points: Sequence[str] = (),
    top: int = 10,
) -> ReportFiles:
    """Write ``report.md`` and the plots for the sweep results at ``path``.

    Parameters
    ----------
    path : path-like
        A results directory (``moesim sweep --out``) or its ``results.parquet``.
    out_dir : path-like, optional
        Where to write (default: ``<results dir>/report``).
    metric : str
        Column that ranks configurations (default decode tokens/s; times, latencies and bytes
        rank lowest first).
    points : sequence of str
        Points for the latency CDF (see :func:`choose_cdf_points`).
    top : int
        Rows in the best-configurations table.

    Returns
    -------
    ReportFiles
    """
    from moesim.trace.io import atomic_write_text

    path = Path(path)
    results = load_sweep_results(path)
    _check_metric(results, metric)
    out = Path(out_dir) if out_dir is not None else (path if path.is_dir() else path.parent) / "report"
    out.mkdir(parents=True, exist_ok=True)
    chosen = choose_cdf_points(results, points, metric=metric)
    plots = [
        p
        for p in (
            _plot_throughput(results, out),
            _plot_hit_rate(results, out),
            _plot_breakdown(results, out, metric),
            _plot_cdf(results, out, chosen),
        )
        if p
    ]
    text = _sweep_markdown(results, metric=metric, top=top, plots=plots, chosen=chosen)
    markdown = out / "report.md"
    atomic_write_text(markdown, text)
    return ReportFiles(markdown=markdown, plots=tuple(plots))


def _sweep_markdown(
    results: SweepResults, *, metric: str, top: int, plots: Sequence[Path], chosen: Sequence[dict[str, Any]]
) -> str:
    ok, failed = results.ok, results.failed
    varying = results.varying()
    lines = [f"# Sweep report: {results.name}", ""]
    planned = (
        f" of {results.num_planned} planned" if results.num_planned and results.num_planned != len(results.rows) else ""
    )
    lines.append(
        f"{len(results.rows)} points{planned}: {len(ok)} ok, {len(failed)} failed. "
        + (f"Scenario `{results.source}`. " if results.source else "")
        + ("Swept: " + ", ".join(f"`{p}`" for p in results.swept) + "." if results.swept else "")
    )
    lines.append("")
    direction = "highest" if metric_higher_is_better(metric) else "lowest"
    fixed = _fixed_settings(results)
    if fixed:
        lines += ["Every point shares: " + "; ".join(fixed) + ".", ""]
    if ok:
        lines += [
            f"## Best configurations ({metric}, {direction} first)",
            "",
            markdown_table(best_table(results, metric=metric, top=top)),
            "",
        ]
        command = reproduce_command(results, _rank(ok, metric)[0])
        if command:
            lines += ["Reproduce the best point:", "", "```", command, "```", ""]
    if varying and ok:
        lines += ["## By swept dimension", ""]
        for path in varying:
            lines += [f"### {path}", "", markdown_table(dimension_table(results, path, metric=metric)), ""]
    if plots:
        lines += ["## Plots", ""]
        captions = {
            "throughput_vs_cache.png": "Decode throughput against GPU expert-cache capacity.",
            "hit_rate_vs_rho.png": "Expert hit rate against rho (cache capacity / experts one token activates).",
            "time_breakdown.png": "Time per token by component; stalls are GPU time spent waiting for experts.",
            "latency_cdf.png": "Decode step latency CDF of " + ", ".join(f"`{r['point_id']}`" for r in chosen) + ".",
        }
        for plot in plots:
            lines += [f"![{plot.stem}]({plot.name})", "", captions.get(plot.name, ""), ""]
    if failed:
        lines += [f"## Failed points ({len(failed)})", ""]
        rows = [
            (
                str((r.get("point_index") or 0) + 1),
                ", ".join(f"{p}={_fmt(r.get(p))}" for p in varying) or "-",
                r.get("error_type") or "-",
                (r.get("error") or "")[:200],
            )
            for r in failed[:50]
        ]
        lines += [markdown_table(Table(("point", "values", "error type", "error"), tuple(rows))), ""]
        if len(failed) > 50:
            lines += [f"... and {len(failed) - 50} more (the `error` column of the results).", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------- moesim metrics --json
def is_metrics_json(path: str | os.PathLike) -> bool:
    """True when ``path`` is a JSON file written by ``moesim metrics --json``."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() != ".json":
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and {"trace", "settings", "hit_rates", "srp"} <= set(data)


def write_metrics_report(path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> ReportFiles:
    """Write ``report.md``, ``srp_vs_segment.png`` and ``sch_vs_segment.png`` for the output of
    ``moesim metrics --json`` saved at ``path`` (default ``out_dir``: ``<name>-report`` beside it).

    Notes
    -----
    SRP (segment routing best performance) and SCH (segment-cache hit rate) follow Liang et al.
    (2025), arXiv:2505.16056: both are shown for every segment length in the file, at layer level
    (mean over layers) and model level, with SRP's i.i.d.-routing baseline and, for SCH, LRU and
    Belady at the same cache size for reference.
    """
    from moesim.trace.io import atomic_write_text

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"'{path}': cannot be read as JSON ({exc}); give moesim metrics --json output") from None
    if not (isinstance(data, dict) and {"trace", "hit_rates", "srp"} <= set(data)):
        raise ConfigError(f"'{path}': not moesim metrics --json output (needs trace, hit_rates and srp)")
    out = Path(out_dir) if out_dir is not None else path.with_name(f"{path.stem}-report")
    out.mkdir(parents=True, exist_ok=True)
    srp_rows = [r for r in data["srp"] if r.get("layer") is None]
    sch_rows = [r for r in data["hit_rates"] if r.get("layer") is None and r.get("policy") == "sch"]
    plots = [p for p in (_plot_srp(srp_rows, out, data), _plot_sch(data, out)) if p]
    text = _metrics_markdown(data, srp_rows, sch_rows, plots)
    markdown = out / "report.md"
    atomic_write_text(markdown, text)
    return ReportFiles(markdown=markdown, plots=tuple(plots))


def _trace_title(data: Mapping[str, Any]) -> str:
    trace = data.get("trace", {})
    return (
        f"{Path(str(trace.get('path', 'trace'))).name}: {trace.get('model') or 'unknown model'}, "
        f"E={trace.get('num_experts')}, k={trace.get('top_k')}, {len(trace.get('layers') or [])} layers"
    )


def _levels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [level for level in ("layer", "model") if any(r.get("level") == level for r in rows)]


LEVEL_TITLES = {"layer": "layer level (mean over layers)", "model": "model level (one cache for all layers)"}


def _band(rows: Sequence[Mapping[str, Any]], key: str) -> list[float] | None:
    values = [r.get(key) for r in rows]
    return None if any(v is None for v in values) else [float(v) for v in values]


def _plot_srp(rows: Sequence[Mapping[str, Any]], out: Path, data: Mapping[str, Any]) -> Path | None:
    from moesim.report.plots import Panel, Series

    if not rows:
        return None
    panels = []
    for level in _levels(rows):
        level_rows = sorted((r for r in rows if r["level"] == level), key=lambda r: r["segment"])
        segments = [r["segment"] for r in level_rows]
        srp = [100 * _nan(r.get("srp")) for r in level_rows]
        low, high = _band(level_rows, "ci_low"), _band(level_rows, "ci_high")
        series = [
            Series(
                label="SRP",
                x=segments,
                y=srp,
                key="SRP",
                low=None if low is None else [100 * v for v in low],
                high=None if high is None else [100 * v for v in high],
            ),
            Series(
                label="i.i.d. routing baseline",
                x=segments,
                key="baseline",
                style="--",
                y=[100 * _nan(r.get("baseline")) for r in level_rows],
            ),
        ]
        panels.append(Panel(title=LEVEL_TITLES[level], series=tuple(series)))
    return _plot_against_segment(
        out / "srp_vs_segment.png",
        panels,
        rows,
        "SRP: best segment-router F1 (%)",
        f"SRP against segment length; {_trace_title(data)}",
    )


def _plot_against_segment(path: Path, panels, rows, ylabel: str, title: str) -> Path:
    from moesim.report.plots import plot_lines

    segments = sorted({r["segment"] for r in rows})
    return plot_lines(
        path,
        panels,
        xlabel="segment length m (tokens)",
        ylabel=ylabel,
        title=title,
        xscale="log",
        xticks=segments,
        ylim=(0, 100),
    )


def _rate_at(entry: Mapping[str, Any], rho: float) -> tuple[float, float | None, float | None]:
    for item in entry.get("rates", []):
        if math.isclose(float(item["rho"]), rho):
            return (_nan(item.get("rate")), item.get("ci_low"), item.get("ci_high"))
    return (float("nan"), None, None)


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _rhos(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    return sorted({float(item["rho"]) for r in rows for item in r.get("rates", [])})


def _plot_sch(data: Mapping[str, Any], out: Path) -> Path | None:
    from moesim.report.plots import Panel, Series

    pooled = [r for r in data["hit_rates"] if r.get("layer") is None]
    sch = [r for r in pooled if r.get("policy") == "sch"]
    if len({r.get("segment") for r in sch}) < 1 or not sch:
        return None
    panels = []
    for level in _levels(sch):
        level_sch = sorted((r for r in sch if r["level"] == level), key=lambda r: r["segment"])
        segments = [r["segment"] for r in level_sch]
        series = []
        for rho in _rhos(level_sch):
            key = f"rho={rho:g}"
            rates = [_rate_at(r, rho) for r in level_sch]
            low, high = [x[1] for x in rates], [x[2] for x in rates]
            has_ci = all(v is not None for v in low + high)
            series.append(
                Series(
                    label=f"SCH {key}",
                    key=key,
                    x=segments,
                    y=[100 * x[0] for x in rates],
                    low=[100 * v for v in low] if has_ci else None,
                    high=[100 * v for v in high] if has_ci else None,
                )
            )
            for policy, style in (("lru", "--"), ("belady", ":")):
                ref = next((r for r in pooled if r.get("policy") == policy and r["level"] == level), None)
                if ref is not None:
                    rate = 100 * _rate_at(ref, rho)[0]
                    series.append(
                        Series(
                            label=f"{policy.upper() if policy == 'lru' else 'Belady'} {key}",
                            key=key,
                            x=segments,
                            y=[rate] * len(segments),
                            style=style,
                            marker=False,
                        )
                    )
        panels.append(Panel(title=LEVEL_TITLES[level], series=tuple(series)))
    return _plot_against_segment(
        out / "sch_vs_segment.png", panels, sch, "hit rate (%)", f"SCH against segment length; {_trace_title(data)}"
    )


def _pct(value: Any, low: Any = None, high: Any = None) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    text = f"{100 * float(value):.1f}%"
    if low is not None and high is not None:
        text += f" [{100 * float(low):.1f}, {100 * float(high):.1f}]"
    return text


def _metrics_markdown(data: Mapping[str, Any], srp_rows, sch_rows, plots: Sequence[Path]) -> str:
    trace, settings = data.get("trace", {}), data.get("settings", {})
    lines = [f"# Routing metrics: {Path(str(trace.get('path', 'trace'))).name}", ""]
    lines.append(
        f"{trace.get('model') or 'unknown model'}: {trace.get('num_sequences')} sequences, "
        f"{trace.get('num_tokens')} tokens, E={trace.get('num_experts')}, k={trace.get('top_k')}, "
        f"{len(trace.get('layers') or [])} layers. Accounting {settings.get('accounting')}, cold fill "
        f"{settings.get('cold_fill')}, phase {settings.get('phase') or 'all'}"
        + (f", {settings.get('ci')} bootstrap intervals over sequences" if settings.get("ci") else "")
        + "."
    )
    lines.append("")
    if srp_rows:
        lines += [
            "## SRP against segment length",
            "",
            "SRP is the F1 score of the best router forced to treat m consecutive tokens alike (Liang et al. "
            "2025); the baseline is its value under independent uniform routing, lift = SRP - baseline.",
            "",
        ]
        rows = []
        for r in sorted(srp_rows, key=lambda r: (r["segment"], r["level"])):
            rows.append(
                (
                    str(r["segment"]),
                    r["level"],
                    _pct(r.get("srp"), r.get("ci_low"), r.get("ci_high")),
                    _pct(r.get("baseline")),
                    _pct(r.get("lift")),
                )
            )
        lines += [markdown_table(Table(("segment m", "level", "SRP", "baseline", "lift"), tuple(rows))), ""]
    if sch_rows:
        pooled = [r for r in data["hit_rates"] if r.get("layer") is None]
        lines += [
            "## SCH against segment length",
            "",
            "Hit rate of the segment cache (SCH) at each cache size rho, beside LRU and Belady at the same size.",
            "",
        ]
        rows = []
        for level in _levels(sch_rows):
            refs = {
                p: next((r for r in pooled if r.get("policy") == p and r["level"] == level), None)
                for p in ("lru", "belady")
            }
            for rho in _rhos(sch_rows):
                for r in sorted((r for r in sch_rows if r["level"] == level), key=lambda r: r["segment"]):
                    rate, low, high = _rate_at(r, rho)
                    rows.append(
                        (
                            level,
                            f"{rho:g}",
                            str(r["segment"]),
                            _pct(rate, low, high),
                            *(_pct(_rate_at(ref, rho)[0]) if ref else "-" for ref in refs.values()),
                        )
                    )
        lines += [markdown_table(Table(("level", "rho", "segment m", "SCH", "LRU", "Belady"), tuple(rows))), ""]
    if plots:
        lines += ["## Plots", ""]
        for plot in plots:
            lines += [f"![{plot.stem}]({plot.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _dataset_kind(path: Path) -> str:
    """What a Parquet file says it is: "moesim.sweep" for sweep results, the ``kind`` other
    moesim datasets record under the ``moesim.dataset`` schema key, or "" (not a Parquet file)."""
    import pyarrow.parquet as pq

    from moesim.sweep.dataset import METADATA_KEY

    if not path.is_file() or path.suffix.lower() not in (".parquet", ".pq"):
        return ""
    try:
        metadata = pq.read_schema(path).metadata or {}
        if METADATA_KEY in metadata:
            return "moesim.sweep"
        kind = json.loads(metadata[b"moesim.dataset"]).get("kind", "") if b"moesim.dataset" in metadata else ""
    except (OSError, ValueError, AttributeError, pa.ArrowException):
        return ""
    return kind if isinstance(kind, str) else ""


def write_report(
    path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    metric: str = DEFAULT_METRIC,
    points: Sequence[str] = (),
    top: int = 10,
) -> ReportFiles:
    """A sweep report for a results directory or file (:func:`write_sweep_report`), a metrics
    report for ``moesim metrics --json`` output (:func:`write_metrics_report`)."""
    from moesim.sweep.dataset import is_dataset

    path = Path(path)
    if is_metrics_json(path):
        if metric != DEFAULT_METRIC or points:
            raise ConfigError(
                f"--{'metric' if metric != DEFAULT_METRIC else 'points'}: applies to sweep results, not to metrics JSON"
            )
        return write_metrics_report(path, out_dir)
    if is_dataset(path) or _dataset_kind(path) == "moesim.sweep":
        return write_sweep_report(path, out_dir, metric=metric, points=points, top=top)
    if not path.exists():
        raise ConfigError(f"'{path}': no such file or directory")
    kind = _dataset_kind(path / "results.parquet" if path.is_dir() else path)
    if kind.startswith("moesim.scaling."):
        raise ConfigError(
            f"'{path}' holds the results of a scaling analysis ({kind}); its report comes from "
            f"moesim scaling report {path if path.is_dir() else path.parent}"
        )
    raise ConfigError(
        f"'{path}': not sweep results (a moesim sweep --out directory or its results.parquet) "
        f"nor moesim metrics --json output"
    )
