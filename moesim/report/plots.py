"""Shared plotting helpers for reports: line panels, stacked bars, CDFs, written atomically.

matplotlib is imported inside functions (``import moesim`` and the CLI start-up never load it)
and figures are made with :class:`matplotlib.figure.Figure` directly, not pyplot, so no global
backend state is touched: safe in threads, workers and headless runs. Every plot has labelled
axes with units and a legend whenever more than one series is drawn.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import MissingExtraError

#: Series colours (matplotlib's tab10), reused in order so a series keeps its colour across panels.
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
DPI = 110


@dataclass(frozen=True)
class Series:
    """One line: ``x`` and ``y`` of equal length (NaN leaves a gap); optional shaded band
    ``low``/``high``; ``style`` "-" (solid), "--", ":" or "-."; ``key`` picks the colour (series with
    the same key get the same colour in every panel) and ``marker_key`` the marker (default: by
    colour)."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    key: str | None = None
    style: str = "-"
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    marker: bool = True
    marker_key: str | None = None


@dataclass(frozen=True)
class Panel:
    """One set of axes: a title and its series."""

    title: str
    series: Sequence[Series] = field(default_factory=tuple)


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("plot", "matplotlib", "drawing report plots") from None
    return Figure


def new_figure(
    num_panels: int, *, panel_size: tuple[float, float] = (5.6, 4.0), max_columns: int = 3, sharey: bool = False
):
    """A figure with ``num_panels`` axes in a grid of at most ``max_columns`` columns (one y scale
    for all with ``sharey``, so panels compare at a glance); returns ``(figure, axes)`` with the
    unused axes removed."""
    Figure = _figure_class()
    num_panels = max(num_panels, 1)
    columns = min(num_panels, max_columns)
    rows = math.ceil(num_panels / columns)
    if num_panels == 1:  # room for a legend of policy combinations in two columns
        panel_size = (max(panel_size[0], 7.5), panel_size[1])
    figure = Figure(figsize=(panel_size[0] * columns, panel_size[1] * rows + 0.8), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False, sharey=sharey).ravel())
    for ax in axes[num_panels:]:
        ax.remove()
    return figure, axes[:num_panels]


