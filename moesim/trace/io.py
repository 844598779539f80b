"""Reading and writing traces: Parquet and Arrow IPC, chosen by extension; atomic; streaming.

* :func:`write_trace` writes to a temporary file beside the target, fsyncs it and renames it into
  place, so readers never see a half-written trace and a crash never destroys the old file.
* :func:`read_trace` memory-maps Arrow IPC files (zero-copy arrays) and checks the format version,
  columns, dtypes and values, naming the file, column and row of the first problem.
* :class:`TraceWriter` appends chunks as they are produced (one row group each). Chunks go to a
  journal directory ``<path>.partial/`` as individually-atomic part files, so a killed writer leaves
  every completed chunk readable; :meth:`TraceWriter.resume` picks it up, :meth:`TraceWriter.close`
  streams the parts into the final file (atomically) and removes the journal.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from moesim.errors import TraceError
from moesim.trace import schema as S
from moesim.trace.trace import Trace

PARQUET_SUFFIXES = (".parquet", ".pq")
IPC_SUFFIXES = (".arrow", ".ipc", ".feather")
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 9
_COLUMN_ATTRS = {
    "experts": "experts",
    "weights": "weights",
    "predicted_experts": "predicted_experts",
    "router_logits": "router_logits",
}


def trace_format(path: str | os.PathLike) -> str:
    """``"parquet"`` or ``"ipc"`` from the file name; :class:`TraceError` for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in IPC_SUFFIXES:
        return "ipc"
    raise TraceError(
        f"file '{path}': unknown trace extension {suffix!r}; use .parquet (compressed, for storage) "
        f"or .arrow (memory-mapped, for large traces)"
    )


# ---------------------------------------------------------------------- atomic files
def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()



@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync and rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- Trace <-> Arrow
def _nested(values: np.ndarray, leaf: pa.DataType) -> pa.Array:
    num_tokens, num_layers, inner = values.shape
    flat = pa.array(values.reshape(-1), type=leaf)
    return pa.FixedSizeListArray.from_arrays(
        pa.FixedSizeListArray.from_arrays(flat, inner), num_layers
    )


def _header(trace: Trace) -> str:
    header = trace.metadata
    header["format_version"] = S.FORMAT_VERSION
    return S.encode_metadata(header)


def trace_schema(trace: Trace) -> pa.Schema:
    columns = tuple(name for name in S.NESTED_TYPES if getattr(trace, _COLUMN_ATTRS[name]) is not None)
    return S.arrow_schema(
        num_layers=trace.num_layers,
        top_k=trace.top_k,
        num_experts=trace.num_experts,
        columns=columns,
        metadata_json=_header(trace),
        predicted_width=None if trace.predicted_experts is None else trace.predicted_experts.shape[2],
    )


def to_table(trace: Trace) -> pa.Table:
    """The trace as an Arrow table in the on-disk schema."""
    schema = trace_schema(trace)
    arrays = [
        pa.array(trace.seq_ids, type=pa.int64()),
        pa.array(trace.positions, type=pa.int32()),
        pa.array(trace.phases, type=pa.int8()),
    ]
    for field in schema:
        if field.name in S.NESTED_TYPES:
            leaf = S.NESTED_TYPES[field.name][0]
            arrays.append(_nested(getattr(trace, _COLUMN_ATTRS[field.name]), leaf))
    return pa.Table.from_arrays(arrays, schema=schema)


