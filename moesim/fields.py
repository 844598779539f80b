"""Field checks and mapping -> dataclass construction shared by all configuration (models, hardware, scenarios).

Every failure is a :class:`~moesim.errors.ConfigError` whose message starts with the dotted path of
the field (``model.top_k: expected 1..num_experts (64), got 0``). A spec class validates itself in
``__post_init__`` under its default prefix (``model``, ``gpu``, ...); :func:`build` constructs one
from a mapping (TOML, JSON, ``--set``) under any prefix and rewrites the path of errors to match.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, TypeVar

from moesim.errors import ConfigError

T = TypeVar("T")


def fail(path: str, message: str) -> NoReturn:
    raise ConfigError(f"{path}: {message}")


def check_int(
    path: str, value: object, *, minimum: int | None = None, maximum: int | None = None, expected: str | None = None
) -> int:
    """``value`` as an int within ``[minimum, maximum]``; integral floats (from JSON) are accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(path, f"expected {expected or 'an integer'}, got {value!r}")
    if not isinstance(value, numbers.Integral) and not (math.isfinite(float(value)) and float(value) == int(value)):
        fail(path, f"expected {expected or 'an integer'}, got {value!r}")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        if expected is None:
            if maximum is None:
                expected = f"an integer >= {minimum}"
            elif minimum is None:
                expected = f"an integer <= {maximum}"
            else:
                expected = f"an integer in {minimum}..{maximum}"
        fail(path, f"expected {expected}, got {value!r}")
    return number


def check_optional_int(path: str, value: object, *, minimum: int = 1) -> int | None:
    return None if value is None else check_int(path, value, minimum=minimum)


def check_bool(path: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    fail(path, f"expected true or false, got {value!r}")


def check_str(path: str, value: object, *, choices: Iterable[str] | None = None, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        fail(path, f"expected a non-empty string, got {value!r}")
    if choices is not None:
        options = tuple(choices)
        if value not in options:
            fail(path, f"expected one of {', '.join(options)}, got {value!r}")
    return value


def check_real(
    path: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    expected: str | None = None,
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        fail(path, f"expected {expected or 'a finite number'}, got {value!r}")
    number = float(value)
    too_low = minimum is not None and (number <= minimum if exclusive_minimum else number < minimum)
    too_high = maximum is not None and number > maximum
    if too_low or too_high:
        if expected is None:
            low = "" if minimum is None else (f"> {minimum:g}" if exclusive_minimum else f">= {minimum:g}")
            high = "" if maximum is None else f"<= {maximum:g}"
            expected = "a number " + " and ".join(part for part in (low, high) if part)
        fail(path, f"expected {expected}, got {value!r}")
    return number


def check_layer_indices(path: str, value: object, num_layers: int, *, allow_empty: bool = True) -> tuple[int, ...]:
    """A strictly increasing tuple of layer indices in ``0..num_layers-1``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        fail(path, f"expected a list of layer indices in 0..{num_layers - 1}, got {value!r}")
    layers = tuple(check_int(f"{path}[{i}]", item, minimum=0) for i, item in enumerate(value))
    if not layers and not allow_empty:
        fail(path, f"expected at least one layer index in 0..{num_layers - 1}, got an empty list")
    for i, layer in enumerate(layers):
        if layer >= num_layers:
            fail(
                path, f"layer {layer} at position {i} is >= num_layers ({num_layers}); indices run 0..{num_layers - 1}"
            )
        if i and layer <= layers[i - 1]:
            fail(path, f"expected strictly increasing layer indices, got {layers[i - 1]} then {layer} at position {i}")
    return layers


def set_field(obj: object, name: str, value: object) -> None:
    """Normalise a field of a frozen dataclass inside ``__post_init__``."""
    object.__setattr__(obj, name, value)


def rebase(exc: ConfigError, old_prefix: str, new_prefix: str) -> ConfigError:
    """The same error with its leading path ``old_prefix`` replaced by ``new_prefix``."""
    message = str(exc)
    if old_prefix != new_prefix and (message.startswith((old_prefix + ".", old_prefix + ":", old_prefix + "["))):
        message = new_prefix + message[len(old_prefix) :]
    return ConfigError(message)


def build(
    cls: type[T],
    data: object,
    where: str,
    *,
    default_prefix: str,
    convert: Mapping[str, Callable[[object, str], object]] | None = None,
) -> T:
    """Construct the frozen dataclass ``cls`` from a mapping, with dotted-path errors under ``where``.

    Unknown keys are errors (listing the valid ones); missing required fields are errors; values in
    ``convert`` are transformed first (``convert[name](value, path)``); lists become tuples.
    """
    if not isinstance(data, Mapping):
        fail(where, f"expected a table of fields, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in data if key not in fields]
    if unknown:
        fail(f"{where}.{unknown[0]}", f"unknown field; valid fields are {', '.join(fields)}")
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        fail(f"{where}.{missing[0]}", f"required field is missing (required: {', '.join(missing)})")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}"
        if convert and key in convert:
            value = convert[key](value, path)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise rebase(exc, default_prefix, where) from None


def replace_checked(obj: T, where: str, default_prefix: str, changes: Mapping[str, object]) -> T:
    """``dataclasses.replace`` with unknown-field errors under ``where`` and re-based messages."""
    fields = {f.name for f in dataclasses.fields(obj) if f.init}  # type: ignore[arg-type]
    for key in changes:
        if key not in fields:
            fail(f"{where}.{key}", f"unknown field; valid fields are {', '.join(sorted(fields))}")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in changes.items()}
    try:
        return dataclasses.replace(obj, **values)  # type: ignore[type-var]
    except ConfigError as exc:
        raise rebase(exc, default_prefix, where) from None


def resolve(
    value: object,
    where: str,
    *,
    spec_type: type[T],
    example: str,
    get_preset: Callable[..., T],
    from_table: Callable[[Mapping[str, Any], str], T],
    override: Callable[[T, Mapping[str, Any], str], T],
) -> T:
    """A spec from a config value: the spec itself, a preset name, a table naming a ``preset`` plus
    fields to override, or a table of every field. Errors name ``where``."""
    if isinstance(value, spec_type):
        return value
    if isinstance(value, str):
        return get_preset(value, field=where)
    if isinstance(value, Mapping):
        if "preset" in value:
            base = get_preset(value["preset"], field=f"{where}.preset")
            return override(base, {key: item for key, item in value.items() if key != "preset"}, where)
        return from_table(value, where)
    fail(where, f"expected a preset name such as {example!r} or a table of fields, got {value!r}")


def to_plain(value: object) -> object:
    """JSON-friendly copy of a (nested) spec: dataclasses -> dicts, tuples -> lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    return value
