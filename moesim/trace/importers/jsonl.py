"""JSON Lines: one record per token and MoE layer.

::

    {"seq": 0, "pos": 17, "layer": 3, "experts": [5, 1, 60, 22], "weights": [0.4, 0.3, 0.2, 0.1], "phase": "decode"}

``seq`` (sequence id), ``pos`` (position in the sequence), ``layer`` (model-layer index) and
``experts`` (ids in descending router score, -1 for an empty slot) are required; ``weights`` and
``phase`` (``"prefill"``/``"decode"``, default decode) are optional but, when used, must be on
every record. Records may come in any order: tokens are ordered by position within a sequence and
sequences by first appearance. Every token needs exactly one record for each layer that occurs in
the file, and every record the same number of experts. Blank lines are ignored.

Parsing is columnar (Arrow's multi-threaded JSON reader straight into arrays), so large files never
become Python objects. When the fast reader rejects a file or a check fails, the file is re-read
line by line, which finds the first bad line for the message.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from moesim.errors import TraceError
from moesim.trace.importers.registry import register_importer, require_num_experts, source_metadata
from moesim.trace.schema import PHASE_CODES, PHASES
from moesim.trace.trace import Trace

FORMAT = "jsonl"
FIELDS = ("seq", "pos", "layer", "experts", "weights", "phase")
REQUIRED = ("seq", "pos", "layer", "experts")
_INT_FIELDS = ("seq", "pos", "layer")
_ARROW_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("pos", pa.int64()),
        ("layer", pa.int64()),
        ("experts", pa.list_(pa.int64())),
        ("weights", pa.list_(pa.float64())),
        ("phase", pa.string()),
    ]
)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT32_MAX = int(np.iinfo(np.int32).max)
_NO_PHASE = -1


class _NeedLines(Exception):
    """A check failed on data read without line numbers: re-read line by line for the message."""


@dataclass
class _Columns:
    """The records as flat arrays; ``lines`` maps a record to its 1-based line (None from Arrow)."""

    seq: np.ndarray  # int64 [N]
    pos: np.ndarray  # int64 [N]
    layer: np.ndarray  # int64 [N]
    experts: np.ndarray  # int64 [sum of list lengths]
    expert_counts: np.ndarray  # int64 [N]
    weights: np.ndarray | None  # float64 [sum of list lengths]
    weight_counts: np.ndarray | None  # int64 [N], -1 where a record has no weights
    phase: np.ndarray  # int8 [N], _NO_PHASE where a record has none
    lines: np.ndarray | None


# ---------------------------------------------------------------------- fast reader (Arrow)
def _read_arrow(path: Path) -> _Columns | None:
    """Columns via Arrow's JSON reader, or None when it rejects the file (the slow reader says why)."""
    options = pa_json.ParseOptions(explicit_schema=_ARROW_SCHEMA, unexpected_field_behavior="error")
    try:
        table = pa_json.read_json(path, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows == 0:
        return None
    for name in REQUIRED:
        if table.column(name).null_count:
            return None
    experts = table.column("experts").combine_chunks()
    if experts.values.null_count:
        return None
    weights = table.column("weights").combine_chunks()
    if weights.values.null_count:
        return None
    has_weights = weights.is_valid().to_numpy(zero_copy_only=False)
    phase = table.column("phase").combine_chunks()
    phase_codes = np.full(len(phase), _NO_PHASE, dtype=np.int8)
    for name, code in PHASE_CODES.items():
        phase_codes[pc.equal(phase, name).fill_null(False).to_numpy(zero_copy_only=False)] = code
    if (phase_codes == _NO_PHASE).sum() != phase.null_count:
        return None  # a phase name that is not one of PHASES

    def ints(name: str) -> np.ndarray:
        return table.column(name).combine_chunks().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)

    weight_counts = None
    weight_values = None
    if has_weights.any():
        weight_counts = np.where(has_weights, _list_lengths(weights), -1)
        weight_values = weights.flatten().to_numpy(zero_copy_only=False)
    return _Columns(
        seq=ints("seq"),
        pos=ints("pos"),
        layer=ints("layer"),
        experts=experts.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False),
        expert_counts=_list_lengths(experts),
        weights=weight_values,
        weight_counts=weight_counts,
        phase=phase_codes,
        lines=None,
    )


