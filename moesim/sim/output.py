"""Writing a run's results: a directory of Parquet tables and JSON, replaced atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from moesim.jsonable import dumps
from moesim.sim.result import Result


def write_result_dir(result: Result, out_dir: str | os.PathLike) -> Path:
    """Write ``steps.parquet``, ``layers.parquet``, ``summary.json`` and ``scenario.json`` into
    ``out_dir``. The files are written to a temporary directory beside it which then replaces
    ``out_dir`` in one rename, so readers see the old results or the new ones, never a mix."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        pq.write_table(result.steps, tmp / "steps.parquet", compression="zstd")
        pq.write_table(result.layers, tmp / "layers.parquet", compression="zstd")
        (tmp / "summary.json").write_text(dumps(result.summary, sort_keys=True) + "\n")
        (tmp / "scenario.json").write_text(dumps(result.scenario, sort_keys=True) + "\n")
        for name in os.listdir(tmp):
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rmdir(old)
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
