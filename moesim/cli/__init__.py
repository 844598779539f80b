"""The ``moesim`` command line.

Each subcommand lives in its own module under ``moesim.cli`` and exposes
``register(subparsers) -> None``, adding a parser whose ``func(args) -> int`` runs it.
Modules are discovered, so adding a subcommand touches one file. A :class:`MoesimError` prints one
line to stderr and exits 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from moesim.errors import MoesimError, one_line


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, like every other moesim error (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from moesim import __version__

    parser = _Parser(
        prog="moesim",
        description="Trace-driven cache and memory-hierarchy simulator for Mixture-of-Experts inference.",
    )
    parser.add_argument("--version", action="version", version=f"moesim {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except MoesimError as exc:
        print(f"moesim: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moesim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