def _list_lengths(values: pa.ListArray) -> np.ndarray:
    offsets = values.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    return np.diff(offsets)


# ---------------------------------------------------------------------- exact reader (line by line)
def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(key for key in keys if keys.count(key) > 1)
        raise _DuplicateKey(twice)
    return dict(pairs)


class _DuplicateKey(Exception):
    pass


def _read_lines(path: Path) -> _Columns:
    """Columns read one line at a time (constant memory per record); the first bad line raises."""
    seq, pos, layer, lines = array("q"), array("q"), array("q"), array("q")
    experts, expert_counts = array("q"), array("q")
    weights, weight_counts = array("d"), array("q")
    phase = array("b")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            where = f"file '{path}' line {number}"
            try:
                record = json.loads(raw.rstrip(b"\r\n"), object_pairs_hook=_reject_duplicate_keys)
            except _DuplicateKey as exc:
                raise TraceError(f"{where}: field '{exc.args[0]}' appears twice") from None
            except json.JSONDecodeError as exc:
                raise TraceError(
                    f"{where}: not valid JSON ({exc.msg} at column {exc.pos + 1}); one JSON object per line"
                ) from None
            except UnicodeDecodeError:
                raise TraceError(f"{where}: not UTF-8 text") from None
            if not isinstance(record, dict):
                raise TraceError(f"{where}: expected a JSON object, got a JSON {type(record).__name__}")
            unknown = [key for key in record if key not in FIELDS]
            if unknown:
                raise TraceError(f"{where}: unknown field '{unknown[0]}'; expected {', '.join(FIELDS)}")
            for name in REQUIRED:
                if record.get(name) is None:
                    raise TraceError(f"{where}: missing field '{name}'; every record needs {', '.join(REQUIRED)}")
            for name, column in zip(_INT_FIELDS, (seq, pos, layer)):
                value = record[name]
                if not _is_int(value) or not _INT64_MIN <= value <= _INT64_MAX:
                    raise TraceError(f"{where}: field '{name}' is {value!r}, expected an integer")
                column.append(value)
            ids = record["experts"]
            if not isinstance(ids, list) or not all(_is_int(x) and _INT64_MIN <= x <= _INT64_MAX for x in ids):
                raise TraceError(f"{where}: field 'experts' is {_short(ids)}, expected a list of integer expert ids")
            experts.extend(ids)
            expert_counts.append(len(ids))
            gate = record.get("weights")
            if gate is None:
                weight_counts.append(-1)
            else:
                if not isinstance(gate, list) or not all(_is_number(x) for x in gate):
                    raise TraceError(f"{where}: field 'weights' is {_short(gate)}, expected a list of numbers")
                weights.extend(float(x) for x in gate)
                weight_counts.append(len(gate))
            name = record.get("phase")
            if name is None:
                phase.append(_NO_PHASE)
            elif name in PHASE_CODES:
                phase.append(PHASE_CODES[name])
            else:
                raise TraceError(f"{where}: field 'phase' is {_short(name)}, expected one of {', '.join(PHASES)}")
            lines.append(number)
    if not len(lines):
        raise TraceError(f"file '{path}': no records; expected one JSON object per line with {', '.join(REQUIRED)}")
    counts = np.frombuffer(weight_counts, dtype=np.int64)
    any_weights = bool((counts >= 0).any())
    return _Columns(
        seq=np.frombuffer(seq, dtype=np.int64),
        pos=np.frombuffer(pos, dtype=np.int64),
        layer=np.frombuffer(layer, dtype=np.int64),
        experts=np.frombuffer(experts, dtype=np.int64),
        expert_counts=np.frombuffer(expert_counts, dtype=np.int64),
        weights=np.frombuffer(weights, dtype=np.float64) if any_weights else None,
        weight_counts=counts if any_weights else None,
        phase=np.frombuffer(phase, dtype=np.int8),
        lines=np.frombuffer(lines, dtype=np.int64),
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------- checks and assembly
def _assemble(path: Path, columns: _Columns, num_experts: int, model: str | None) -> Trace:
    """Check the records and arrange them as a trace. Raises _NeedLines when ``columns.lines`` is None."""

    def fail(row: int, message: str) -> None:
        if columns.lines is None:
            raise _NeedLines
        raise TraceError(f"file '{path}' line {int(columns.lines[row])}: {message}")

    def line(row: int) -> int:
        assert columns.lines is not None
        return int(columns.lines[row])

    num_records = len(columns.seq)
    counts = columns.expert_counts
    top_k = int(counts[0])
    if top_k == 0:
        fail(0, "field 'experts' is empty; list the token's routed experts")
    bad = np.flatnonzero(counts != top_k)
    if len(bad):
        row = int(bad[0])
        fail(row, f"{int(counts[row])} experts, expected {top_k} like the first record; every record needs "
                  f"the same number of slots (pad with -1)")
    experts = columns.experts.reshape(num_records, top_k)

    weights = None
    if columns.weight_counts is not None:
        present = columns.weight_counts >= 0
        first = int(np.argmax(present != present[0])) if (present != present[0]).any() else -1
        if first >= 0:
            have, lack = (0, first) if present[0] else (first, 0)
            fail(lack, f"no field 'weights', but line {_line_or(columns, have)} has it; give weights on every "
                       f"record or on none")
        bad = np.flatnonzero(columns.weight_counts != top_k)
        if len(bad):
            row = int(bad[0])
            fail(row, f"{int(columns.weight_counts[row])} weights for {top_k} experts; give one weight per expert")
        assert columns.weights is not None
        weights = columns.weights.reshape(num_records, top_k)
        bad = np.flatnonzero(~np.isfinite(weights).all(axis=1) | (weights < 0).any(axis=1))
        if len(bad):
            row = int(bad[0])
            fail(row, f"weights {weights[row].tolist()} are not all finite and >= 0; store the router's gate "
                      f"(softmax) weights")

    has_phase = columns.phase != _NO_PHASE
    if has_phase.any() and not has_phase.all():
        lack = int(np.argmin(has_phase))
        fail(lack, f"no field 'phase', but line {_line_or(columns, int(np.argmax(has_phase)))} has it; give "
                   f"the phase on every record or on none (default decode)")

    for name, values, high in (("pos", columns.pos, _INT32_MAX), ("layer", columns.layer, _INT32_MAX)):
        bad = np.flatnonzero((values < 0) | (values > high))
        if len(bad):
            row = int(bad[0])
            fail(row, f"field '{name}' is {int(values[row])}, expected 0..{high}")
    bad = np.flatnonzero(((experts >= num_experts) | (experts < -1)).any(axis=1))
    if len(bad):
        row = int(bad[0])
        value = next(int(x) for x in experts[row] if x >= num_experts or x < -1)
        fail(row, f"expert {value} is not an id 0..{num_experts - 1} (-1 marks an empty slot); if the model "
                  f"has more experts pass num_experts")
    for i in range(top_k):
        for j in range(i + 1, top_k):
            bad = np.flatnonzero((experts[:, i] == experts[:, j]) & (experts[:, i] >= 0))
            if len(bad):
                row = int(bad[0])
                fail(row, f"expert {int(experts[row, i])} appears twice in {experts[row].tolist()}; a token's "
                          f"experts are distinct")

    # Tokens: sequences in order of first appearance, positions ascending, layers ascending.
    seq_values, first_row, seq_rank = np.unique(columns.seq, return_index=True, return_inverse=True)
    appearance = np.empty(len(seq_values), dtype=np.int64)
    appearance[np.argsort(first_row, kind="stable")] = np.arange(len(seq_values))
    order = _token_order(appearance[seq_rank], columns.pos, columns.layer)
    seq, pos, layer = columns.seq[order], columns.pos[order], columns.layer[order]
    same_token = (seq[1:] == seq[:-1]) & (pos[1:] == pos[:-1])
    duplicate = np.flatnonzero(same_token & (layer[1:] == layer[:-1]))
    if len(duplicate):
        pairs = np.stack([order[duplicate], order[duplicate + 1]], axis=1)
        pairs.sort(axis=1)
        earlier, later = (int(x) for x in pairs[np.argmin(pairs[:, 1])])
        fail(later, f"second record for seq {int(columns.seq[later])} pos {int(columns.pos[later])} layer "
                    f"{int(columns.layer[later])} (the first is on line {_line_or(columns, earlier)})")
    layers = np.unique(columns.layer)
    num_layers = len(layers)
    starts = np.concatenate([[0], np.flatnonzero(~same_token) + 1])
    sizes = np.diff(np.concatenate([starts, [num_records]]))
    incomplete = np.flatnonzero(sizes != num_layers)
    if len(incomplete):
        # Report the incomplete token whose first record comes earliest in the file.
        token = int(incomplete[np.argmin([order[starts[t]:starts[t] + sizes[t]].min() for t in incomplete])])
        rows = order[starts[token]:starts[token] + sizes[token]]
        missing = int(np.setdiff1d(layers, columns.layer[rows])[0])
        row = int(rows.min())
        fail(row, f"seq {int(columns.seq[row])} pos {int(columns.pos[row])} has no record for layer {missing}; "
                  f"every token needs one record for each of the {num_layers} layers in the file "
                  f"({_layer_list(layers)})")
    token_rows = order.reshape(-1, num_layers)
    phase = columns.phase[token_rows]
    mixed = np.flatnonzero((phase != phase[:, :1]).any(axis=1))
    if len(mixed):
        rows = token_rows[int(mixed[0])]
        odd = int(rows[np.argmax(phase[int(mixed[0])] != phase[int(mixed[0]), 0])])
        fail(odd, f"phase {PHASES[int(columns.phase[odd])]!r}, but line {_line_or(columns, int(rows[0]))} gives "
                  f"{PHASES[int(columns.phase[rows[0]])]!r} for seq {int(columns.seq[odd])} pos "
                  f"{int(columns.pos[odd])}; a token has one phase")

    first_rows = token_rows[:, 0]
    phases = phase[:, 0] if has_phase.all() else "decode"
    return Trace.from_arrays(
        experts[token_rows],
        num_experts=num_experts,
        seq_ids=columns.seq[first_rows],
        positions=columns.pos[first_rows],
        phases=phases,
        weights=None if weights is None else weights[token_rows],
        model=model,
        moe_layers=layers.tolist(),
        source=source_metadata(FORMAT, path),
    )


def _token_order(rank: np.ndarray, pos: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Stable sort by (rank, pos, layer); files written in that order skip the sort."""
    if len(rank) > 1:
        d_rank, d_pos, d_layer = np.diff(rank), np.diff(pos), np.diff(layer)
        ordered = (d_rank > 0) | ((d_rank == 0) & ((d_pos > 0) | ((d_pos == 0) & (d_layer >= 0))))
        if not ordered.all():
            return np.lexsort((layer, pos, rank))
    return np.arange(len(rank))


def _line_or(columns: _Columns, row: int) -> int:
    if columns.lines is None:
        raise _NeedLines
    return int(columns.lines[row])


def _layer_list(layers: np.ndarray) -> str:
    values = layers.tolist()
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 3:
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))


@register_importer(FORMAT, suffixes=(".jsonl", ".ndjson"))
def import_jsonl(path: Path, *, num_experts: int | None = None, model: str | None = None) -> Trace:
    """JSON Lines, one record per token and layer: seq, pos, layer, experts, optional weights, phase.

    Parameters
    ----------
    path : Path
        The ``.jsonl`` file.
    num_experts : int
        Routed experts per MoE layer of the model (required: the file cannot say).
    model : str, optional
        Model name for the metadata.

    Returns
    -------
    Trace
        Validated; ``moe_layers`` are the distinct ``layer`` values; metadata ``source`` names the
        format and file.

    Raises
    ------
    TraceError
        Naming the file and line: malformed JSON, an unknown or missing field, a duplicate
        (seq, pos, layer), a token without a record for some layer, a different number of experts
        than the first record, ids out of range or repeated, weights on some records only.
    """
    columns = _read_arrow(path)
    if columns is None:
        columns = _read_lines(path)
    largest = int(columns.experts.max()) if len(columns.experts) else -1
    num_experts = require_num_experts(FORMAT, path, num_experts, largest)
    if columns.lines is None:
        try:
            return _assemble(path, columns, num_experts, model)
        except _NeedLines:
            columns = _read_lines(path)
    return _assemble(path, columns, num_experts, model)
