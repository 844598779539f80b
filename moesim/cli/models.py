"""``moesim models [NAME]``: the MoE model presets, or one model's derived sheet."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moesim.cli._common import format_table, print_json

DEFAULT_CONTEXTS = (1, 4096, 32768)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list MoE model presets, or show one model's parameters, bytes, FLOPs and KV cache",
        description=(
            "Without NAME: one row per preset (experts E, top-k, MoE layers, total and active parameters, "
            "one routed expert's and the whole model's bytes in its default formats). With NAME: the full "
            "derived sheet: structure, parameters by component, bytes per weight format, FLOPs per decoded "
            "token and KV-cache bytes at several context lengths."
        ),
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="a preset name, e.g. mixtral-8x7b")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--context",
        type=int,
        nargs="+",
        default=list(DEFAULT_CONTEXTS),
        metavar="N",
        help=f"context lengths for FLOPs and KV bytes (default {' '.join(map(str, DEFAULT_CONTEXTS))})",
    )
    parser.add_argument("--formats", action="store_true", help="list the weight formats and their bits per parameter")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim.errors import ConfigError
    from moesim.models import get_model, list_models

    if any(c < 0 for c in args.context):
        raise ConfigError(f"--context: expected non-negative token counts, got {args.context}")
    if args.formats:
        rows = formats_table()
        if args.json:
            print_json(rows)
        else:
            _print(
                format_table(
                    ["format", "bits/param", "compute", "layout"],
                    [[r["name"], f"{r['bits_per_param']:.4g}", r["compute_dtype"], r["description"]] for r in rows],
                    align="lrll",
                )
            )
        return 0
    if args.name is None:
        specs = [get_model(name) for name in list_models()]
        if args.json:
            print_json([spec.summary() for spec in specs])
        else:
            _print(preset_table(specs))
        return 0
    spec = get_model(args.name, field="NAME")
    sheet = model_sheet(spec, args.context)
    if args.json:
        print_json(sheet)
    else:
        _print(render_sheet(sheet))
    return 0


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")


def params_text(count: float) -> str:
    """``46_702_792_704`` -> ``'46.70B'`` (M and K below a billion and a million)."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}" if unit == "B" else f"{count / scale:.1f}{unit}"
    return f"{count:.0f}"


def flops_text(flops: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.0f} FLOP"


def formats_table() -> list[dict[str, Any]]:
    from moesim.models import get_format, list_formats

    out = []
    for name in list_formats():
        fmt = get_format(name)
        out.append(
            {
                "name": name,
                "bits_per_param": fmt.bits_per_param(),
                "compute_dtype": fmt.compute_dtype,
                "description": fmt.description,
                "reference": fmt.reference,
            }
        )
    return out


def preset_table(specs) -> str:
    from moesim.units import format_bytes

    rows = []
    for spec in specs:
        s = spec.summary()
        rows.append(
            [
                s["name"],
                s["num_experts"],
                s["top_k"],
                f"{s['num_moe_layers']}/{s['num_layers']}",
                params_text(s["total_params"]),
                params_text(s["active_params"]),
                s["expert_format"],
                format_bytes(s["expert_bytes"]),
                format_bytes(s["total_bytes"]),
            ]
        )
    headers = ["model", "E", "k", "MoE layers", "total", "active", "expert fmt", "expert", "model bytes"]
    return format_table(headers, rows, align="lrrrrrlrr")


def _attention_text(spec) -> str:
    if spec.uses_mla:
        q = f"q_lora {spec.q_lora_rank}" if spec.q_lora_rank else "direct q"
        return (
            f"MLA, {spec.num_heads} heads, kv_lora {spec.kv_lora_rank} + rope {spec.qk_rope_head_dim}, "
            f"{q}, nope {spec.qk_nope_head_dim}, v {spec.v_head_dim}"
        )
    kind = "MHA" if spec.effective_num_kv_heads == spec.num_heads else "GQA"
    return f"{kind}, {spec.num_heads} q / {spec.effective_num_kv_heads} kv heads x {spec.effective_head_dim}"


def model_sheet(spec, contexts) -> dict[str, Any]:
    """Everything ``moesim models NAME`` shows, as JSON-friendly data."""
    from moesim.models import list_formats

    params = spec.param_counts
    formats = []
    for name in list_formats():
        expert = spec.expert_bytes(name)
        formats.append(
            {
                "format": name,
                "expert_bytes": expert,
                "expert_bits_per_param": 8 * expert / spec.expert_params,
                "non_expert_bytes": spec.non_expert_bytes(name),
                "total_bytes": spec.total_bytes(name, name),
            }
        )
    flops = [spec.flops_per_token(c).as_dict() for c in contexts]
    kv = [{"context_len": c, "bf16": spec.kv_bytes(c, "bf16"), "fp8": spec.kv_bytes(c, "fp8")} for c in contexts]
    return {
        "spec": spec.to_dict(),
        "structure": {
            "attention": _attention_text(spec),
            "moe_layers": list(spec.moe_layers),
            "num_moe_layers": spec.num_moe_layers,
            "mamba_layers": list(spec.mamba_layers),
            "sliding_layers": list(spec.sliding_layers),
            "sliding_window": spec.sliding_window,
        },
        "params": {
            **params.as_dict(),
            "expert": spec.expert_params,
            "shared_experts_per_layer": spec.shared_expert_params,
            "active": spec.active_params,
            "active_without_embedding": spec.active_params_without_embedding,
            "published_total": spec.published_total_params,
            "published_active": spec.published_active_params,
        },
        "default_formats": {
            "weight": spec.weight_format,
            "expert": spec.default_expert_format,
            "embedding": spec.embedding_format,
        },
        "bytes": {
            "expert": spec.expert_bytes(),
            "shared_experts_per_layer": spec.shared_expert_bytes(),
            "non_expert": spec.non_expert_bytes(),
            "total": spec.total_bytes(),
            "by_component": spec.byte_counts().as_dict(),
            "per_format": formats,
        },
        "flops_per_token": flops,
        "expert_flops_per_token": spec.expert_flops_per_token,
        "kv_bytes_per_token": {"bf16": spec.kv_bytes_per_token("bf16"), "fp8": spec.kv_bytes_per_token("fp8")},
        "kv_bytes_per_sequence": kv,
    }


