"""Exception hierarchy.

Every error a user can cause (bad file, bad config value, bad argument) is a :class:`MoesimError`;
the CLI prints its message on one line and exits 2. Anything else escaping is a bug.
Messages name the file/field, what was found, what was expected and how to fix it.
"""

from __future__ import annotations


class MoesimError(Exception):
    """Base class of all user-facing errors."""


class TraceError(MoesimError, ValueError):
    """A trace (in memory or on disk) is malformed, unreadable or inconsistent."""


class ConfigError(MoesimError, ValueError):
    """A scenario, preset, option or argument value is invalid."""


class CaptureError(MoesimError):
    """Trace capture from a model cannot proceed."""


class SweepError(MoesimError):
    """A parameter sweep cannot proceed."""


class MissingExtraError(MoesimError, ImportError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, package: str, purpose: str):
        super().__init__(
            f"{purpose} needs the '{package}' package: install it with "
            f"pip install 'moesim[{extra}]'"
        )
        self.extra = extra
        self.package = package


def one_line(message: str) -> str:
    """Collapse a (possibly multi-line) message to one line for CLI output."""
    return " ".join(str(message).split())
