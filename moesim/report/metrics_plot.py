"""Plot of cache hit rate against cache size (rho) per policy, one panel per level."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from moesim.errors import ConfigError, MissingExtraError

_PANEL_TITLES = {"layer": "layer level (mean over layers)", "model": "model level (one cache, all layers)"}
_IMAGE_SUFFIXES = (".png", ".pdf", ".svg")


def check_plot_path(path: str | os.PathLike) -> Path:
    """The output path as a Path; :class:`ConfigError` unless its suffix names an image format."""
    path = Path(path)
    if path.suffix.lower() not in _IMAGE_SUFFIXES:
        raise ConfigError(f"--plot: '{path}' has suffix {path.suffix!r}; use one of {', '.join(_IMAGE_SUFFIXES)}")
    return path


def plot_hit_curves(
    series: Mapping[str, Sequence[tuple[str, np.ndarray, np.ndarray]]],
    path: str | os.PathLike,
    *,
    title: str = "",
    rhos: Sequence[float] = (),
) -> Path:
    """Draw hit rate against rho, one line per policy and one panel per level; write ``path`` atomically.

    Parameters
    ----------
    series : mapping
        ``{level: [(label, rho, rate), ...]}`` with ``rho`` and ``rate`` float arrays of one length;
        NaN rates (sizes where a policy is not defined) are left as gaps.
    path : path-like
        Output image; the format comes from the suffix (.png, .pdf or .svg).
    title : str
        Figure title (e.g. the trace and its shape).
    rhos : sequence of float
        Cache sizes to mark with vertical guide lines (the ones tabulated).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = check_plot_path(path)
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("plot", "matplotlib", "plotting hit curves") from None
    from moesim.trace.io import atomic_path

    levels = [level for level, lines in series.items() if lines] or list(series)[:1]
    # Figure without pyplot: no global backend state, safe in threads and headless runs.
    figure = Figure(figsize=(max(6.0 * len(levels), 7.5), 4.8), layout="constrained")
    axes = figure.subplots(1, max(len(levels), 1), squeeze=False)[0]
    for ax, level in zip(axes, levels):
        for label, rho, rate in series.get(level, []):
            ax.plot(np.asarray(rho, dtype=np.float64), 100.0 * np.asarray(rate, dtype=np.float64), label=label, lw=1.6)
        for rho in rhos:
            ax.axvline(rho, color="0.8", lw=0.8, ls=":", zorder=0)
        ax.set_title(_PANEL_TITLES.get(level, level))
        ax.set_xlabel("cache size rho (multiples of the active experts)")
        ax.set_ylabel("hit rate (%)")
        ax.set_ylim(0, 100)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if series.get(level):
            ax.legend(loc="lower right", fontsize="small")
    if title:
        figure.suptitle(title, fontsize="small")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=120)
    return path