def render_sheet(sheet: dict[str, Any]) -> str:
    from moesim.units import format_bytes

    spec, st, p, b = sheet["spec"], sheet["structure"], sheet["params"], sheet["bytes"]
    fmts = sheet["default_formats"]
    lines = [f"{spec['name']}  ({spec['hf_repo'] or 'custom'}; {spec['architecture'] or 'moe'})"]
    shared = (
        f", {spec['num_shared_experts']} shared x {spec['shared_expert_ffn_size']}"
        if spec["num_shared_experts"]
        else ""
    )
    lines += [
        (
            f"  layers        {spec['num_layers']} ({st['num_moe_layers']} MoE), hidden {spec['hidden_size']}, "
            f"vocab {spec['vocab_size']}"
        ),
        f"  experts       E={spec['num_experts']}, top-{spec['top_k']}, ffn {spec['expert_ffn_size']}"
        f"{' gated' if spec['gated_ffn'] else ''}{shared}"
        + (f", dense ffn {spec['dense_ffn_size']}" if spec["dense_ffn_size"] else ""),
        f"  router        {spec['router_scoring']}"
        + (
            f", {spec['router_num_groups']} groups / best {spec['router_topk_groups']}"
            if spec["router_num_groups"] > 1
            else ""
        ),
        f"  attention     {st['attention']}"
        + (f"; window {st['sliding_window']} on {len(st['sliding_layers'])} layers" if st["sliding_layers"] else ""),
    ]
    if st["mamba_layers"]:
        lines.append(
            f"  mamba         {len(st['mamba_layers'])} layers (d_state {spec['mamba_d_state']}, "
            f"expand {spec['mamba_expand']})"
        )
    published = ""
    if p["published_total"]:
        published = f"  (published {params_text(p['published_total'])}"
        published += f" / {params_text(p['published_active'])})" if p["published_active"] else ")"
    lines += [
        (
            f"  parameters    total {params_text(p['total'])}, active {params_text(p['active'])} "
            f"({params_text(p['active_without_embedding'])} without the embedding){published}"
        ),
        f"  formats       weights {fmts['weight']}, experts {fmts['expert']}, embeddings {fmts['embedding']}",
        (
            f"  bytes         expert {format_bytes(b['expert'])}, non-expert {format_bytes(b['non_expert'])}, "
            f"total {format_bytes(b['total'])}"
        ),
        "",
        "parameters and bytes by component (default formats)",
    ]
    comp = [k for k in b["by_component"] if k not in ("non_expert", "total") and p[k]]
    lines.append(
        format_table(
            ["component", "params", "bytes"], [[k, params_text(p[k]), format_bytes(b["by_component"][k])] for k in comp]
        )
    )
    lines += ["", "bytes per weight format (all matrices in that format; embeddings stay as configured)"]
    lines.append(
        format_table(
            ["format", "bits/param", "expert", "non-expert", "total"],
            [
                [
                    f["format"],
                    f"{f['expert_bits_per_param']:.4g}",
                    format_bytes(f["expert_bytes"]),
                    format_bytes(f["non_expert_bytes"]),
                    format_bytes(f["total_bytes"]),
                ]
                for f in b["per_format"]
            ],
            align="lrrrr",
        )
    )
    lines += ["", f"FLOPs per decoded token (one routed expert: {flops_text(sheet['expert_flops_per_token'])})"]
    keys = [
        "attention_projections",
        "attention_scores",
        "mamba",
        "dense_ffn",
        "shared_experts",
        "routed_experts",
        "router",
        "lm_head",
        "total",
    ]
    flops = sheet["flops_per_token"]
    lines.append(
        format_table(
            ["component", *[f"ctx {f['context_len']}" for f in flops]],
            [[k, *[flops_text(f[k]) if f[k] else "-" for f in flops]] for k in keys],
        )
    )
    kv = sheet["kv_bytes_per_token"]
    lines += [
        "",
        (
            f"KV cache: {format_bytes(kv['bf16'])} per token in bf16 ({format_bytes(kv['fp8'])} in fp8), "
            f"before sliding-window caps"
        ),
    ]
    lines.append(
        format_table(
            ["context", "bf16", "fp8"],
            [
                [r["context_len"], format_bytes(r["bf16"]), format_bytes(r["fp8"])]
                for r in sheet["kv_bytes_per_sequence"]
            ],
        )
    )
    return "\n".join(lines)
