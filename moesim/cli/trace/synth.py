"""``moesim trace synth OUT``: draw a synthetic routing trace from parameters or from a fit."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from moesim.errors import ConfigError

# Flag -> SynthParams field, and how to parse its text.
_INT_FLAGS = {
    "experts": "num_experts",
    "top_k": "top_k",
    "layers": "num_layers",
    "tokens": "tokens_per_sequence",
    "sequences": "num_sequences",
    "seed": "seed",
}
_FLOAT_FLAGS = {
    "skew": "popularity_skew",
    "tail": "popularity_tail",
    "persistence": "persistence",
    "cross_layer": "cross_layer",
    "sequence_affinity": "sequence_affinity",
}
_REQUIRED = ("experts", "top_k", "layers", "tokens")


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def parse_int(flag: str, text: str) -> int:
    """An integer option value; :class:`ConfigError` naming the flag otherwise."""
    try:
        return int(text, 10)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: expected an integer, got {text!r}") from None


def parse_float(flag: str, text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{flag}: expected a finite number, got {text!r}")
    return value


def read_json(path: Path, what: str) -> object:
    """Parse a JSON file; :class:`ConfigError` for a missing or malformed one."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} '{path}': cannot be read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} '{path}': not valid JSON ({exc.msg} at line {exc.lineno}); re-create it") from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="draw a synthetic routing trace (popularity, persistence, cross-layer, per-sequence preferences)",
        description=(
            "Write a synthetic trace to OUT (.parquet or .arrow, atomically). Give the shape and the "
            "routing parameters as options, or start from a fit (moesim trace fit --out FIT.json) with "
            "--from-fit and override any of them; --experts/--top-k/--layers then re-use the fitted "
            "routing statistics for another architecture (SynthParams.rescaled). Same options and "
            "seed give the same trace, bit for bit."
        ),
    )
    parser.add_argument("out", metavar="OUT", type=Path, help="output trace (.parquet or .arrow)")
    parser.add_argument("--from-fit", type=Path, metavar="FIT.json", help="parameters from `moesim trace fit --out`")
    shape = parser.add_argument_group("shape (required without --from-fit)")
    shape.add_argument("--experts", metavar="E", help="routed experts per MoE layer")
    shape.add_argument("--top-k", metavar="K", help="experts per token and layer")
    shape.add_argument("--layers", metavar="L", help="MoE layers")
    shape.add_argument("--tokens", metavar="N", help="tokens per sequence")
    shape.add_argument("--sequences", metavar="S", help="number of sequences (default 1)")
    routing = parser.add_argument_group("routing (defaults 0: uniform, independent)")
    routing.add_argument("--skew", metavar="S", help="popularity_skew in [0, 1): Zipf exponent of the head")
    routing.add_argument("--tail", metavar="T", help="popularity_tail in [0, 100]: thinning of the least used experts")
    routing.add_argument("--persistence", metavar="P", help="probability a slot reuses the previous token's expert")
    routing.add_argument("--cross-layer", metavar="C", help="probability a slot follows the previous layer's expert")
    routing.add_argument(
        "--sequence-affinity", metavar="A", help="in [0, 1): strength of each sequence's own expert preferences"
    )
    parser.add_argument("--seed", metavar="SEED", help="random seed, 0..2**64-1 (default 0)")
    parser.add_argument(
        "--phase", choices=("decode", "prefill"), help="phase recorded for every token (default decode)"
    )
    parser.add_argument("--model", metavar="NAME", help="model label written to the trace")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--json", action="store_true", help="print the parameters and the output as JSON")
    parser.set_defaults(func=run)


def synth_params(args: argparse.Namespace):
    """The :class:`SynthParams` the options describe."""
    import dataclasses

    from moesim.trace.synthetic import SynthParams
    from moesim.trace.synthetic.fitting import params_from_document

    given = {}
    for dest, field in _INT_FLAGS.items():
        if getattr(args, dest) is not None:
            given[field] = parse_int(flag_name(dest), getattr(args, dest))
    for dest, field in _FLOAT_FLAGS.items():
        if getattr(args, dest) is not None:
            given[field] = parse_float(flag_name(dest), getattr(args, dest))
    for name in ("phase", "model"):
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    flags = {field: flag_name(dest) for dest, field in {**_INT_FLAGS, **_FLOAT_FLAGS}.items()}
    try:
        if args.from_fit is None:
            missing = [flag_name(dest) for dest in _REQUIRED if getattr(args, dest) is None]
            if missing:
                raise ConfigError(
                    f"{', '.join(missing)}: required without --from-fit "
                    f"(e.g. --experts 32 --top-k 4 --layers 24 --tokens 512)"
                )
            return SynthParams(**given)
        params = params_from_document(read_json(args.from_fit, "fit file"), where=f"fit file '{args.from_fit}'")
        architecture = {k: given.pop(k) for k in ("num_experts", "top_k", "num_layers") if k in given}
        return dataclasses.replace(params.rescaled(**architecture), **given)
    except ConfigError as exc:
        # Name the option the user typed, not the dataclass field behind it.
        field, sep, rest = str(exc).partition(":")
        if sep and field in flags:
            raise ConfigError(f"{flags[field]}:{rest}") from None
        raise


def run(args: argparse.Namespace) -> int:
    from moesim.cli._common import print_json
    from moesim.cli.trace.convert import summary
    from moesim.trace.io import trace_format, write_trace
    from moesim.trace.synthetic import generate

    trace_format(args.out)  # refuse a bad extension before doing the work
    if args.out.exists() and not args.force:
        raise ConfigError(f"'{args.out}' exists; pass --force to replace it")
    params = synth_params(args)
    trace = generate(params)
    write_trace(trace, args.out)
    if args.json:
        print_json({"path": str(args.out), "params": params.to_dict(), "num_tokens": trace.num_tokens})
    else:
        print(f"wrote '{args.out}': {summary(trace)}")
    return 0
