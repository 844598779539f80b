"""The results dataset of a sweep: one row per point, safe to read at any moment.

A dataset is a directory::

    DIR/manifest.json          what the dataset is (base scenario, axes) and which files hold rows
    DIR/results.parquet        compacted rows (after a sweep finishes: all of them)
    DIR/parts/part-000007.parquet   rows of points that finished since the last compaction

Every file is written to a temporary name, fsynced and renamed into place, and the manifest
(rewritten the same way) is the only list of files a reader trusts, so a sweep killed at any
instant leaves a dataset that reads as every point flushed before the kill. Compaction writes
``results.parquet`` holding all rows, then a manifest naming only it, then deletes the parts; a
kill between those steps leaves the same rows listed twice, which readers drop (a point's row
from the file listed last wins, which is also how a retried point replaces its failed row).

Columns: ``point_id``, ``point_index`` (position in the sweep that ran it), one column per swept
dotted path (``cache.capacity``; typed int64/float64/bool/string; mixed values as strings, tables
as JSON), ``status`` ("ok" or "failed"), ``error_type``, ``error``, ``wall_s`` (host seconds the
point took), ``engine_used``, resolved configuration ``cfg.*`` (model, hardware, policies,
``cfg.capacity_experts``, ``cfg.rho``, ...), the run summary flattened with dots
(``decode_tokens_per_s``, ``time_breakdown_s.stall_fetch``, ...), ``decode_latency_quantiles_s``
(decode step latency at :data:`LATENCY_QUANTILES`), ``values_json`` (the point's swept values
exactly as given), ``scenario_json`` (the resolved scenario with its memory plan) and
``error_traceback`` for failures that are bugs rather than user errors.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moesim.errors import SweepError
from moesim.jsonable import to_jsonable
from moesim.sweep.spec import canonical_json

FORMAT = "moesim-sweep-results"
VERSION = 1
MANIFEST = "manifest.json"
RESULTS = "results.parquet"
PARTS = "parts"
LOCK = ".lock"
METADATA_KEY = b"moesim.sweep"
#: Compact the parts into results.parquet once there are this many (bounds files and manifest size).
MAX_PARTS = 256

#: Probabilities at which each point records its decode step latency: every percentile plus the
#: 99.5th and 99.9th, enough to draw a CDF and read tail latency without keeping every step.
LATENCY_QUANTILES: tuple[float, ...] = tuple(round(p, 4) for p in [*np.arange(100) / 100, 0.995, 0.999, 1.0])

FIXED_TYPES: dict[str, pa.DataType] = {
    "point_id": pa.string(),
    "point_index": pa.int64(),
    "status": pa.string(),
    "error_type": pa.string(),
    "error": pa.string(),
    "wall_s": pa.float64(),
    "engine_used": pa.string(),
}
CFG_TYPES: dict[str, pa.DataType] = {
    "cfg.model": pa.string(),
    "cfg.expert_format": pa.string(),
    "cfg.expert_bytes": pa.int64(),
    "cfg.hardware": pa.string(),
    "cfg.gpu": pa.string(),
    "cfg.h2d_link": pa.string(),
    "cfg.h2d_bps": pa.float64(),
    "cfg.trace": pa.string(),
    "cfg.max_sequences": pa.int64(),
    "cfg.seed": pa.int64(),
    "cfg.batch_size": pa.int64(),
    "cfg.eviction": pa.string(),
    "cfg.cache_layout": pa.string(),
    "cfg.capacity_experts": pa.int64(),
    "cfg.active_experts": pa.int64(),
    "cfg.rho": pa.float64(),
    "cfg.cache_bytes": pa.int64(),
    "cfg.prefetch": pa.string(),
    "cfg.miss": pa.string(),
}
TAIL_TYPES: dict[str, pa.DataType] = {
    "values_json": pa.string(),
    "decode_latency_quantiles_s": pa.list_(pa.float64()),
    "scenario_json": pa.string(),
    "error_traceback": pa.string(),
}


# ---------------------------------------------------------------------- rows <-> Arrow
def value_type(values: Iterable[Any]) -> str:
    """The column type of a swept path's values: int64, float64, bool or string (anything mixed
    or structured is written as text)."""
    values = list(values)
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "float64"
    return "string"


def render_value(value: Any) -> str:
    """A swept value in a string column: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else canonical_json(value)


