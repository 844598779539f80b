"""Helpers shared by CLI subcommands: JSON output, tables, progress."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def print_json(data: Any) -> None:
    """Machine-readable output: one strict JSON document on stdout (NaN written as null)."""
    from moesim.jsonable import dumps

    sys.stdout.write(dumps(data) + "\n")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, align: str | None = None) -> str:
    """A plain-text table; ``align`` is one char per column, 'l' or 'r' (numbers right by default)."""
    rows = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    if align is None:
        align = "l" + "r" * (len(headers) - 1)
    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return "n/a" if value != value else f"{value:.4g}"
    return str(value)


def progress(iterable: Iterable, *, total: int | None = None, desc: str = "", enabled: bool | None = None):
    """Wrap an iterable with a progress bar on stderr when it is a terminal (tqdm if installed)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return _SimpleProgress(iterable, total, desc)
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)


class _SimpleProgress:
    """A one-line counter with elapsed time and ETA on stderr, for when tqdm is not installed."""

    def __init__(self, iterable: Iterable, total: int | None, desc: str):
        self.iterable, self.total, self.desc = iterable, total, desc

    def __iter__(self):
        started, width = time.monotonic(), 0
        for i, item in enumerate(self.iterable, 1):
            elapsed = time.monotonic() - started
            line = f"{self.desc} {i}/{self.total or '?'} [{_clock(elapsed)}"
            if self.total and i < self.total:
                line += f", ETA {_clock(elapsed / i * (self.total - i))}"
            line += "]"
            width = max(width, len(line))
            sys.stderr.write("\r" + line.ljust(width))
            sys.stderr.flush()
            yield item
        sys.stderr.write("\r" + " " * width + "\r")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
