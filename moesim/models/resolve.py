"""Turn a config value (preset name, table, or spec) into a :class:`ModelSpec`."""

from __future__ import annotations

from moesim import fields as F
from moesim.models.presets import get_model
from moesim.models.spec import ModelSpec


def model_from_config(value: object, where: str = "model") -> ModelSpec:
    """A :class:`ModelSpec` from what a scenario may write for its model.

    Accepts a spec, a preset name (``"mixtral-8x7b"``), a table naming a preset plus fields to
    override (``{"preset": "mixtral-8x7b", "top_k": 1}``), or a table of every field. Errors are
    :class:`~moesim.errors.ConfigError` s whose path starts with ``where``.
    """
    return F.resolve(
        value,
        where,
        spec_type=ModelSpec,
        example="mixtral-8x7b",
        get_preset=get_model,
        from_table=ModelSpec.from_dict,
        override=lambda base, changes, path: F.replace_checked(base, path, "model", changes),
    )