_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string()}


def _swept_array(values: list[Any], kind: str) -> pa.Array:
    if kind == "string":
        values = [render_value(v) for v in values]
    return pa.array(values, type=_ARROW_TYPES[kind])


def _infer(values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    return _ARROW_TYPES[value_type(present)] if present else pa.null()


def rows_to_table(rows: Sequence[Mapping[str, Any]], swept: Mapping[str, str]) -> pa.Table:
    """Rows (dicts from :func:`moesim.sweep.worker.run_point` plus ``values``) as an Arrow table.

    ``swept`` maps each swept path to its column type (:func:`value_type`). Known columns have
    fixed types; summary metrics are typed by their values (NaN is written as null).
    """
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names and k != "values")
    metric_names = [n for n in names if n not in FIXED_TYPES and n not in CFG_TYPES and n not in TAIL_TYPES]
    columns: dict[str, pa.Array] = {}
    for name in ("point_id", "point_index"):
        columns[name] = pa.array([row.get(name) for row in rows], type=FIXED_TYPES[name])
    for path, kind in swept.items():
        columns[path] = _swept_array([row["values"][path] for row in rows], kind)
    # the swept values exactly as given (a string column cannot tell "64" from 64)
    values_json = [canonical_json(row["values"]) for row in rows]
    for name, kind in [*FIXED_TYPES.items(), *CFG_TYPES.items()]:
        if name not in columns:
            columns[name] = pa.array([row.get(name) for row in rows], type=kind)
    for name in metric_names:
        values = [_nan_to_none(row.get(name)) for row in rows]
        kind = _infer(values)
        if kind == pa.string():  # text, or values of mixed kinds: all as text
            values = [None if v is None else render_value(v) for v in values]
        columns[name] = pa.array(values, type=kind)
    for name, kind in TAIL_TYPES.items():
        values = values_json if name == "values_json" else [row.get(name) for row in rows]
        columns[name] = pa.array(values, type=kind)
    return pa.table(columns)


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value


