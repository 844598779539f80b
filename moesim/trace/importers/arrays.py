"""NumPy arrays of routed experts: ``.npy`` holding ``[T, L, k]`` ids, or ``.npz`` with named columns.

``[T, L, k]`` (tokens x MoE layers x top-k, expert ids in descending router score, -1 for an
empty slot) is the shape in which vLLM returns a request's routed experts, so a capture from a
serving engine is one ``np.save`` away from a trace. An ``.npz`` may add per-token columns:

=========== ========================== ==============================================
key         shape                      meaning
=========== ========================== ==============================================
experts     ``[T, L, k]`` integers     required
weights     ``[T, L, k]`` floats       gate weights of those experts
seq_ids     ``[T]`` integers           sequence of each token (default: one sequence)
positions   ``[T]`` integers           position in its sequence (default 0, 1, ...)
phases      ``[T]`` codes or names     0/"prefill" or 1/"decode"
=========== ========================== ==============================================
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from moesim.errors import ConfigError, TraceError
from moesim.trace.importers.registry import (
    option_int,
    register_importer,
    require_num_experts,
    source_metadata,
)
from moesim.trace.schema import PHASE_CODES, PHASES
from moesim.trace.trace import Trace

NPZ_KEYS = ("experts", "weights", "seq_ids", "positions", "phases")


def _load(path: Path, fmt: str) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if fmt == "npy":
            if not isinstance(loaded, np.ndarray):
                raise TraceError(f"file '{path}': holds several arrays (an .npz archive); import it with format 'npz'")
            return {"experts": loaded}
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise TraceError(f"file '{path}': holds a single array, not an .npz archive; import it with format 'npy'")
        with loaded:
            unknown = sorted(set(loaded.files) - set(NPZ_KEYS))
            if unknown:
                raise TraceError(
                    f"file '{path}': unknown array(s) {', '.join(map(repr, unknown))}; an .npz trace holds "
                    f"{', '.join(NPZ_KEYS)} (save with np.savez(path, experts=..., ...))"
                )
            if "experts" not in loaded.files:
                raise TraceError(
                    f"file '{path}': no 'experts' array (found {', '.join(loaded.files) or 'none'}); "
                    f"save the [tokens, layers, top_k] expert ids with np.savez(path, experts=ids)"
                )
            return {name: loaded[name] for name in loaded.files}
    except TraceError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise TraceError(
                f"file '{path}': holds Python objects (a pickled array); save plain numeric arrays"
            ) from None
        raise TraceError(f"file '{path}': cannot be read as {fmt} ({exc}); the file is truncated or corrupt") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise TraceError(f"file '{path}': cannot be read as {fmt} ({exc}); the file is truncated or corrupt") from None


def _import(
    path: Path,
    fmt: str,
    *,
    num_experts: int | None,
    model: str | None,
    moe_layers: list[int] | None,
    phase: str | None,
    prompt_tokens: int | None,
) -> Trace:
    arrays = _load(path, fmt)
    experts = arrays["experts"]
    if experts.ndim != 3:
        raise TraceError(
            f"file '{path}': array 'experts' has shape {experts.shape}, expected [tokens, layers, top_k]; "
            f"add the missing axis (e.g. ids[:, None, :] for a single layer)"
        )
    if experts.size and not np.issubdtype(experts.dtype, np.integer):
        raise TraceError(f"file '{path}': array 'experts' has dtype {experts.dtype}, expected integer expert ids")
    largest = int(experts.max()) if experts.size else -1
    num_experts = require_num_experts(fmt, path, num_experts, largest)

    if phase is not None and phase not in PHASE_CODES:
        raise ConfigError(f"format '{fmt}': option 'phase' must be one of {', '.join(PHASES)}, got {phase!r}")
    given = [name for name, value in (("phase", phase), ("prompt_tokens", prompt_tokens)) if value is not None]
    if "phases" in arrays:
        given.insert(0, "the file's 'phases' array")
    if len(given) > 1:
        raise ConfigError(f"format '{fmt}': {' and '.join(given)} both set the phases of '{path}'; use one")
    phases: object = arrays.get("phases", phase)
    seq_ids = arrays.get("seq_ids")
    if prompt_tokens is not None:
        prompt_tokens = option_int(fmt, "prompt_tokens", prompt_tokens, minimum=0)
        phases = _prompt_phases(seq_ids, len(experts), prompt_tokens)

    try:
        return Trace.from_arrays(
            experts,
            num_experts=num_experts,
            seq_ids=seq_ids,
            positions=arrays.get("positions"),
            phases=phases,
            weights=arrays.get("weights"),
            model=model,
            moe_layers=moe_layers,
            source=source_metadata(fmt, path),
        )
    except TraceError as exc:
        # The Trace names the column and token; say which file it came from.
        message = str(exc).removeprefix("trace: ")
        raise TraceError(f"file '{path}': {message}") from None


def _prompt_phases(seq_ids: np.ndarray | None, num_tokens: int, prompt_tokens: int) -> np.ndarray:
    """Prefill for the first ``prompt_tokens`` rows of each sequence (in file order), decode after."""
    if seq_ids is None or len(seq_ids) != num_tokens:
        rank = np.arange(num_tokens)
    else:
        seq_ids = np.asarray(seq_ids)
        _, inverse = np.unique(seq_ids, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        rank = np.empty(num_tokens, dtype=np.int64)
        counts = np.bincount(inverse)
        rank[order] = np.arange(num_tokens) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.where(rank < prompt_tokens, PHASE_CODES["prefill"], PHASE_CODES["decode"]).astype(np.int8)


_OPTIONS_DOC = """
    Parameters
    ----------
    path : Path
        The file.
    num_experts : int
        Routed experts per MoE layer of the model. Required: the largest id in the file is only a
        lower bound, and a wrong E changes every hit rate and baseline.
    model : str, optional
        Model name for the metadata.
    moe_layers : list of int, optional
        Model-layer index of each of the L layers (default 0..L-1).
    phase : {"prefill", "decode"}, optional
        Phase of every token when the file has no ``phases`` (default "decode").
    prompt_tokens : int, optional
        Instead: the first ``prompt_tokens`` rows of each sequence are prefill, the rest decode
        (vLLM returns the prompt's routing followed by the generated tokens').

    Returns
    -------
    Trace
        Validated; metadata ``source`` names the format and file.
"""


def _register(fmt: str, summary: str):
    """Register the importer of ``fmt`` (npy and npz differ only in what the file may hold)."""

    @register_importer(fmt, suffixes=(f".{fmt}",))
    def importer(
        path: Path,
        *,
        num_experts: int | None = None,
        model: str | None = None,
        moe_layers: list[int] | None = None,
        phase: str | None = None,
        prompt_tokens: int | None = None,
    ) -> Trace:
        return _import(path, fmt, num_experts=num_experts, model=model, moe_layers=moe_layers, phase=phase,
                       prompt_tokens=prompt_tokens)

    importer.__name__ = importer.__qualname__ = f"import_{fmt}"
    importer.__doc__ = f"{summary}\n{_OPTIONS_DOC}"
    return importer


import_npy = _register("npy", "A .npy array [tokens, layers, top_k] of expert ids (one sequence).")
import_npz = _register(
    "npz", "A .npz archive: 'experts' [tokens, layers, top_k] plus optional weights, seq_ids, positions, phases."
)
