"""Parse human quantities into SI base units: bytes, bytes/second, seconds, FLOP/s.

`"24GiB"` -> 25769803776, `"32GB/s"` -> 32e9, `"10us"` -> 1e-05, `"82.6TFLOPS"` -> 8.26e13.
Decimal prefixes (k, M, G, T, P) are powers of 1000; binary ones (Ki, Mi, Gi, Ti) powers of 1024.
Plain numbers are taken as already in base units. Errors are :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import math
import re

from moesim.errors import ConfigError

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_QUANTITY = re.compile(r"^\s*" + _NUMBER + r"\s*([A-Za-z/µ]*)\s*$")
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}
# Sub-second units divide (5 / 1e6 == 5e-06 exactly, 5 * 1e-6 is not).
_PER_SECOND = {"ms": 1e3, "us": 1e6, "µs": 1e6, "ns": 1e9}


def _split(text: str, field: str, example: str) -> tuple[float, str]:
    match = _QUANTITY.match(text)
    if not match:
        raise ConfigError(f"{field}: expected a quantity like {example!r}, got {text!r}")
    return float(match.group(1)), match.group(2)


def _prefix(prefix: str, field: str, text: str, example: str) -> float:
    if prefix in _BINARY:
        return _BINARY[prefix]
    if prefix in _DECIMAL:
        return _DECIMAL[prefix]
    raise ConfigError(f"{field}: unknown unit prefix {prefix!r} in {text!r}; write it like {example!r}")


def _check(value: float, field: str, text: object, *, allow_zero: bool) -> float:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{field}: expected a {need} finite value, got {text!r}")
    return value


def parse_bytes(value: object, field: str = "value", *, allow_zero: bool = True) -> int:
    """Bytes from ``"24GiB"``, ``"1.5 GB"``, ``"512MiB"``, ``"4096B"`` or a number of bytes."""
    example = "24GiB"
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a size like {example!r}, got {value!r}")
    if isinstance(value, (int, float)):
        return int(_check(float(value), field, value, allow_zero=allow_zero))
    if not isinstance(value, str):
        raise ConfigError(f"{field}: expected a size like {example!r}, got {value!r}")
    number, unit = _split(value, field, example)
    if unit.endswith("B"):
        unit = unit[:-1]
    elif unit:
        raise ConfigError(f"{field}: expected a size in bytes like {example!r}, got {value!r}")
    result = number * _prefix(unit, field, value, example)
    return int(round(_check(result, field, value, allow_zero=allow_zero)))


def parse_rate(value: object, field: str = "value", *, allow_zero: bool = False) -> float:
    """Bytes per second from ``"32GB/s"``, ``"900 GiB/s"`` or a number of bytes/s."""
    example = "32GB/s"
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a rate like {example!r}, got {value!r}")
    if isinstance(value, (int, float)):
        return _check(float(value), field, value, allow_zero=allow_zero)
    if not isinstance(value, str):
        raise ConfigError(f"{field}: expected a rate like {example!r}, got {value!r}")
    number, unit = _split(value, field, example)
    if not unit.endswith("B/s"):
        raise ConfigError(f"{field}: expected a rate like {example!r}, got {value!r}")
    result = number * _prefix(unit[:-3], field, value, example)
    return _check(result, field, value, allow_zero=allow_zero)


def parse_duration(value: object, field: str = "value", *, allow_zero: bool = True) -> float:
    """Seconds from ``"10us"``, ``"1.5ms"``, ``"2s"``, ``"3min"`` or a number of seconds."""
    example = "10us"
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a duration like {example!r}, got {value!r}")
    if isinstance(value, (int, float)):
        return _check(float(value), field, value, allow_zero=allow_zero)
    if not isinstance(value, str):
        raise ConfigError(f"{field}: expected a duration like {example!r}, got {value!r}")
    number, unit = _split(value, field, example)
    if unit not in _TIME:
        raise ConfigError(
            f"{field}: unknown time unit {unit!r} in {value!r}; use one of {', '.join(_TIME)}"
        )
    seconds = number / _PER_SECOND[unit] if unit in _PER_SECOND else number * _TIME[unit]
    return _check(seconds, field, value, allow_zero=allow_zero)


def parse_flops(value: object, field: str = "value", *, allow_zero: bool = False) -> float:
    """FLOP/s from ``"82.6TFLOPS"``, ``"1.2 PFLOP/s"``, ``"500GFLOPS"`` or a number."""
    example = "82.6TFLOPS"
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a compute rate like {example!r}, got {value!r}")
    if isinstance(value, (int, float)):
        return _check(float(value), field, value, allow_zero=allow_zero)
    if not isinstance(value, str):
        raise ConfigError(f"{field}: expected a compute rate like {example!r}, got {value!r}")
    number, unit = _split(value, field, example)
    for suffix in ("FLOP/s", "FLOPS", "FLOPs", "flops"):
        if unit.endswith(suffix):
            result = number * _prefix(unit[: -len(suffix)], field, value, example)
            return _check(result, field, value, allow_zero=allow_zero)
    raise ConfigError(f"{field}: expected a compute rate like {example!r}, got {value!r}")


def format_bytes(num_bytes: float) -> str:
    """``25769803776`` -> ``'24.0 GiB'`` (binary prefixes, for display)."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_s: float) -> str:
    """``32e9`` -> ``'32.0 GB/s'`` (decimal prefixes, as link speeds are quoted)."""
    value = float(bytes_per_s)
    for unit in ("B/s", "kB/s", "MB/s", "GB/s", "TB/s"):
        if abs(value) < 1000 or unit == "TB/s":
            return f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``1.5e-3`` -> ``'1.50 ms'``."""
    value = float(seconds)
    if value != value:
        return "n/a"
    if value == 0:
        return "0 s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if abs(value) >= scale or unit == "ns":
            return f"{value / scale:.2f} {unit}"
    raise AssertionError("unreachable")
