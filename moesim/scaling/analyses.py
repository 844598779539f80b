"""One entry point for the three analyses: run a scaling scenario file, read a results directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moesim.scaling.config import AnalysisFile, load_analysis


def _runners() -> dict[str, Callable[..., Any]]:
    from moesim.scaling.architectures import run_architectures
    from moesim.scaling.granularity import run_granularity
    from moesim.scaling.serving import run_serving

    return {"granularity": run_granularity, "serving": run_serving, "architectures": run_architectures}


def run_analysis(
    source: str | os.PathLike | AnalysisFile,
    overrides: Iterable[tuple[str, Any]] = (),
    *,
    expected: str | None = None,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
):
    """Run the analysis a scaling scenario file (or a loaded :class:`AnalysisFile`) describes.

    Returns the analysis's result (``GranularityResult``, ``ServingResult`` or
    ``ArchitecturesResult``); each has ``table`` (one row per point), ``document()`` and
    ``write(out_dir)``.
    """
    analysis = source if isinstance(source, AnalysisFile) else load_analysis(Path(source), overrides, expected=expected)
    return _runners()[analysis.analysis](
        analysis, workers=workers, executor=executor, address=address, progress=progress
    )


def read_results(path: str | os.PathLike):
    """``(analysis, rows table, document)`` of a scaling results directory (schema version checked)."""
    from moesim.scaling.dataset import read_dataset
    from moesim.scaling.report import VERSIONS

    return read_dataset(path, VERSIONS)