def save_figure(figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` to ``path`` (format from the suffix) atomically; returns the path."""
    from moesim.trace.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lower().lstrip(".") or "png", dpi=DPI)
    return path


def color_map(keys: Sequence[str]) -> dict[str, str]:
    """A colour per distinct key, in first-seen order."""
    out: dict[str, str] = {}
    for key in keys:
        if key not in out:
            out[key] = COLORS[len(out) % len(COLORS)]
    return out


def plot_lines(
    path: str | os.PathLike,
    panels: Sequence[Panel],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    xscale: str = "linear",
    ylim: tuple[float | None, float | None] | None = None,
    xticks: Sequence[float] | None = None,
) -> Path:
    """Line plots, one panel per :class:`Panel`, sharing axis labels; writes ``path``.

    Parameters
    ----------
    path : path-like
        Output image (.png, .pdf, .svg).
    panels : sequence of Panel
        Drawn left to right, top to bottom.
    xlabel, ylabel : str
        Axis labels, with units.
    title : str
        Figure title.
    xscale : str
        "linear" or "log" (base 2 ticks are labelled with their plain values).
    ylim : (low, high), optional
        y range; None leaves an end automatic.
    xticks : sequence of float, optional
        Tick positions (e.g. the swept values).

    Returns
    -------
    pathlib.Path
    """
    figure, axes = new_figure(len(panels), sharey=True)
    colors = color_map([s.key or s.label for panel in panels for s in panel.series])
    marker_keys = list(dict.fromkeys(s.marker_key or s.key or s.label for panel in panels for s in panel.series))
    markers = {key: MARKERS[i % len(MARKERS)] for i, key in enumerate(marker_keys)}
    for ax, panel in zip(axes, panels):
        for series in panel.series:
            key = series.key or series.label
            x = np.asarray(series.x, dtype=np.float64)
            y = np.asarray(series.y, dtype=np.float64)
            ax.plot(
                x,
                y,
                series.style,
                color=colors[key],
                label=series.label,
                lw=1.7,
                ms=4.5,
                marker=markers[series.marker_key or key] if series.marker else None,
            )
            if series.low is not None and series.high is not None:
                ax.fill_between(
                    x,
                    np.asarray(series.low, dtype=np.float64),
                    np.asarray(series.high, dtype=np.float64),
                    color=colors[key],
                    alpha=0.15,
                    lw=0,
                )
        if xscale == "log":
            ax.set_xscale("log", base=2)
            from matplotlib.ticker import ScalarFormatter

            ax.xaxis.set_major_formatter(ScalarFormatter())
        if xticks is not None:
            ax.set_xticks(list(xticks))
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(panel.title, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    _legend_below(figure, axes)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def _legend_below(figure, axes) -> None:
    """One legend for the whole figure outside the axes (never over the data): below the panels,
    in as many columns as the figure is wide enough for; series drawn in several panels appear
    once."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if len(handles) > 1:
        width_chars = figure.get_figwidth() * 72 / 5.0  # small font: about 5 points per character
        longest = max(len(label) for label in handles) + 6  # the line sample and padding
        columns = max(1, min(len(handles), 4, int(width_chars // longest)))
        figure.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=columns,
            fontsize="small",
            frameon=False,
        )


def plot_stacked_bars(
    path: str | os.PathLike,
    labels: Sequence[str],
    components: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    title: str = "",
) -> Path:
    """Horizontal stacked bars, one per label (top to bottom in the given order), one segment
    per component (legend order); writes ``path``."""
    Figure = _figure_class()
    height = max(2.8, 0.32 * len(labels) + 1.9)
    width = min(14.0, 7.0 + 0.05 * max((len(label) for label in labels), default=0))
    figure = Figure(figsize=(width, height), layout="constrained")
    ax = figure.subplots()
    y = np.arange(len(labels))
    left = np.zeros(len(labels))
    colors = color_map(list(components))
    for name, values in components.items():
        values = np.nan_to_num(np.asarray(values, dtype=np.float64))
        ax.barh(y, values, left=left, color=colors[name], label=name, height=0.72)
        left += values
    ax.set_yticks(y, labels, fontsize="small")
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first label on top, no empty margins
    if len(left) and left.max() > 0:
        ax.set_xlim(0, 1.03 * left.max())
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    _legend_below(figure, [ax])
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_cdfs(
    path: str | os.PathLike,
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    title: str = "",
) -> Path:
    """Cumulative distributions from quantiles: ``(label, values, probabilities)`` per curve, the
    quantile function drawn with axes swapped; log x when values span more than 20x."""
    Figure = _figure_class()
    figure = Figure(figsize=(7.5, 4.6 + 0.25 * len(curves)), layout="constrained")
    ax = figure.subplots()
    colors = color_map([label for label, _, _ in curves])
    low, high = math.inf, 0.0
    for label, values, probs in curves:
        values = np.asarray(values, dtype=np.float64)
        ax.step(
            values, 100 * np.asarray(probs, dtype=np.float64), where="post", color=colors[label], lw=1.7, label=label
        )
        positive = values[values > 0]
        if len(positive):
            low, high = min(low, float(positive.min())), max(high, float(positive.max()))
    if high > 0 and low < math.inf and high / low > 20:
        from matplotlib.ticker import LogLocator, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 10, 20, 50, 100 rather than 10^1, 10^2
    ax.set_ylim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("steps at or below (%)")
    ax.grid(alpha=0.3)
    _legend_below(figure, [ax])
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def short_label(values: Mapping[str, Any]) -> str:
    """``{"cache.capacity": 96, "cache.eviction": "lru"}`` -> ``capacity=96 eviction=lru``: the
    last part of each path, for legends and bar labels."""
    return " ".join(f"{path.rsplit('.', 1)[-1]}={_short(v)}" for path, v in values.items())


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 28 else text[:25] + "..."