def _unify(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate tables whose columns may differ: missing columns become nulls; a column typed
    differently in different files (a grid extended with other kinds of values) is widened to
    float64 (numbers) or string."""
    tables = [t for t in tables if t.num_columns]
    if not tables:
        return pa.table({})
    types: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for fld in table.schema:
            kinds = types.setdefault(fld.name, set())
            if not pa.types.is_null(fld.type):
                kinds.add(fld.type)
    target: dict[str, pa.DataType] = {}
    for name, kinds in types.items():
        if len(kinds) <= 1:
            continue
        numeric = all(pa.types.is_integer(k) or pa.types.is_floating(k) for k in kinds)
        target[name] = pa.float64() if numeric else pa.string()
    if target:
        tables = [_cast_columns(t, target) for t in tables]
    return pa.concat_tables(tables, promote_options="default")


def _cast_columns(table: pa.Table, target: Mapping[str, pa.DataType]) -> pa.Table:
    for name, kind in target.items():
        if name in table.column_names and table.schema.field(name).type != kind:
            column = table.column(name)
            if pa.types.is_string(kind) and not pa.types.is_string(column.type) and not pa.types.is_null(column.type):
                column = pa.array([None if v is None else render_value(v) for v in column.to_pylist()], type=kind)
            else:
                column = column.cast(kind)
            table = table.set_column(table.column_names.index(name), name, column)
    return table


def _dedupe(table: pa.Table) -> pa.Table:
    """Keep the last row of each point id (files are concatenated oldest first)."""
    if table.num_rows == 0 or "point_id" not in table.column_names:
        return table
    ids = np.asarray(table.column("point_id").to_pylist(), dtype=object)
    _, first_from_end = np.unique(ids[::-1], return_index=True)
    keep = np.sort(len(ids) - 1 - first_from_end)
    return table if len(keep) == len(ids) else table.take(pa.array(keep))


# ---------------------------------------------------------------------- reading
def is_dataset(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding a sweep results manifest."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the dataset in ``directory``; :class:`SweepError` when there is none."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(
            f"'{directory}': not a sweep results directory (no {MANIFEST}); give the --out directory of a moesim sweep"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SweepError(f"'{path}': cannot be read ({exc}); the results directory is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SweepError(f"'{path}': not a moesim sweep manifest")
    if manifest.get("version") != VERSION:
        raise SweepError(
            f"'{path}': results format version {manifest.get('version')} is not supported (this "
            f"moesim reads version {VERSION}); use the moesim that wrote it"
        )
    return manifest


def read_results(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """All rows of a sweep results dataset: a results directory, or a ``results.parquet`` file.

    Safe while a sweep is writing the directory: it reads the files the manifest lists at that
    moment. Each point appears once (its latest row). ``columns`` reads only those (point_id is
    always read).

    Raises
    ------
    SweepError
        If ``path`` is not a results dataset or a listed file cannot be read.
    """
    path = Path(path)
    if columns is not None:
        columns = ["point_id", *(c for c in columns if c != "point_id")]
    if path.is_file():
        return _dedupe(_read_parquet(path, columns))
    # the manifest can be replaced (and listed parts compacted away) between reading it and
    # reading the files: read again from the new manifest when a listed file has gone
    for _ in range(5):
        manifest = read_manifest(path)
        try:
            tables = [_read_parquet(path / name, columns) for name in manifest["files"]]
        except FileNotFoundError:
            continue
        return _dedupe(_unify(tables))
    raise SweepError(f"'{path}': the results kept changing while being read; try again")


def _read_parquet(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    try:
        if columns is not None:
            present = set(pq.read_schema(path).names)
            columns = [c for c in columns if c in present]
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        if not path.exists():
            raise FileNotFoundError(path) from None
        detail = " ".join(str(exc).split())[:200]
        raise SweepError(f"'{path}': cannot be read as Parquet ({detail}); the file is damaged") from None


def sweep_metadata(table: pa.Table) -> dict[str, Any]:
    """What a results file says about itself (swept paths, latency quantiles), or {}."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


# ---------------------------------------------------------------------- writing
class ResultsWriter:
    """Appends rows to a results dataset and compacts it; one writer per directory at a time.

    Use :meth:`create` (new directory, or ``overwrite``) or :meth:`resume` (an existing dataset
    of the same base scenario), then :meth:`append` batches of rows, :meth:`compact` and
    :meth:`close` (or use it as a context manager: ``close`` releases the lock).
    """

    def __init__(self, directory: Path, manifest: dict[str, Any], lock_handle: Any):
        self.directory = directory
        self.manifest = manifest
        self._lock = lock_handle
        # [[path, column type], ...]: a list, not a JSON object, so the axes keep their order
        self._swept: dict[str, str] = dict(manifest.get("swept", []))

    # ---- opening
    @classmethod
    def create(cls, directory: str | os.PathLike, plan, *, overwrite: bool = False) -> ResultsWriter:
        """Start a new dataset for ``plan`` in ``directory``.

        Raises :class:`SweepError` if ``directory`` already holds results (unless ``overwrite``)
        or any other files.
        """
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SweepError(
                f"--out '{directory}': cannot create the results directory ({exc.strerror or exc}); "
                f"choose a writable directory path"
            ) from None
        lock = _lock(directory)
        try:
            count = len(read_results(directory, columns=[])) if is_dataset(directory) else 0
            if count and not overwrite:
                raise SweepError(
                    f"'{directory}' already holds sweep results ({count} point{'s' if count != 1 else ''}); pass --resume to continue "
                    f"that sweep, --overwrite to replace it, or choose another --out"
                )
            # what a dataset (or an overwrite killed half-way) leaves; anything else is not ours to delete
            ours = {MANIFEST, RESULTS, PARTS, LOCK}
            others = sorted(p.name for p in directory.iterdir() if p.name not in ours and not p.name.startswith("."))
            if others:
                raise SweepError(
                    f"'{directory}' holds other files ({others[0]}, ...); choose an empty or new --out directory"
                )
            if overwrite or is_dataset(directory):  # an empty dataset (nothing ran) is replaced as well
                (directory / MANIFEST).unlink(missing_ok=True)
                shutil.rmtree(directory / PARTS, ignore_errors=True)
                (directory / RESULTS).unlink(missing_ok=True)
            elif any(p.name != LOCK for p in directory.iterdir()):
                raise SweepError(
                    f"'{directory}' holds the remains of an overwritten sweep; pass --overwrite "
                    f"to clear it or choose another --out"
                )
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "name": plan.name,
                "scenario": str(plan.source) if plan.source else None,
                "fingerprint": plan.fingerprint,
                "base": plan.base,
                "files": [],
                "next_part": 1,
                "runs": [],
            }
            writer = cls(directory, manifest, lock)
            writer._set_plan(plan)
            writer._write_manifest()
            return writer
        except BaseException:
            _unlock(lock)
            raise

    @classmethod
    def resume(cls, directory: str | os.PathLike, plan) -> ResultsWriter:
        """Reopen the dataset in ``directory`` to add the points of ``plan`` it lacks.

        Raises :class:`SweepError` if it is not a dataset, another sweep is writing it, or it was
        produced from a different base scenario (the message names the first difference).
        """
        directory = Path(directory)
        if not is_dataset(directory):
            if directory.is_dir() and not any(p.name != LOCK for p in directory.iterdir()):
                return cls.create(directory, plan)
            raise SweepError(f"--resume: '{directory}' holds no sweep results to resume; drop --resume to start one")
        lock = _lock(directory)
        try:
            manifest = read_manifest(directory)
            if manifest["fingerprint"] != plan.fingerprint:
                where = _first_difference(manifest.get("base", {}), plan.base) or "a value"
                raise SweepError(
                    f"--resume: '{directory}' holds results of a different base scenario ({where} differs); "
                    f"resume with the same scenario and --set values, or write to another --out"
                )
            writer = cls(directory, manifest, lock)
            writer._set_plan(plan)
            writer._remove_strays()
            writer._write_manifest()
            return writer
        except BaseException:
            _unlock(lock)
            raise

    def _set_plan(self, plan) -> None:
        for path in plan.swept_paths:
            kind = value_type(point.values[path] for point in plan.points)
            old = self._swept.get(path)
            self._swept[path] = (
                kind if old in (None, kind) else ("float64" if {old, kind} == {"int64", "float64"} else "string")
            )
        self.manifest.update(
            overrides=[[path, value] for path, value in plan.overrides],
            spec=plan.spec.to_dict(),
            swept=[[path, kind] for path, kind in self._swept.items()],
            num_points=len(plan.points),
            latency_quantiles=list(LATENCY_QUANTILES),
        )

    def _remove_strays(self) -> None:
        """Delete files a killed writer left that the manifest does not list."""
        listed = set(self.manifest["files"])
        parts = self.directory / PARTS
        candidates = list(parts.iterdir()) if parts.is_dir() else []
        candidates += [p for p in self.directory.iterdir() if p.name.startswith(".") and p.name != LOCK]
        candidates += [self.directory / RESULTS]
        for path in candidates:
            relative = path.relative_to(self.directory).as_posix()
            if path.is_file() and relative not in listed:
                path.unlink(missing_ok=True)

    # ---- state
    def completed(self) -> dict[str, str]:
        """``{point_id: status}`` of every row in the dataset."""
        table = read_results(self.directory, columns=["status"])
        if table.num_rows == 0:
            return {}
        return dict(zip(table.column("point_id").to_pylist(), table.column("status").to_pylist()))

    def begin_run(self, **info: Any) -> None:
        """Record one invocation (executor, jobs, engine, ...) in the manifest's run history."""
        entry = {"started": _now(), "host": platform.node(), "state": "running", **info}
        self.manifest["runs"].append(entry)
        self.manifest["state"] = "running"
        self._write_manifest()

    def end_run(self, state: str, **info: Any) -> None:
        if self.manifest["runs"]:
            self.manifest["runs"][-1].update(finished=_now(), state=state, **info)
        self.manifest["state"] = state
        self._write_manifest()

    # ---- writing
    def append(self, rows: Sequence[Mapping[str, Any]]) -> Path | None:
        """Write ``rows`` as one new part file and list it in the manifest (durable on return)."""
        if not rows:
            return None
        from moesim.trace.io import atomic_path

        table = self._with_metadata(rows_to_table(rows, self._swept))
        name = f"{PARTS}/part-{self.manifest['next_part']:06d}.parquet"
        with atomic_path(self.directory / name) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        self.manifest["files"].append(name)
        self.manifest["next_part"] += 1
        self._write_manifest()
        if sum(f.startswith(PARTS) for f in self.manifest["files"]) >= MAX_PARTS:
            self.compact()
        return self.directory / name

    def compact(self, order: Sequence[str] = ()) -> None:
        """Merge every listed file into ``results.parquet`` and delete the parts.

        Rows of the points in ``order`` (point ids, the sweep's expansion order) come first, in
        that order, with ``point_index`` set to their position in it (a resumed sweep with more
        values may have shifted it); rows of points no longer in the sweep follow, as they were.
        """
        from moesim.trace.io import atomic_path

        if not self.manifest["files"]:
            return
        table = read_results(self.directory)
        table = table.take(pa.array(_ordering(table, order)))
        if order and "point_index" in table.column_names:
            rank = {point_id: i for i, point_id in enumerate(order)}
            index = [
                rank.get(p, old)
                for p, old in zip(table.column("point_id").to_pylist(), table.column("point_index").to_pylist())
            ]
            table = table.set_column(
                table.column_names.index("point_index"), "point_index", pa.array(index, type=pa.int64())
            )
        table = self._with_metadata(table)
        with atomic_path(self.directory / RESULTS) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        old = [f for f in self.manifest["files"] if f != RESULTS]
        self.manifest["files"] = [RESULTS]
        self._write_manifest()
        for name in old:
            (self.directory / name).unlink(missing_ok=True)
        try:
            (self.directory / PARTS).rmdir()
        except OSError:  # already gone, or holds files the manifest never listed (left for _remove_strays)
            pass

    def _with_metadata(self, table: pa.Table) -> pa.Table:
        info = {"version": VERSION, "swept": list(self._swept), "latency_quantiles": list(LATENCY_QUANTILES)}
        return table.replace_schema_metadata({METADATA_KEY: json.dumps(info).encode()})

    def _write_manifest(self) -> None:
        from moesim.trace.io import atomic_write_text

        self.manifest["updated"] = _now()
        text = json.dumps(to_jsonable(self.manifest), indent=1, sort_keys=True, allow_nan=False)
        atomic_write_text(self.directory / MANIFEST, text + "\n")

    def close(self) -> None:
        _unlock(self._lock)
        self._lock = None

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ordering(table: pa.Table, order: Sequence[str]) -> np.ndarray:
    rank = {point_id: i for i, point_id in enumerate(order)}
    ids = table.column("point_id").to_pylist()
    index = table.column("point_index").to_pylist() if "point_index" in table.column_names else [0] * len(ids)
    keys = [
        (0, rank[p], 0) if p in rank else (1, idx if idx is not None else 0, i)
        for i, (p, idx) in enumerate(zip(ids, index))
    ]
    return np.array(sorted(range(len(ids)), key=keys.__getitem__), dtype=np.int64)