def _check_version(where: str, metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    if not metadata or S.VERSION_KEY not in metadata:
        raise TraceError(
            f"{where}: not a moesim trace (no '{S.VERSION_KEY.decode()}' in the schema metadata); "
            f"import foreign files with `moesim trace convert IN OUT --from FORMAT`"
        )
    raw = metadata[S.VERSION_KEY].decode(errors="replace")
    try:
        version = int(raw)
    except ValueError:
        version = None
    if version != S.FORMAT_VERSION:
        newer = version is not None and version > S.FORMAT_VERSION
        raise TraceError(
            f"{where}: trace format version {raw} is not supported (this moesim reads version "
            f"{S.FORMAT_VERSION}); "
            + ("upgrade moesim to read it" if newer else "re-create the trace with this moesim")
        )
    try:
        header = json.loads(metadata.get(S.METADATA_KEY, b"{}").decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{where}: trace metadata is not valid JSON ({exc}); the file is corrupt") from None
    if not isinstance(header, dict):
        raise TraceError(f"{where}: trace metadata is not a JSON object; the file is corrupt")
    for key in ("num_experts", "top_k", "num_layers"):
        if not isinstance(header.get(key), int):
            raise TraceError(f"{where}: trace metadata lacks integer '{key}'; the file is corrupt")
    return header


def _column_numpy(where: str, table: pa.Table, name: str, header: dict[str, Any]) -> np.ndarray | None:
    if name not in table.column_names:
        if name in S.REQUIRED_COLUMNS:
            raise TraceError(
                f"{where}: missing column '{name}'; a moesim trace needs columns "
                f"{', '.join(S.REQUIRED_COLUMNS)}"
            )
        return None
    column = table.column(name)
    if name in S.SCALAR_TYPES:
        expected = S.SCALAR_TYPES[name]
        if column.type != expected:
            raise TraceError(f"{where}: column '{name}' has type {column.type}, expected {expected}")
        if column.null_count:
            raise TraceError(f"{where}: column '{name}' has {column.null_count} nulls; every row needs a value")
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        return array.to_numpy(zero_copy_only=False)

    leaf, inner_dim = S.NESTED_TYPES[name]
    num_layers = header["num_layers"]
    inner = header[inner_dim] if inner_dim is not None else None
    column_type = column.type
    ok = (
        pa.types.is_fixed_size_list(column_type)
        and column_type.list_size == num_layers
        and pa.types.is_fixed_size_list(column_type.value_type)
        and (inner is None or column_type.value_type.list_size == inner)
        and column_type.value_type.value_type == leaf
    )
    if not ok:
        want = f"fixed_size_list<fixed_size_list<{leaf}, {inner if inner is not None else 'n'}>, {num_layers}>"
        raise TraceError(
            f"{where}: column '{name}' has type {column_type}, expected {want}; "
            f"write traces with moesim.write_trace or `moesim trace convert`"
        )
    width = column_type.value_type.list_size
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    values = array.flatten().flatten()
    if array.null_count or array.flatten().null_count or values.null_count:
        raise TraceError(f"{where}: column '{name}' has nulls; use -1 for empty expert slots")
    flat = values.to_numpy(zero_copy_only=True)
    return flat.reshape(len(table), num_layers, width)


def from_table(table: pa.Table, where: str = "table", *, validate: bool = True) -> Trace:
    """Build a :class:`Trace` from an Arrow table in the on-disk schema."""
    header = _check_version(where, table.schema.metadata)
    user = {k: v for k, v in header.items() if k not in S.RESERVED_KEYS}
    columns = {name: _column_numpy(where, table, name, header) for name in S.SCALAR_TYPES}
    nested = {name: _column_numpy(where, table, name, header) for name in S.NESTED_TYPES}
    return Trace._build(
        where,
        nested["experts"],
        num_experts=header["num_experts"],
        seq_ids=columns["seq_id"],
        positions=columns["position"],
        phases=columns["phase"],
        weights=nested["weights"],
        model=header.get("model"),
        moe_layers=header.get("moe_layers"),
        predicted_experts=nested["predicted_experts"],
        router_logits=nested["router_logits"],
        metadata=user,
        validate_values=validate,
    )


# ---------------------------------------------------------------------- read / write
def read_trace(path: str | os.PathLike, *, validate: bool = True) -> Trace:
    """Read a trace from Parquet or Arrow IPC (by extension); IPC is memory-mapped.

    ``validate=False`` skips the value checks (expert id range and uniqueness, weights, positions)
    for trusted files; format version, columns and dtypes are always checked.
    Raises :class:`TraceError` naming the file and the problem.
    """
    path = Path(path)
    where = f"file '{path}'"
    kind = trace_format(path)
    if not path.is_file():
        raise TraceError(f"{where}: no such file")
    try:
        if kind == "parquet":
            parquet = pq.ParquetFile(path, memory_map=True)
            _check_version(where, parquet.schema_arrow.metadata)
            table = parquet.read()
        else:
            source = pa.memory_map(str(path), "r")
            try:
                reader = ipc.open_file(source)
            except pa.ArrowInvalid:
                source = pa.memory_map(str(path), "r")
                reader = ipc.open_stream(source)
            _check_version(where, reader.schema.metadata)
            table = reader.read_all()
    except TraceError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise TraceError(
            f"{where}: cannot be read as {'Parquet' if kind == 'parquet' else 'Arrow IPC'} "
            f"({detail}); the file is truncated or corrupt: re-create or re-download it"
        ) from None
    return from_table(table, where, validate=validate)


def write_trace(
    trace: Trace,
    path: str | os.PathLike,
    *,
    compression: str | None = None,
    row_group_tokens: int = 65536,
) -> Path:
    """Write ``trace`` to ``path`` atomically (temp file, fsync, rename). Returns the path.

    Parquet defaults to zstd compression; Arrow IPC is written uncompressed so it can be
    memory-mapped zero-copy (pass ``compression="zstd"`` or ``"lz4"`` to trade that for size).
    """
    path = Path(path)
    kind = trace_format(path)
    table = to_table(trace)
    with atomic_path(path) as tmp:
        _write_table(table, tmp, kind, compression, row_group_tokens)
    return path


def _write_table(table: pa.Table, dest: Path, kind: str, compression: str | None, row_group_tokens: int) -> None:
    if kind == "parquet":
        codec = compression or PARQUET_COMPRESSION
        level = PARQUET_COMPRESSION_LEVEL if codec == "zstd" and compression is None else None
        pq.write_table(
            table, dest, compression=codec, compression_level=level, row_group_size=row_group_tokens
        )
    else:
        options = ipc.IpcWriteOptions(compression=compression)
        with ipc.new_file(str(dest), table.schema, options=options) as writer:
            writer.write_table(table, max_chunksize=max(len(table), 1))


# ---------------------------------------------------------------------- streaming
class TraceWriter:
    """Append trace chunks as they are produced; crash-safe and resumable.

    >>> with TraceWriter("out.parquet", num_experts=32, num_layers=24, top_k=4, model="m") as writer:
    ...     writer.append(chunk)            # a Trace with the same E, L, k, moe_layers, columns
    ... # on leaving the block without error: out.parquet is written atomically

    Each :meth:`append` is durable when it returns (an atomic part file in ``out.parquet.partial/``).
    If the process dies, ``TraceWriter.resume("out.parquet")`` reopens the journal; its
    :attr:`completed_seq_ids` tell the caller what to skip. A sequence may continue across appends
    only from the last sequence of the previous chunk (rows of a sequence stay contiguous).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        num_experts: int,
        num_layers: int,
        top_k: int,
        model: str | None = None,
        moe_layers: list[int] | tuple[int, ...] | None = None,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
    ):
        self.path = Path(path)
        self.kind = trace_format(self.path)
        self.journal = journal_dir(self.path)
        self._header = {
            "num_experts": int(num_experts),
            "num_layers": int(num_layers),
            "top_k": int(top_k),
            "model": model,
            "moe_layers": list(moe_layers) if moe_layers is not None else list(range(num_layers)),
            "metadata": dict(metadata or {}),
        }
        if self.journal.exists():
            if not overwrite:
                raise TraceError(
                    f"file '{self.path}': an interrupted write left '{self.journal}'; continue it with "
                    f"resume (e.g. `--resume`) or pass overwrite to discard it"
                )
            shutil.rmtree(self.journal)
        self.journal.mkdir(parents=True)
        atomic_write_text(self.journal / "header.json", json.dumps(self._header, sort_keys=True))
        self._parts = 0
        self._seen: set[int] = set()
        self._last_seq: int | None = None
        self._last_position: int | None = None
        self._signature: tuple | None = None
        self._closed = False

    @classmethod
    def resume(cls, path: str | os.PathLike) -> TraceWriter:
        """Reopen the journal an interrupted writer left for ``path``."""
        path = Path(path)
        journal = journal_dir(path)
        header_file = journal / "header.json"
        if not header_file.is_file():
            raise TraceError(f"file '{path}': nothing to resume (no journal '{journal}'); start a new write")
        try:
            header = json.loads(header_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TraceError(f"file '{header_file}': unreadable journal header ({exc}); delete '{journal}' and start again") from None
        writer = object.__new__(cls)
        writer.path, writer.kind, writer.journal, writer._header = path, trace_format(path), journal, header
        writer._parts, writer._seen, writer._signature, writer._closed = 0, set(), None, False
        writer._last_seq = writer._last_position = None
        for part in writer._part_files():
            chunk = read_trace(part, validate=False)
            writer._note(chunk)
            writer._parts += 1
        return writer

    # -- state
    @property
    def completed_seq_ids(self) -> set[int]:
        """Sequence ids with at least one durable row (the last one may be incomplete)."""
        return set(self._seen)

    @property
    def metadata(self) -> dict[str, Any]:
        """The user metadata this writer was opened or resumed with (a copy)."""
        return dict(self._header["metadata"])

    @property
    def last_seq_id(self) -> int | None:
        return self._last_seq

    @property
    def num_parts(self) -> int:
        return self._parts

    def _part_files(self) -> list[Path]:
        return sorted(self.journal.glob("part-*.arrow"))

    def _note(self, chunk: Trace) -> None:
        signature = (
            chunk.weights is not None,
            None if chunk.predicted_experts is None else chunk.predicted_experts.shape[2],
            chunk.router_logits is not None,
        )
        if self._signature is None:
            self._signature = signature
        elif signature != self._signature:
            raise TraceError(
                f"file '{self.path}': chunk columns (weights, predicted_experts, router_logits) "
                f"{signature} differ from earlier chunks {self._signature}"
            )
        ids = chunk.sequence_ids.tolist()
        if ids:
            if ids[0] in self._seen and ids[0] != self._last_seq:
                raise TraceError(
                    f"file '{self.path}': sequence {ids[0]} was already written and is not the last one; "
                    f"rows of a sequence must be contiguous"
                )
            if ids[0] == self._last_seq and int(chunk.positions[0]) <= int(self._last_position):
                raise TraceError(
                    f"file '{self.path}': sequence {ids[0]} continues at position {int(chunk.positions[0])} "
                    f"<= {self._last_position}; positions must increase"
                )
            clash = self._seen.intersection(ids[1:])
            if clash:
                raise TraceError(f"file '{self.path}': sequence {min(clash)} was already written")
            self._seen.update(ids)
            self._last_seq = ids[-1]
            self._last_position = int(chunk.positions[-1])

    # -- writing
    def append(self, chunk: Trace) -> None:
        """Durably append a chunk (a :class:`Trace` of the same shape)."""
        if self._closed:
            raise TraceError(f"file '{self.path}': writer is closed")
        h = self._header
        if (chunk.num_experts, chunk.num_layers, chunk.top_k, list(chunk.moe_layers)) != (
            h["num_experts"],
            h["num_layers"],
            h["top_k"],
            h["moe_layers"],
        ):
            raise TraceError(
                f"file '{self.path}': chunk has E={chunk.num_experts} L={chunk.num_layers} k={chunk.top_k} "
                f"moe_layers={list(chunk.moe_layers)}, the file has E={h['num_experts']} "
                f"L={h['num_layers']} k={h['top_k']} moe_layers={h['moe_layers']}"
            )
        if chunk.num_tokens == 0:
            return
        self._note(chunk)
        part = self.journal / f"part-{self._parts:08d}.arrow"
        write_trace(self._stamp(chunk), part)
        self._parts += 1

    def _stamp(self, chunk: Trace, extra: dict[str, Any] | None = None) -> Trace:
        metadata = dict(self._header["metadata"])
        metadata.update(extra or {})
        return chunk._replace(model=self._header["model"], metadata=metadata)

    def close(self, metadata: dict[str, Any] | None = None) -> Path:
        """Write the final file atomically from the journal, then remove the journal.

        ``metadata`` adds or replaces header keys (e.g. totals known only at the end).
        """
        if self._closed:
            return self.path
        if metadata:
            self._header["metadata"].update(metadata)
        parts = self._part_files()
        if not parts:
            raise TraceError(f"file '{self.path}': nothing was appended; no trace written")
        tables = (_read_part(p) for p in parts)
        first = _read_part(parts[0])
        probe = self._stamp(from_table(first.slice(0, 1), f"file '{parts[0]}'", validate=False))
        schema = trace_schema(probe)
        with atomic_path(self.path) as tmp:
            if self.kind == "parquet":
                with pq.ParquetWriter(
                    tmp, schema, compression=PARQUET_COMPRESSION, compression_level=PARQUET_COMPRESSION_LEVEL
                ) as writer:
                    for table in tables:
                        writer.write_table(table.replace_schema_metadata(schema.metadata))
            else:
                with ipc.new_file(str(tmp), schema) as writer:
                    for table in tables:
                        writer.write_table(table.replace_schema_metadata(schema.metadata))
        read_trace(self.path)  # the final file must validate as a whole before the journal goes
        shutil.rmtree(self.journal)
        self._closed = True
        return self.path

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        # On error the journal stays so the write can be resumed.


def _read_part(path: Path) -> pa.Table:
    # The table's buffers keep the mapping alive; closing the file here would not unmap them.
    return ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def journal_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")
