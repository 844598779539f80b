"""GPT-OSS MoE expert-fingerprinting JSON (AmanPriyanshu/GPT-OSS-MoE-ExpertFingerprinting).

One JSON object per prompt::

    {"row_index": 15081, "dataset": "mmlu_test", "category": "high_school_chemistry",
     "finished_successfully": true, "has_repetition": false, "original_prompt": "...",
     "full_text": [...], "generated_only": [...],
     "router_data": [{"token_164": {"layer_0": {"selected_experts": [31, 21, 22, 6],
                                               "selected_probs": [0.508, 0.181, 0.161, 0.151]},
                                    ..., "layer_23": {...}}},
                     {"token_165": {...}}, ...]}

``router_data[i]`` is the routing of the i-th decode step (the forward pass that consumed the i-th
generated token); ``<pos>`` in ``token_<pos>`` is the absolute position, starting at the prompt
length and increasing by one. Experts are listed in descending router weight; ``selected_probs``
are the top-k softmax weights renormalised over the k. Prompt (prefill) routing is not recorded, so
every token of the trace is a decode token. Text fields are not imported.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import ConfigError, TraceError
from moesim.trace.importers.registry import option_int, register_importer, source_metadata
from moesim.trace.trace import Trace

FORMAT = "gptoss-json"
REPOSITORY = "https://github.com/AmanPriyanshu/GPT-OSS-MoE-ExpertFingerprinting"
LICENSE = "Apache-2.0"

# (routed experts per layer, MoE layers, top-k) from each model's Hugging Face config.json
# (num_local_experts, num_hidden_layers, num_experts_per_tok); every layer of GPT-OSS is MoE.
MODELS = {
    "openai/gpt-oss-20b": (32, 24, 4),
    "openai/gpt-oss-120b": (128, 36, 4),
}
DEFAULT_MODEL = "openai/gpt-oss-20b"

_TOKEN_KEY = re.compile(r"token_(\d+)")
_LAYER_KEY = re.compile(r"layer_(\d+)")
# Per-prompt provenance fields copied into the trace metadata, with their JSON types.
_PROVENANCE = {
    "dataset": str,
    "category": str,
    "row_index": int,
    "finished_successfully": bool,
    "has_repetition": bool,
}


def _shape(model: str | None, num_experts: object) -> tuple[str | None, int | None, int | None, int | None]:
    """(model, E, L, k) from the options; L and k are None when they must come from the file."""
    if model is None:
        if num_experts is None:
            model = DEFAULT_MODEL
        else:
            num_experts = option_int(FORMAT, "num_experts", num_experts, minimum=1)
            by_experts = [name for name, shape in MODELS.items() if shape[0] == num_experts]
            if not by_experts:
                raise ConfigError(
                    f"format '{FORMAT}': no known GPT-OSS model has {num_experts} experts per layer "
                    f"({', '.join(f'{n}: {s[0]}' for n, s in MODELS.items())}); pass model=NAME too"
                )
            model = by_experts[0]
    if model in MODELS:
        known_experts, num_layers, top_k = MODELS[model]
        if num_experts is None:
            num_experts = known_experts
        num_experts = option_int(FORMAT, "num_experts", num_experts, minimum=1)
        if num_experts != known_experts:
            raise ConfigError(
                f"format '{FORMAT}': {model} has {known_experts} experts per layer, not {num_experts}; "
                f"drop num_experts or pick the matching model"
            )
        return model, num_experts, num_layers, top_k
    if num_experts is None:
        raise ConfigError(
            f"format '{FORMAT}': model {model!r} is not one of {', '.join(MODELS)}; pass num_experts "
            f"(routed experts per layer) for it"
        )
    return model, option_int(FORMAT, "num_experts", num_experts, minimum=1), None, None


@dataclass
class _Prompt:
    """The routing of one prompt file, parsed and checked."""

    experts: np.ndarray
    weights: np.ndarray
    positions: np.ndarray
    info: dict[str, Any]


def _load_json(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise TraceError(
            f"file '{path}' line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); "
            f"the file is truncated or corrupt: re-download it"
        ) from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"file '{path}': not UTF-8 JSON ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TraceError(f"file '{path}': cannot be read ({exc.strerror})") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_prompt(path: Path, num_experts: int, num_layers: int | None, top_k: int | None) -> _Prompt:
    document = _load_json(path)
    where = f"file '{path}'"
    if not isinstance(document, dict):
        raise TraceError(f"{where}: expected a JSON object with 'router_data', got a JSON {type(document).__name__}")
    router_data = document.get("router_data")
    if not isinstance(router_data, list):
        found = "no 'router_data'" if router_data is None else f"'router_data' of type {type(router_data).__name__}"
        raise TraceError(
            f"{where}: {found}; a GPT-OSS fingerprinting file has 'router_data', a list of "
            f"{{\"token_<pos>\": {{\"layer_<i>\": ...}}}} entries"
        )
    if not router_data:
        raise TraceError(f"{where}: 'router_data' is empty (the prompt produced no decode step); remove the file")
    info: dict[str, Any] = {}
    for key, kind in _PROVENANCE.items():
        if key in document:
            value = document[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise TraceError(f"{where}: field '{key}' is {value!r}, expected a JSON {kind.__name__}")
            info[key] = value

    layer_names: list[str] | None = None
    experts_rows: list[list[int]] = []
    weight_rows: list[list[float]] = []
    first_position = 0
    for index, entry in enumerate(router_data):
        here = f"{where} router_data[{index}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise TraceError(f"{here}: expected an object with one key 'token_<pos>', got {_describe(entry)}")
        (token_key, layers), = entry.items()
        match = _TOKEN_KEY.fullmatch(token_key)
        if match is None:
            raise TraceError(f"{here}: key {token_key!r} is not 'token_<pos>'")
        position = int(match.group(1))
        if index == 0:
            first_position = position
        elif position != first_position + index:
            raise TraceError(
                f"{here}: {token_key} follows token_{first_position + index - 1}; positions must be "
                f"contiguous (expected token_{first_position + index})"
            )
        here = f"{where} router_data[{index}] {token_key}"
        if not isinstance(layers, dict):
            raise TraceError(f"{here}: expected an object of 'layer_<i>' entries, got {_describe(layers)}")
        if layer_names is None:
            layer_names = _layer_names(here, layers, num_layers)
            num_layers = len(layer_names)
        elif len(layers) != num_layers or any(name not in layers for name in layer_names):
            missing = [name for name in layer_names if name not in layers]
            extra = sorted(set(layers) - set(layer_names))
            detail = f"missing {', '.join(missing)}" if missing else f"unexpected {', '.join(extra)}"
            raise TraceError(f"{here}: {detail}; every token needs layer_0..layer_{num_layers - 1}")
        for name in layer_names:
            ids, probs = _parse_layer(f"{here} {name}", layers[name], num_experts, top_k)
            if top_k is None:
                top_k = len(ids)
            experts_rows.append(ids)
            weight_rows.append(probs)

    assert num_layers is not None and top_k is not None
    num_tokens = len(router_data)
    experts = np.asarray(experts_rows, dtype=np.int16).reshape(num_tokens, num_layers, top_k)
    weights = np.asarray(weight_rows, dtype=np.float32).reshape(num_tokens, num_layers, top_k)
    positions = np.arange(first_position, first_position + num_tokens, dtype=np.int64)
    info["prompt_tokens"] = first_position
    info["decode_tokens"] = num_tokens
    return _Prompt(experts, weights, positions, info)


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:4]}"
    return f"a JSON {type(value).__name__}"


def _layer_names(where: str, layers: dict[str, Any], num_layers: int | None) -> list[str]:
    indices = []
    for key in layers:
        match = _LAYER_KEY.fullmatch(key)
        if match is None:
            raise TraceError(f"{where}: key {key!r} is not 'layer_<i>'")
        indices.append(int(match.group(1)))
    expected = num_layers if num_layers is not None else len(indices)
    if sorted(indices) != list(range(expected)):
        missing = sorted(set(range(expected)) - set(indices))
        extra = sorted(set(indices) - set(range(expected)))
        detail = (
            f"missing {', '.join(f'layer_{i}' for i in missing)}" if missing
            else f"unexpected {', '.join(f'layer_{i}' for i in extra)}"
        )
        raise TraceError(f"{where}: {detail}; every token needs layer_0..layer_{expected - 1}")
    return [f"layer_{i}" for i in range(expected)]


def _parse_layer(where: str, record: object, num_experts: int, top_k: int | None) -> tuple[list[int], list[float]]:
    if not isinstance(record, dict):
        raise TraceError(
            f"{where}: expected an object with 'selected_experts' and 'selected_probs', got {_describe(record)}"
        )
    ids = record.get("selected_experts")
    probs = record.get("selected_probs")
    for name, value in (("selected_experts", ids), ("selected_probs", probs)):
        if not isinstance(value, list):
            found = "missing" if value is None else f"a JSON {type(value).__name__}"
            raise TraceError(f"{where}: '{name}' is {found}, expected a list")
    assert isinstance(ids, list) and isinstance(probs, list)
    if top_k is not None and len(ids) != top_k:
        raise TraceError(f"{where}: 'selected_experts' has {len(ids)} ids, expected {top_k} (the model's top-k)")
    if not ids:
        raise TraceError(f"{where}: 'selected_experts' is empty")
    if len(probs) != len(ids):
        raise TraceError(f"{where}: 'selected_probs' has {len(probs)} values for {len(ids)} experts")
    for slot, expert in enumerate(ids):
        if not _is_int(expert) or not 0 <= expert < num_experts:
            raise TraceError(
                f"{where}: selected_experts[{slot}] = {expert!r} is not an expert id 0..{num_experts - 1}; "
                f"if the model has more experts pass num_experts"
            )
    if len(set(ids)) != len(ids):
        raise TraceError(f"{where}: selected_experts {ids} repeats an expert; top-k experts are distinct")
    previous = math.inf
    for slot, prob in enumerate(probs):
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not math.isfinite(prob) or prob < 0:
            raise TraceError(f"{where}: selected_probs[{slot}] = {prob!r} is not a finite probability >= 0")
        if prob > previous:
            raise TraceError(
                f"{where}: selected_probs {probs} are not in descending order; the format lists "
                f"experts by descending router weight"
            )
        previous = prob
    return ids, probs


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    # Sorted by path components (directory-tree order, independent of the file system's listing).
    files = sorted((p for p in root.rglob("*.json") if p.is_file()), key=lambda p: p.relative_to(root).parts)
    if not files:
        raise TraceError(f"file '{root}': directory holds no *.json files")
    return files


@register_importer(FORMAT, suffixes=(".json",), directories=True)
def import_gptoss(path: Path, *, num_experts: int | None = None, model: str | None = None) -> Trace:
    """GPT-OSS MoE expert-fingerprinting JSON: one prompt per file, or a directory of them.

    Parameters
    ----------
    path : Path
        One ``*.json`` prompt file, or a directory searched recursively for ``*.json`` files,
        taken in sorted path order (one sequence each, sequence ids 0, 1, ...).
    num_experts : int, optional
        Routed experts per layer. Defaults to the model's (32 for ``openai/gpt-oss-20b``,
        128 for ``openai/gpt-oss-120b``); giving only ``num_experts=128`` selects the 120B model.
    model : str, optional
        Model name; default ``openai/gpt-oss-20b``. For the known GPT-OSS models the number of
        layers (24 / 36) and top-k (4) are checked on every token; for others they are taken from
        the first token and checked on the rest.

    Returns
    -------
    Trace
        Decode-phase trace with gate weights (``selected_probs``), positions from ``token_<pos>``,
        and metadata ``source``, ``license`` and ``repository`` (the dataset this format comes from;
        override them with ``metadata=`` for files you recorded yourself) plus ``sequences``: one
        record per sequence with ``seq_id``, ``file`` (relative to a directory input), ``dataset``,
        ``category``, ``row_index``, ``finished_successfully``, ``has_repetition``,
        ``prompt_tokens`` and ``decode_tokens``.

    Notes
    -----
    Data: A. Priyanshu, GPT-OSS MoE Expert Fingerprinting (Apache-2.0), recorded with forward hooks on
    each layer's router during greedy ``generate`` in Hugging Face transformers.
    """
    model, num_experts, num_layers, top_k = _shape(model, num_experts)
    assert num_experts is not None
    files = _files(path)
    prompts: list[_Prompt] = []
    for file in files:
        prompt = _parse_prompt(file, num_experts, num_layers, top_k)
        if prompts and prompt.experts.shape[1:] != prompts[0].experts.shape[1:]:
            raise TraceError(
                f"file '{file}': {prompt.experts.shape[1]} layers with top-{prompt.experts.shape[2]}, but "
                f"'{files[0]}' has {prompts[0].experts.shape[1]} layers with top-{prompts[0].experts.shape[2]}; "
                f"import files of one model together"
            )
        prompt.info = {"seq_id": len(prompts), "file": _relative(file, path), **prompt.info}
        prompts.append(prompt)
    num_layers = prompts[0].experts.shape[1]
    return Trace.from_arrays(
        np.concatenate([p.experts for p in prompts]),
        num_experts=num_experts,
        seq_ids=np.repeat(np.arange(len(prompts), dtype=np.int64), [len(p.positions) for p in prompts]),
        positions=np.concatenate([p.positions for p in prompts]),
        phases="decode",
        weights=np.concatenate([p.weights for p in prompts]),
        model=model,
        moe_layers=range(num_layers),
        source=source_metadata(FORMAT, path),
        license=LICENSE,
        repository=REPOSITORY,
        sequences=[p.info for p in prompts],
    )


def _relative(file: Path, root: Path) -> str:
    return file.name if file == root else file.relative_to(root).as_posix()