def _first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if key in ("name", "description") and not prefix:
                continue
            where = f"{prefix}{key}"
            if key not in old or key not in new:
                return (
                    f"{where} ({'unset' if key not in old else json.dumps(old[key], default=str)} in the "
                    f"results, {'unset' if key not in new else json.dumps(new[key], default=str)} now)"
                )
            found = _first_difference(old[key], new[key], f"{where}.")
            if found:
                return found
        return None
    if canonical_json(old) != canonical_json(new):
        where = prefix.rstrip(".") or "the scenario"
        return f"{where} ({json.dumps(old, default=str)} in the results, {json.dumps(new, default=str)} now)"
    return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _lock(directory: Path) -> Any:
    """An exclusive advisory lock on ``directory/.lock`` (released on close or process exit)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no protection against two writers
        return None
    try:
        handle = open(directory / LOCK, "a+")  # noqa: SIM115 - held open for the writer's lifetime
    except OSError as exc:
        raise SweepError(
            f"--out '{directory}': cannot write there ({exc.strerror or exc}); choose a writable directory"
        ) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SweepError(
            f"'{directory}' is being written by another moesim sweep; wait for it to finish or write to another --out"
        ) from None
    return handle


def _unlock(handle: Any) -> None:
    if handle is not None:
        handle.close()
