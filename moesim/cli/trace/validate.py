"""``moesim trace validate PATH``: check a trace file completely; exit 0 and one line, or exit 2."""

from __future__ import annotations

import argparse
from pathlib import Path

from moesim.cli.trace.convert import add_input_arguments, read_input, summary


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a trace (format version, columns, dtypes, every value); exit 2 on the first problem",
        description=(
            "Read PATH with every check on: format version, columns and dtypes, expert ids in range "
            "and distinct per token and layer, finite non-negative weights, positions increasing "
            "within each sequence. Foreign formats (--from) are checked as their importer reads them. "
            "Prints one line; exits 0 if valid, 2 with the first problem otherwise."
        ),
    )
    parser.add_argument("path", metavar="PATH", type=Path, help="trace file (or directory for --from gptoss-json)")
    add_input_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    trace = read_input(args)
    print(f"'{args.path}': valid: {summary(trace)}")
    return 0
