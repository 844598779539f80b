"""``moesim trace fit REAL``: fit the synthetic generator to a real trace and show what it captures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moesim.cli.trace.convert import add_input_arguments, read_input
from moesim.cli.trace.synth import parse_int
from moesim.errors import ConfigError

_ROUTING = ("popularity_skew", "popularity_tail", "sequence_affinity", "persistence", "cross_layer")
_SHAPE = ("num_experts", "top_k", "num_layers", "tokens_per_sequence", "num_sequences", "seed")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="estimate synthetic-trace parameters from a real trace; compare real and synthetic statistics",
        description=(
            "Fit moesim's synthetic routing process to REAL by the simulated method of moments: "
            "popularity head and tail (top-k share, load entropy), per-sequence preferences (entropy "
            "within sequences), persistence (previous-token reuse) and cross-layer predictability. "
            "Prints the parameters and a table of observed vs synthetic statistics on samples with "
            "the same sequence lengths, including ones the fit did not target (reuse over a window of "
            "tokens, LRU hit rates), so you see what the model captures and what it misses. "
            "--out writes a FIT.json for `moesim trace synth --from-fit`."
        ),
    )
    parser.add_argument("path", metavar="REAL", type=Path, help="the real trace (any importable format)")
    parser.add_argument("--out", type=Path, metavar="FIT.json", help="write the fit (parameters and diagnostics)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--json", action="store_true", help="print the fit as one JSON document")
    parser.add_argument("--phase", choices=("decode", "prefill"), help="tokens to fit (default: decode if any)")
    parser.add_argument("--max-tokens", metavar="N", default="16384", help="fit on at most N tokens (default 16384)")
    parser.add_argument("--seed", metavar="SEED", default="0", help="seed of the subsample and of the fit (default 0)")
    parser.add_argument("--per-layer", action="store_true", help="also print the statistics of every layer")
    add_input_arguments(parser)
    parser.set_defaults(func=run)


def render_text(path: Path, result, *, per_layer: bool) -> str:
    from moesim.cli._common import format_table

    params = result.params
    lines = [
        f"fit of '{path}' ({params.model}): {result.phase} tokens, {result.num_tokens_used} used in "
        f"{result.num_sequences_used} sequences; {result.method}",
        "",
        "parameters",
    ]
    width = max(len(name) for name in _ROUTING)
    lines += [f"  {name.ljust(width)}  {getattr(params, name):.4g}" for name in _ROUTING]
    lines.append("  " + ", ".join(f"{name} {getattr(params, name)}" for name in _SHAPE))
    lines += [
        "",
        "observed vs synthetic on the same sequence lengths (* = matched by the fit; sd = spread of the",
        "synthetic value over seeds: differences within about 2 sd are noise)",
    ]
    rows = [
        [
            row.statistic + ("*" if row.fitted else ""),
            row.observed,
            row.synthetic,
            f"{row.difference:+.4f}",
            f"{row.synthetic_sd:.4f}",
        ]
        for row in result.diagnostics()
    ]
    lines.append(format_table(["statistic", "observed", "synthetic", "difference", "sd"], rows))
    if per_layer:
        layers = [row for row in result.diagnostics(per_layer=True) if row.layer is not None]
        rows = [[row.statistic, row.layer, row.observed, row.synthetic, f"{row.difference:+.4f}"] for row in layers]
        lines += ["", format_table(["statistic", "layer", "observed", "synthetic", "difference"], rows, align="lrrrr")]
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from moesim.cli._common import print_json
    from moesim.trace.io import atomic_write_text
    from moesim.trace.synthetic.fitting import fit

    if args.out is not None:
        if args.out.suffix.lower() != ".json":
            raise ConfigError(f"--out '{args.out}': expected a .json file name, e.g. --out fit.json")
        if args.out.exists() and not args.force:
            raise ConfigError(f"'{args.out}' exists; pass --force to replace it")
    max_tokens = parse_int("--max-tokens", args.max_tokens)
    seed = parse_int("--seed", args.seed)
    trace = read_input(args)
    result = fit(trace, phase=args.phase, max_tokens=max_tokens, seed=seed, source_trace=str(args.path))
    document = {"path": str(args.path), **result.to_dict()}
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(document, indent=2, allow_nan=False) + "\n")
    if args.json:
        print_json(document)
    else:
        print(render_text(args.path, result, per_layer=args.per_layer))
        if args.out is not None:
            print(f"wrote '{args.out}'")
    return 0
