"""The in-memory routing trace: dense, read-only numpy arrays plus metadata."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from moesim.errors import TraceError
from moesim.trace import validate as check
from moesim.trace.schema import PHASE_CODES, PHASES, RESERVED_KEYS


def _readonly(array: np.ndarray) -> np.ndarray:
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


def _as_int_array(where: str, column: str, values: object, dtype: type, ndim: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != ndim:
        check.fail(where, f"column '{column}': expected {ndim} dimensions, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)):
            pass  # integral floats (e.g. from JSON) are accepted
        else:
            check.fail(where, f"column '{column}': expected integers, got dtype {array.dtype}")
    info = np.iinfo(dtype)
    if array.size and not np.can_cast(array.dtype, dtype, casting="safe") and (
        array.min() < info.min or array.max() > info.max
    ):
        check.fail(
            where,
            f"column '{column}': values {array.min()}..{array.max()} do not fit {np.dtype(dtype)}",
        )
    return np.ascontiguousarray(array, dtype=dtype)


def _phase_codes(where: str, phases: object, num_tokens: int) -> np.ndarray:
    if phases is None:
        return np.full(num_tokens, PHASE_CODES["decode"], dtype=np.int8)
    if isinstance(phases, str):
        if phases not in PHASE_CODES:
            check.fail(where, f"phase {phases!r} is not one of {', '.join(PHASES)}")
        return np.full(num_tokens, PHASE_CODES[phases], dtype=np.int8)
    array = np.asarray(phases)
    if array.dtype.kind in "US":
        codes = np.full(array.shape, -1, dtype=np.int8)
        for name, code in PHASE_CODES.items():
            codes[array == name] = code
        if (codes < 0).any():
            row = int(np.argmax(codes < 0))
            check.fail(
                where,
                f"column 'phase': {str(array[row])!r} at token {row} is not one of {', '.join(PHASES)}",
            )
        array = codes
    array = _as_int_array(where, "phase", array, np.int8, 1)
    check.check_phases(where, array)
    return array


def _contiguous_order(seq_ids: np.ndarray) -> np.ndarray | None:
    """Stable permutation grouping rows by sequence (first-appearance order), or None if already."""
    if len(seq_ids) < 2:
        return None
    starts = np.flatnonzero(np.diff(seq_ids)) + 1
    run_ids = np.concatenate([seq_ids[:1], seq_ids[starts]])
    if len(np.unique(run_ids)) == len(run_ids):
        return None
    _, first = np.unique(seq_ids, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    keys = rank[np.searchsorted(np.unique(seq_ids), seq_ids)]
    return np.argsort(keys, kind="stable")


class Trace:
    """An immutable MoE routing trace.

    Attributes
    ----------
    experts : int16 ndarray ``[T, L, k]``
        Routed experts per token and MoE layer in descending router score; -1 = empty slot.
    weights : float32 ndarray ``[T, L, k]`` or None
        Gate weights of those experts when recorded.
    seq_ids, positions, phases : ndarray ``[T]``
        Sequence id (int64), position in the sequence (int32), phase code (int8: 0 prefill, 1 decode).
        Rows of one sequence are contiguous and in execution order.
    predicted_experts : int16 ndarray ``[T, L, k']`` or None
        Trace-provided predictions of ``experts`` made before each layer ran (-1 = none).
    router_logits : float16 ndarray ``[T, L, E]`` or None
        Full router logits when captured.
    num_experts, model, moe_layers
        Experts per MoE layer (routed only), model name, model-layer index of each trace layer.

    Build one with :meth:`from_arrays` or :func:`moesim.read_trace`.
    """

    __slots__ = (
        "experts",
        "weights",
        "seq_ids",
        "positions",
        "phases",
        "predicted_experts",
        "router_logits",
        "num_experts",
        "model",
        "moe_layers",
        "_user_metadata",
        "_seq_offsets",
    )

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError("build a Trace with Trace.from_arrays(...) or moesim.read_trace(path)")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        experts: object,
        *,
        num_experts: int,
        seq_ids: object = None,
        positions: object = None,
        phases: object = None,
        weights: object = None,
        model: str | None = None,
        moe_layers: Iterable[int] | None = None,
        predicted_experts: object = None,
        router_logits: object = None,
        **metadata: Any,
    ) -> Trace:
        """Validate arrays and build a trace (copies nothing that is already the right dtype).

        ``positions`` default to 0, 1, 2, ... within each sequence, ``seq_ids`` to one sequence,
        ``phases`` to ``"decode"`` (a phase name, an array of names or of codes).
        Rows whose sequences are interleaved are regrouped (stable) so each sequence is contiguous.
        Raises :class:`TraceError` naming the column and first bad row.
        """
        return cls._build(
            "trace",
            experts,
            num_experts=num_experts,
            seq_ids=seq_ids,
            positions=positions,
            phases=phases,
            weights=weights,
            model=model,
            moe_layers=moe_layers,
            predicted_experts=predicted_experts,
            router_logits=router_logits,
            metadata=metadata,
        )

    @classmethod
    def _build(
        cls,
        where: str,
        experts: object,
        *,
        num_experts: object,
        seq_ids: object,
        positions: object,
        phases: object,
        weights: object,
        model: str | None,
        moe_layers: Iterable[int] | None,
        predicted_experts: object,
        router_logits: object,
        metadata: Mapping[str, Any],
        validate_values: bool = True,
    ) -> Trace:
        num_experts = check.check_num_experts(where, num_experts)
        experts = _as_int_array(where, "experts", experts, np.int16, 3)
        num_tokens, num_layers, top_k = experts.shape
        if num_layers < 1 or top_k < 1:
            check.fail(where, f"column 'experts': shape {experts.shape} has no layers or no top-k slots")
        if top_k > num_experts:
            check.fail(where, f"top_k ({top_k}) exceeds num_experts ({num_experts})")

        if seq_ids is None:
            seq_ids = np.zeros(num_tokens, dtype=np.int64)
        seq_ids = _as_int_array(where, "seq_id", seq_ids, np.int64, 1)
        if len(seq_ids) != num_tokens:
            check.fail(where, f"column 'seq_id': {len(seq_ids)} rows, expected {num_tokens} (one per token)")
        phases = _phase_codes(where, phases, num_tokens)
        if len(phases) != num_tokens:
            check.fail(where, f"column 'phase': {len(phases)} rows, expected {num_tokens}")

        if weights is not None:
            weights = np.asarray(weights)
            if weights.dtype.kind not in "fiu":
                check.fail(where, f"column 'weights': expected floats, got dtype {weights.dtype}")
            weights = np.ascontiguousarray(weights, dtype=np.float32)
            if weights.shape != experts.shape:
                check.fail(where, f"column 'weights': shape {weights.shape} != experts shape {experts.shape}")
        if predicted_experts is not None:
            predicted_experts = _as_int_array(where, "predicted_experts", predicted_experts, np.int16, 3)
            if predicted_experts.shape[:2] != (num_tokens, num_layers):
                check.fail(
                    where,
                    f"column 'predicted_experts': shape {predicted_experts.shape} does not start with "
                    f"({num_tokens}, {num_layers})",
                )
        if router_logits is not None:
            router_logits = np.asarray(router_logits)
            if router_logits.dtype.kind != "f":
                check.fail(where, f"column 'router_logits': expected floats, got dtype {router_logits.dtype}")
            router_logits = np.ascontiguousarray(router_logits, dtype=np.float16)
            if router_logits.shape != (num_tokens, num_layers, num_experts):
                check.fail(
                    where,
                    f"column 'router_logits': shape {router_logits.shape} != "
                    f"({num_tokens}, {num_layers}, {num_experts})",
                )

        if validate_values:
            check.check_expert_ids(where, "experts", experts, num_experts)
            if weights is not None:
                check.check_weights(where, weights)
            if predicted_experts is not None:
                check.check_expert_ids(where, "predicted_experts", predicted_experts, num_experts)

        order = _contiguous_order(seq_ids)
        if order is not None:
            seq_ids, experts, phases = seq_ids[order], experts[order], phases[order]
            weights = weights[order] if weights is not None else None
            predicted_experts = predicted_experts[order] if predicted_experts is not None else None
            router_logits = router_logits[order] if router_logits is not None else None
            if positions is not None:
                positions = np.asarray(positions)[order]
        offsets = _offsets(seq_ids)
        if positions is None:
            positions = np.arange(num_tokens, dtype=np.int32) - np.repeat(
                offsets[:-1], np.diff(offsets)
            ).astype(np.int32)
        positions = _as_int_array(where, "position", positions, np.int32, 1)
        if len(positions) != num_tokens:
            check.fail(where, f"column 'position': {len(positions)} rows, expected {num_tokens}")
        if validate_values:
            check.check_positions(where, seq_ids, positions, order)

        if moe_layers is None:
            moe_layers = tuple(range(num_layers))
        else:
            moe_layers = tuple(int(x) for x in moe_layers)
        if len(moe_layers) != num_layers:
            check.fail(where, f"moe_layers lists {len(moe_layers)} layers but experts has {num_layers}")
        if any(b <= a for a, b in zip(moe_layers, moe_layers[1:])) or (moe_layers and moe_layers[0] < 0):
            check.fail(where, f"moe_layers must be increasing non-negative layer indices, got {list(moe_layers)}")
        clash = sorted(set(metadata) & set(RESERVED_KEYS))
        if clash:
            check.fail(where, f"metadata key(s) {clash} are reserved; pass them as arguments")
        try:
            user_metadata = json.loads(json.dumps(dict(metadata), allow_nan=False))
        except (TypeError, ValueError) as exc:
            check.fail(where, f"metadata must be JSON-serialisable ({exc})")

        trace = object.__new__(cls)
        trace.experts = _readonly(experts)
        trace.weights = _readonly(weights) if weights is not None else None
        trace.seq_ids = _readonly(seq_ids)
        trace.positions = _readonly(positions)
        trace.phases = _readonly(phases)
        trace.predicted_experts = _readonly(predicted_experts) if predicted_experts is not None else None
        trace.router_logits = _readonly(router_logits) if router_logits is not None else None
        trace.num_experts = num_experts
        trace.model = None if model is None else str(model)
        trace.moe_layers = moe_layers
        trace._user_metadata = user_metadata
        trace._seq_offsets = _readonly(offsets)
        return trace

    # ------------------------------------------------------------------ shape
    @property
    def num_tokens(self) -> int:
        return int(self.experts.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.experts.shape[1])

    @property
    def top_k(self) -> int:
        return int(self.experts.shape[2])

    @property
    def seq_offsets(self) -> np.ndarray:
        """int64 ``[S+1]``: rows ``seq_offsets[i]:seq_offsets[i+1]`` are the i-th sequence."""
        return self._seq_offsets

    @property
    def num_sequences(self) -> int:
        return len(self._seq_offsets) - 1

    @property
    def sequence_ids(self) -> np.ndarray:
        """int64 ``[S]``: the id of each sequence, in trace order."""
        return self.seq_ids[self._seq_offsets[:-1]]

    @property
    def is_synthetic(self) -> bool:
        return bool(self._user_metadata.get("synthetic", False))

    @property
    def metadata(self) -> dict[str, Any]:
        """Everything written to the file header: shape, model, moe_layers and user metadata (a copy)."""
        header = copy.deepcopy(self._user_metadata)
        header.update(
            num_experts=self.num_experts,
            top_k=self.top_k,
            num_layers=self.num_layers,
            model=self.model,
            moe_layers=list(self.moe_layers),
        )
        return header

    def phase_counts(self) -> dict[str, int]:
        counts = np.bincount(self.phases, minlength=len(PHASES))
        return {name: int(counts[code]) for code, name in enumerate(PHASES)}

    # ------------------------------------------------------------------ views
    def sequences(self) -> Iterator[Trace]:
        """Yield one trace per sequence, in order."""
        for i in range(self.num_sequences):
            yield self._rows(slice(int(self._seq_offsets[i]), int(self._seq_offsets[i + 1])))

    def select(
        self,
        *,
        layers: Iterable[int] | int | None = None,
        seqs: Iterable[int] | int | None = None,
        phase: str | None = None,
    ) -> Trace:
        """A sub-trace: ``layers`` index this trace's MoE layers (0..L-1), ``seqs`` are sequence ids,
        ``phase`` is ``"prefill"`` or ``"decode"``."""
        rows = np.ones(self.num_tokens, dtype=bool)
        if seqs is not None:
            wanted = np.atleast_1d(np.asarray(list(seqs) if not np.isscalar(seqs) else [seqs], dtype=np.int64))
            missing = np.setdiff1d(wanted, self.sequence_ids)
            if len(missing):
                raise TraceError(f"trace: select(seqs=...): no sequence with id {int(missing[0])}")
            rows &= np.isin(self.seq_ids, wanted)
        if phase is not None:
            if phase not in PHASE_CODES:
                raise TraceError(f"trace: select(phase={phase!r}): use one of {', '.join(PHASES)}")
            rows &= self.phases == PHASE_CODES[phase]
        trace = self if rows.all() else self._rows(np.flatnonzero(rows))
        if layers is None:
            return trace
        index = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
        for layer in index:
            if not 0 <= int(layer) < self.num_layers:
                raise TraceError(
                    f"trace: select(layers=...): layer {layer} out of range; this trace has MoE layers "
                    f"0..{self.num_layers - 1} (model layers {list(self.moe_layers)})"
                )
        index = sorted(set(int(x) for x in index))
        return trace._replace(
            experts=trace.experts[:, index],
            weights=None if trace.weights is None else trace.weights[:, index],
            predicted_experts=None if trace.predicted_experts is None else trace.predicted_experts[:, index],
            router_logits=None if trace.router_logits is None else trace.router_logits[:, index],
            moe_layers=[trace.moe_layers[i] for i in index],
        )

    def with_metadata(self, **metadata: Any) -> Trace:
        """A copy with user metadata keys added or replaced."""
        merged = dict(self._user_metadata)
        merged.update(metadata)
        return self._replace(metadata=merged)

    def take(self, rows: slice | np.ndarray) -> Trace:
        """The trace restricted to ``rows`` (a slice, boolean mask or increasing row indices),
        every column and all metadata kept. Rows of one sequence must stay in order."""
        if isinstance(rows, np.ndarray) and rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if isinstance(rows, np.ndarray) and len(rows) > 1 and (np.diff(rows) <= 0).any():
            raise TraceError("trace: take(rows): row indices must be increasing (execution order)")
        return self._rows(rows)

    def _rows(self, rows: slice | np.ndarray) -> Trace:
        return self._replace(
            experts=self.experts[rows],
            weights=None if self.weights is None else self.weights[rows],
            predicted_experts=None if self.predicted_experts is None else self.predicted_experts[rows],
            router_logits=None if self.router_logits is None else self.router_logits[rows],
            seq_ids=self.seq_ids[rows],
            positions=self.positions[rows],
            phases=self.phases[rows],
        )

    def _replace(self, **changes: Any) -> Trace:
        fields = dict(
            experts=self.experts,
            num_experts=self.num_experts,
            seq_ids=self.seq_ids,
            positions=self.positions,
            phases=self.phases,
            weights=self.weights,
            model=self.model,
            moe_layers=self.moe_layers,
            predicted_experts=self.predicted_experts,
            router_logits=self.router_logits,
            metadata=self._user_metadata,
        )
        fields.update(changes)
        # Rows/columns of an already-validated trace: only structural checks are needed.
        return Trace._build("trace", fields.pop("experts"), validate_values=False, **fields)

    # ------------------------------------------------------------------ misc
    @classmethod
    def concat(cls, traces: Iterable[Trace]) -> Trace:
        """Join traces of the same shape (E, L, k, columns) one after another; seq ids must not clash."""
        traces = list(traces)
        if not traces:
            raise TraceError("trace: concat() needs at least one trace")
        first = traces[0]
        for i, other in enumerate(traces[1:], 1):
            if (other.num_experts, other.num_layers, other.top_k, other.moe_layers) != (
                first.num_experts,
                first.num_layers,
                first.top_k,
                first.moe_layers,
            ):
                raise TraceError(
                    f"trace: concat(): trace {i} has E={other.num_experts} L={other.num_layers} "
                    f"k={other.top_k}, trace 0 has E={first.num_experts} L={first.num_layers} k={first.top_k}"
                )
            for name in ("weights", "predicted_experts", "router_logits"):
                if (getattr(other, name) is None) != (getattr(first, name) is None):
                    raise TraceError(f"trace: concat(): column '{name}' is present in some traces only")
        ids = np.concatenate([t.sequence_ids for t in traces])
        if len(np.unique(ids)) != len(ids):
            raise TraceError("trace: concat(): sequence ids repeat across traces; renumber them first")

        def join(name: str) -> np.ndarray | None:
            if getattr(first, name) is None:
                return None
            return np.concatenate([getattr(t, name) for t in traces])

        return cls._build(
            "trace",
            join("experts"),
            num_experts=first.num_experts,
            seq_ids=join("seq_ids"),
            positions=join("positions"),
            phases=join("phases"),
            weights=join("weights"),
            model=first.model,
            moe_layers=first.moe_layers,
            predicted_experts=join("predicted_experts"),
            router_logits=join("router_logits"),
            metadata=first._user_metadata,
            validate_values=False,
        )

    def equals(self, other: Trace) -> bool:
        """Same arrays (bit for bit, NaN-safe) and same metadata."""
        if not isinstance(other, Trace) or self.metadata != other.metadata:
            return False
        for name in ("experts", "seq_ids", "positions", "phases", "weights", "predicted_experts", "router_logits"):
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                return False
            if a is not None and (a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes()):
                return False
        return True

    def __repr__(self) -> str:
        model = self.model or "unknown model"
        return (
            f"<Trace {model}: {self.num_tokens} tokens in {self.num_sequences} sequences, "
            f"{self.num_layers} MoE layers, E={self.num_experts}, k={self.top_k}"
            f"{', synthetic' if self.is_synthetic else ''}>"
        )


def _offsets(seq_ids: np.ndarray) -> np.ndarray:
    if len(seq_ids) == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(np.diff(seq_ids)) + 1
    return np.concatenate([[0], starts, [len(seq_ids)]]).astype(np.int64)
