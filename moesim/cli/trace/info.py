"""``moesim trace info PATH``: what a trace holds, and the routing statistics that drive caching."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from moesim.cli._common import format_table, print_json
from moesim.cli.trace.convert import add_input_arguments, read_input

# Metadata keys shown in the text header when present (everything is in --json).
_PROVENANCE_KEYS = ("source", "license", "repository", "commit")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="shape, provenance, expert popularity and token-to-token reuse of a trace",
        description=(
            "Summarise a trace: model, experts per layer (E), top-k, MoE layers, sequences, tokens by "
            "phase, optional columns, provenance; then per layer the expert popularity (share of the "
            "most popular expert, entropy normalised by log E, coefficient of variation of the "
            "counts, LB = SD of activation frequencies as in Liang et al. 2025) and the fraction of a "
            "token's experts the previous token of its sequence also used, beside the uniform-random "
            "expectation."
        ),
    )
    parser.add_argument("path", metavar="PATH", type=Path, help="trace file (any importable format)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    add_input_arguments(parser)
    parser.set_defaults(func=run)


def trace_info(trace) -> dict[str, Any]:
    """Everything ``info`` reports, as plain JSON-ready data."""
    from moesim.trace.stats import expert_popularity, previous_token_reuse

    popularity = expert_popularity(trace)
    reuse = previous_token_reuse(trace)
    routed = int(popularity.counts.sum())
    layers = []
    for index in range(trace.num_layers):
        layers.append(
            {
                "layer": index,
                "model_layer": trace.moe_layers[index],
                "top_expert": int(popularity.top_expert[index]),
                "top_share": float(popularity.top_share[index]),
                "entropy": float(popularity.entropy[index]),
                "cv": float(popularity.cv[index]),
                "load_balance": float(popularity.load_balance[index]),
                "unused_experts": int(popularity.unused[index]),
                "reuse": float(reuse.per_layer[index]),
                "reuse_uniform": float(reuse.uniform_per_layer[index]),
            }
        )
    metadata = trace.metadata
    return {
        "model": trace.model,
        "num_experts": trace.num_experts,
        "top_k": trace.top_k,
        "num_layers": trace.num_layers,
        "moe_layers": list(trace.moe_layers),
        "num_sequences": trace.num_sequences,
        "num_tokens": trace.num_tokens,
        "tokens_by_phase": trace.phase_counts(),
        "routed_slots": routed,
        "empty_slots": int(trace.experts.size) - routed,
        "columns": {
            "weights": trace.weights is not None,
            "predicted_experts": trace.predicted_experts is not None,
            "router_logits": trace.router_logits is not None,
        },
        "synthetic": trace.is_synthetic,
        "metadata": {k: v for k, v in metadata.items() if k not in _SHAPE_KEYS},
        "layers": layers,
        "overall": {
            "top_share_mean": _mean(popularity.top_share),
            "entropy_mean": _mean(popularity.entropy),
            "cv_mean": _mean(popularity.cv),
            "load_balance_model": popularity.load_balance_model,
            "unused_experts": int(popularity.unused.sum()),
            "reuse": reuse.overall,
            "reuse_uniform": reuse.uniform,
            "reuse_lift": reuse.lift,
        },
    }


_SHAPE_KEYS = ("num_experts", "top_k", "num_layers", "model", "moe_layers")


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _layer_span(layers: list[int]) -> str:
    if layers and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))


def _provenance(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"format", "file"}:
        return f"{value['format']} '{value['file']}'"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def render_text(path: Path, info: dict[str, Any]) -> str:
    phases = ", ".join(f"{name} {count}" for name, count in info["tokens_by_phase"].items())
    columns = ", ".join(f"{name} {'yes' if present else 'no'}" for name, present in info["columns"].items())
    empty = f" ({info['empty_slots']} empty slots)" if info["empty_slots"] else ""
    header = [
        ("trace", str(path)),
        ("model", info["model"] or "unknown"),
        ("experts", f"E={info['num_experts']} per MoE layer, top-k {info['top_k']}"),
        ("MoE layers", f"{info['num_layers']} (model layers {_layer_span(info['moe_layers'])})"),
        ("sequences", str(info["num_sequences"])),
        ("tokens", f"{info['num_tokens']} ({phases})"),
        ("routed slots", f"{info['routed_slots']}{empty}"),
        ("columns", columns),
        ("synthetic", "yes" if info["synthetic"] else "no"),
    ]
    metadata = info["metadata"]
    header += [(key, _provenance(metadata[key])) for key in _PROVENANCE_KEYS if key in metadata]
    others = sorted(set(metadata) - set(_PROVENANCE_KEYS) - {"synthetic"})
    if others:
        header.append(("metadata", f"{', '.join(others)} (see --json)"))
    width = max(len(name) for name, _ in header)
    lines = [f"{name.ljust(width)}  {value}" for name, value in header]

    overall = info["overall"]
    rows = [
        [
            row["layer"],
            row["model_layer"],
            row["top_expert"],
            row["top_share"],
            row["entropy"],
            row["cv"],
            row["load_balance"],
            row["unused_experts"],
            row["reuse"],
            row["reuse_uniform"],
        ]
        for row in info["layers"]
    ]
    rows.append(
        [
            "all",
            "",
            "",
            overall["top_share_mean"],
            overall["entropy_mean"],
            overall["cv_mean"],
            overall["load_balance_model"],
            overall["unused_experts"],
            overall["reuse"],
            overall["reuse_uniform"],
        ]
    )
    table = format_table(
        ["layer", "model_layer", "top_expert", "top_share", "entropy", "cv", "LB", "unused", "reuse", "uniform"],
        rows,
    )
    lines += [
        "",
        "Per MoE layer: top_share = most popular expert's share of routed slots (uniform 1/E); entropy",
        "normalised by log E (uniform 1); cv = SD/mean of expert counts; LB = SD of activation",
        "frequencies (Liang et al. 2025; 'all' = over every expert of every layer); reuse = fraction of",
        "a token's experts the previous token of its sequence also used; uniform = its expectation under",
        "independent uniform routing (k/E). The 'all' row averages layers, except LB and reuse (pooled).",
        "",
        table,
        "",
    ]
    if overall["reuse"] == overall["reuse"]:  # not NaN: some token has a predecessor
        lines.append(
            f"reuse {overall['reuse']:.4f} vs uniform {overall['reuse_uniform']:.4f}: "
            f"{overall['reuse_lift']:.2f}x the temporal locality of independent routing"
        )
    else:
        lines.append("reuse: no token has a previous token in its sequence")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    trace = read_input(args)
    info = trace_info(trace)
    if args.json:
        print_json({"path": str(args.path), **info})
    else:
        print(render_text(args.path, info))
    return 0
