"""``moesim trace convert IN OUT``: import a foreign trace (or re-encode a moesim one) to Parquet/Arrow.

Also home of the input options every ``moesim trace`` command that reads a trace shares
(``--from``, ``--num-experts``, ``--model``, ``--option``), so ``info`` and ``validate`` accept
any importable file too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say how to read a trace input (shared by convert, info, validate)."""
    from moesim.trace.importers import importer_names

    group = parser.add_argument_group("input format (for files that are not moesim traces)")
    group.add_argument(
        "--from",
        dest="input_format",
        metavar="FORMAT",
        help=f"input format: {', '.join(importer_names())} (default: from the file name)",
    )
    group.add_argument("--num-experts", type=int, metavar="E", help="routed experts per MoE layer of the model")
    group.add_argument("--model", metavar="NAME", help="model name (e.g. openai/gpt-oss-20b)")
    group.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another importer option, VALUE as JSON or text (e.g. -o phase=prefill, -o moe_layers=[1,3])",
    )


def parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    """``["a=1", "b=[1,2]", "c=text"]`` -> ``{"a": 1, "b": [1, 2], "c": "text"}`` (JSON where it parses)."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} phase=prefill")
        try:
            result[key] = json.loads(text)
        except json.JSONDecodeError:
            result[key] = text
    return result


def read_input(args: argparse.Namespace, path: Path | None = None, metadata: dict[str, Any] | None = None):
    """Read ``path`` (default ``args.path``) as the input options in ``args`` say; returns a Trace."""
    from moesim.trace.importers import import_trace

    options = parse_assignments(args.option, "--option")
    for name, value in (("num_experts", args.num_experts), ("model", args.model)):
        if value is not None:
            if name in options:
                raise ConfigError(f"--option {name}=... repeats --{name.replace('_', '-')}; give it once")
            options[name] = value
    if metadata:
        options["metadata"] = metadata
    return import_trace(path if path is not None else args.path, args.input_format, **options)


def summary(trace) -> str:
    """One line describing a trace's size and shape."""
    phases = ", ".join(f"{name} {count}" for name, count in trace.phase_counts().items() if count)
    return (
        f"{trace.num_tokens} tokens ({phases or 'none'}) in {trace.num_sequences} sequences, "
        f"{trace.num_layers} MoE layers, E={trace.num_experts}, k={trace.top_k}, "
        f"model {trace.model or 'unknown'}{', synthetic' if trace.is_synthetic else ''}"
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="import a foreign trace, or re-encode a trace, as Parquet or Arrow IPC",
        description=(
            "Read IN (a file, or a directory for formats that read one, e.g. gptoss-json) and write "
            "OUT as a moesim trace: .parquet (compressed, for storage) or .arrow (memory-mapped, for "
            "large traces). The write is atomic."
        ),
    )
    parser.add_argument("path", metavar="IN", type=Path, help="input file or directory")
    parser.add_argument("out", metavar="OUT", type=Path, help="output trace (.parquet or .arrow)")
    add_input_arguments(parser)
    parser.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add metadata to the trace, VALUE as JSON or text (e.g. --meta license=CC-BY-4.0)",
    )
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim.trace.io import trace_format, write_trace

    trace_format(args.out)  # refuse a bad extension before doing the work
    if args.out.exists() and not args.force:
        raise ConfigError(f"'{args.out}' exists; pass --force to replace it")
    if args.out.resolve() == args.path.resolve():
        raise ConfigError(f"'{args.out}' is also the input; write to another file")
    metadata = parse_assignments(args.meta, "--meta")
    trace = read_input(args, metadata=metadata)
    write_trace(trace, args.out)
    print(f"wrote '{args.out}': {summary(trace)}")
    return 0
