"""Results datasets of the scaling analyses: one Parquet row per simulated point, plus a JSON document.

An analysis writes a directory::

    results.parquet    one row per point; columns and types fixed per analysis (its SCHEMA)
    analysis.json      what the rows do not hold: settings, trace family and extrapolation rule,
                       fitted laws, optima, notes
    report.md, *.png   the human-readable report (moesim.scaling.report)

The Parquet schema metadata key ``moesim.dataset`` holds ``{"kind": "moesim.scaling.<analysis>",
"schema_version": N}`` so readers (``moesim scaling report``, ``moesim report``) know what they
read; a version they do not know is refused. Files are written atomically one by one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from moesim.errors import ConfigError, one_line
from moesim.jsonable import dumps, to_jsonable
from moesim.trace.io import atomic_path, atomic_write_text

METADATA_KEY = b"moesim.dataset"
KIND_PREFIX = "moesim.scaling."
RESULTS_FILE = "results.parquet"
DOCUMENT_FILE = "analysis.json"

# Columns every analysis's rows share (simulated numbers; None when the point is infeasible).
SIMULATED = {
    "status": pa.string(),
    "reason": pa.string(),
    "engine": pa.string(),
    "trace": pa.string(),
    "decode_tokens_per_s": pa.float64(),
    "tokens_per_s": pa.float64(),
    "hit_rate": pa.float64(),
    "misses_per_token": pa.float64(),
    "h2d_bytes_per_token": pa.float64(),
    "decode_tokens": pa.int64(),
    "num_steps": pa.int64(),
    "demands": pa.int64(),
    "hits": pa.int64(),
    "misses": pa.int64(),
    "h2d_bytes": pa.int64(),
    "total_time_s": pa.float64(),
    "decode_time_s": pa.float64(),
    "miss_penalty_stall_per_miss_s": pa.float64(),
    "miss_penalty_mean_demand_fetch_s": pa.float64(),
    "time_breakdown_s_dense": pa.float64(),
    "time_breakdown_s_expert_gpu": pa.float64(),
    "time_breakdown_s_overhead": pa.float64(),
    "time_breakdown_s_stall_fetch": pa.float64(),
    "time_breakdown_s_stall_cpu": pa.float64(),
    "utilisation_gpu": pa.float64(),
    "utilisation_h2d": pa.float64(),
    "decode_step_latency_s_mean": pa.float64(),
    "decode_step_latency_s_p99": pa.float64(),
    "mem_gpu_bytes": pa.int64(),
    "mem_non_expert_bytes": pa.int64(),
    "mem_kv_cache_bytes": pa.int64(),
    "mem_staging_bytes": pa.int64(),
    "mem_reserve_bytes": pa.int64(),
    "mem_expert_bytes": pa.int64(),
    "mem_cache_slots": pa.int64(),
    "mem_capacity_experts": pa.int64(),
    "mem_total_experts": pa.int64(),
    "mem_host_slots": pa.int64(),
}


def schema(labels: Mapping[str, pa.DataType], *, extra: Mapping[str, pa.DataType] | None = None) -> pa.Schema:
    """An analysis's row schema: its label columns, then :data:`SIMULATED`, then ``extra`` (derived)."""
    fields = [pa.field(name, dtype) for name, dtype in labels.items()]
    fields += [pa.field(name, dtype) for name, dtype in SIMULATED.items() if name not in labels]
    fields += [pa.field(name, dtype) for name, dtype in (extra or {}).items()]
    return pa.schema(fields)


def to_json(document: Any) -> str:
    """Stable JSON (sorted keys, NaN/inf as null) of an analysis document."""
    return dumps(document, sort_keys=True) + "\n"


def rows_table(rows: Sequence[Mapping[str, Any]], row_schema: pa.Schema, kind: str, version: int) -> pa.Table:
    """Rows as an Arrow table of exactly ``row_schema`` (missing columns null, unknown ones an error)."""
    names = set(row_schema.names)
    for row in rows:
        unknown = sorted(set(row) - names)
        if unknown:
            raise ConfigError(f"results: column {unknown[0]!r} is not in the {kind} schema; add it there")
    columns = {name: [to_jsonable(row.get(name)) for row in rows] for name in row_schema.names}
    table = pa.table(
        {name: pa.array(values, type=row_schema.field(name).type) for name, values in columns.items()},
        schema=row_schema,
    )
    meta = {METADATA_KEY: json.dumps({"kind": KIND_PREFIX + kind, "schema_version": version}).encode()}
    return table.replace_schema_metadata(meta)


def write_dataset(out_dir: str | os.PathLike, table: pa.Table, document: Mapping[str, Any]) -> Path:
    """Write ``results.parquet`` and ``analysis.json`` into ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / RESULTS_FILE) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    atomic_write_text(out / DOCUMENT_FILE, to_json(document))
    return out


def is_scaling_dataset(path: str | os.PathLike) -> bool:
    """True when ``path`` (a directory, or its ``results.parquet``) holds a scaling results dataset."""
    target = Path(path)
    results = target / RESULTS_FILE if target.is_dir() else target
    if results.name != RESULTS_FILE or not results.is_file():
        return False
    try:
        metadata = pq.read_schema(results).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return False
    return METADATA_KEY in metadata


def read_dataset(path: str | os.PathLike, versions: Mapping[str, int]) -> tuple[str, pa.Table, dict[str, Any]]:
    """``(analysis, rows, document)`` of a results directory (or its ``results.parquet``).

    ``versions`` maps each analysis name to the schema version this reader understands.
    """
    target = Path(path)
    directory = target if target.is_dir() else target.parent
    results = directory / RESULTS_FILE
    if not results.exists():
        raise ConfigError(
            f"results '{path}': no {RESULTS_FILE} there; give the --out directory of a moesim scaling analysis"
        )
    try:
        table = pq.read_table(results)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(f"results '{results}': cannot be read ({one_line(exc)})") from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    try:
        header = json.loads(raw) if raw else {}
    except ValueError:
        header = {}
    kind = str(header.get("kind", ""))
    analysis = kind[len(KIND_PREFIX) :] if kind.startswith(KIND_PREFIX) else ""
    if analysis not in versions:
        raise ConfigError(
            f"results '{results}': not a moesim scaling dataset (kind {kind or 'missing'!r}); "
            f"expected one of {', '.join(KIND_PREFIX + name for name in versions)}"
        )
    if header.get("schema_version") != versions[analysis]:
        raise ConfigError(
            f"results '{results}': {kind} schema version {header.get('schema_version')!r}, this "
            f"moesim reads version {versions[analysis]}; rerun the analysis or upgrade moesim"
        )
    import importlib

    expected = importlib.import_module(f"moesim.scaling.{analysis}").SCHEMA
    missing = [name for name in expected.names if name not in table.column_names]
    if missing:
        raise ConfigError(
            f"results '{results}': {kind} lacks column(s) {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}; the file is damaged or from another tool: rerun the analysis"
        )
    document: dict[str, Any] = {}
    doc_path = directory / DOCUMENT_FILE
    if doc_path.exists():
        try:
            document = json.loads(doc_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"results '{doc_path}': invalid JSON ({exc}); rerun the analysis") from None
    return analysis, table, document
