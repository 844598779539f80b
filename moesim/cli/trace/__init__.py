"""``moesim trace ...``: inspect, validate, convert, generate, fit and capture routing traces.

Each sub-subcommand is a module here exposing ``register(subparsers)``; they are discovered.
"""

from __future__ import annotations

import importlib
import pkgutil


def register(subparsers) -> None:
    parser = subparsers.add_parser("trace", help="inspect, validate, convert, generate and capture traces")
    commands = parser.add_subparsers(dest="trace_command", metavar="TRACE_COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(commands)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
