"""Frozen hardware descriptions: GPU, host CPU and DRAM, SSD, links, and the machine tying them.

Sizes are int bytes, rates float bytes/s or FLOP/s, times float seconds. Every quantity also
accepts a unit string (``"24GiB"``, ``"1008GB/s"``, ``"82.6TFLOPS"``, ``"5us"``) parsed by
:mod:`moesim.units`; errors are :class:`~moesim.errors.ConfigError` s with the dotted field path.
Rates are peak (spec-sheet) values except :attr:`LinkSpec.effective_bps`, which applies the link's
theoretical -> achieved efficiency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moesim import fields as F
from moesim import units

# Tensor/vector math dtypes a FLOP/s table may list.
FLOPS_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4", "int4")
# Where a dtype without native support runs instead: weight-only kernels (Marlin-style W4A16/W8A16)
# dequantise to 16 bits, so narrow formats fall back to the 16-bit rate, then fp32.
_FALLBACK = {
    "fp32": (),
    "tf32": ("fp32",),
    "bf16": ("fp16", "fp32"),
    "fp16": ("bf16", "fp32"),
    "fp8": ("bf16", "fp16", "fp32"),
    "int8": ("fp16", "bf16", "fp32"),
    "fp4": ("bf16", "fp16", "fp32"),
    "int4": ("fp16", "bf16", "fp32"),
}


def _flops_table(value: object, path: str) -> tuple[tuple[str, float], ...]:
    """``{"bf16": "165.2TFLOPS", ...}`` -> sorted ``(("bf16", 1.652e14), ...)``; needs fp32 or a 16-bit dtype."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (tuple, list)) and all(isinstance(v, (tuple, list)) and len(v) == 2 for v in value):
        items = [tuple(v) for v in value]
    else:
        F.fail(path, f"expected a table of dtype -> FLOP/s such as {{bf16 = '165TFLOPS'}}, got {value!r}")
    table = {}
    for dtype, rate in items:
        if dtype not in FLOPS_DTYPES:
            F.fail(f"{path}.{dtype}", f"unknown dtype; use one of {', '.join(FLOPS_DTYPES)}")
        table[dtype] = units.parse_flops(rate, f"{path}.{dtype}")
    if not table:
        F.fail(path, "expected at least one dtype, e.g. {fp32 = '1TFLOPS'}")
    return tuple(sorted(table.items(), key=lambda item: FLOPS_DTYPES.index(item[0])))


def _lookup(owner: str, table: tuple[tuple[str, float], ...], dtype: str) -> tuple[str, float]:
    if dtype not in _FALLBACK:
        F.fail("dtype", f"unknown dtype {dtype!r}; use one of {', '.join(FLOPS_DTYPES)}")
    rates = dict(table)
    for candidate in (dtype, *_FALLBACK[dtype]):
        if candidate in rates:
            return candidate, rates[candidate]
    F.fail(
        "dtype",
        f"{owner} lists no FLOP/s for {dtype!r} or its fallbacks {', '.join(_FALLBACK[dtype])}; "
        f"add one to its flops table",
    )


class _ComputeMixin:
    """FLOP/s lookup with fallback, shared by GPUs and CPUs."""

    name: str
    flops: tuple[tuple[str, float], ...]

    def compute_dtype(self, dtype: str) -> str:
        """The dtype ``dtype`` math actually runs in here (itself if native, else its fallback)."""
        return _lookup(self.name, self.flops, dtype)[0]

    def flops_for(self, dtype: str) -> float:
        """Peak dense FLOP/s for ``dtype``, falling back to the 16-bit (then fp32) rate when the
        hardware has no native support (e.g. MXFP4 on Ampere runs as bf16 after dequantisation)."""
        return _lookup(self.name, self.flops, dtype)[1]

    @property
    def flops_by_dtype(self) -> dict[str, float]:
        return dict(self.flops)


def _positive_bytes(value: object, path: str) -> int:
    return units.parse_bytes(value, path, allow_zero=False)


def _validate(obj: object, where: str, parsers: Mapping[str, Any], text: tuple[str, ...] = ("source", "notes")) -> None:
    """Check ``name``, parse the unit-bearing fields with ``parsers[field](value, path)``, check texts."""
    F.check_str(f"{where}.name", obj.name)
    for name, parse in parsers.items():
        F.set_field(obj, name, parse(getattr(obj, name), f"{where}.{name}"))
    for name in text:
        F.check_str(f"{where}.{name}", getattr(obj, name), allow_empty=True)


@dataclass(frozen=True, kw_only=True)
class GPUSpec(_ComputeMixin):
    """An accelerator.

    Parameters
    ----------
    name : str
    hbm_bytes : int or str
        Device memory (``"24GiB"``).
    hbm_bps : float or str
        Peak device-memory bandwidth (``"1008GB/s"``).
    flops : mapping of dtype -> FLOP/s
        Peak *dense* tensor-core rates (not 2:4-sparse), e.g. ``{"bf16": "165.2TFLOPS"}``; ``fp32``
        is the non-tensor rate. Dtypes: ``FLOPS_DTYPES``.
    launch_s : float or str
        Fixed overhead per kernel launch (``"5us"``).
    source, notes : str
    """

    name: str
    hbm_bytes: int
    hbm_bps: float
    flops: tuple[tuple[str, float], ...]
    launch_s: float = 5e-6
    source: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        _validate(
            self,
            "gpu",
            {
                "hbm_bytes": _positive_bytes,
                "hbm_bps": units.parse_rate,
                "flops": _flops_table,
                "launch_s": units.parse_duration,
            },
        )


@dataclass(frozen=True, kw_only=True)
class CPUSpec(_ComputeMixin):
    """The host: cores, DRAM and its bandwidth, and peak FLOP/s (for experts run on the CPU).

    ``dram_bps`` is the peak bandwidth of the memory channels the host gives this workload.
    """

    name: str
    num_cores: int
    dram_bytes: int
    dram_bps: float
    flops: tuple[tuple[str, float], ...]
    source: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        _validate(
            self,
            "cpu",
            {
                "num_cores": lambda v, p: F.check_int(p, v, minimum=1),
                "dram_bytes": _positive_bytes,
                "dram_bps": units.parse_rate,
                "flops": _flops_table,
            },
        )


@dataclass(frozen=True, kw_only=True)
class SSDSpec:
    """A storage device experts can be read from."""

    name: str
    capacity_bytes: int
    read_bps: float
    latency_s: float
    source: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        _validate(
            self,
            "ssd",
            {"capacity_bytes": _positive_bytes, "read_bps": units.parse_rate, "latency_s": units.parse_duration},
        )


@dataclass(frozen=True, kw_only=True)
class LinkSpec:
    """A transfer path in one direction.

    Parameters
    ----------
    name : str
    bandwidth_bps : float or str
        Theoretical rate in this direction after line encoding (PCIe 4.0 x16: 31.5 GB/s).
    latency_s : float or str
        Fixed cost per transfer (DMA setup, driver call, completion).
    channels : int
        Transfers the link serves concurrently (DMA copy engines on this path); they share
        ``effective_bps``.
    duplex : bool
        Full duplex: the opposite direction has its own bandwidth.
    efficiency : float
        Achieved / theoretical rate for large transfers, in (0, 1].
    """

    name: str
    bandwidth_bps: float
    latency_s: float
    channels: int = 1
    duplex: bool = True
    efficiency: float = 0.8
    notes: str = ""

    def __post_init__(self) -> None:
        _validate(
            self,
            "link",
            {
                "bandwidth_bps": units.parse_rate,
                "latency_s": units.parse_duration,
                "channels": lambda v, p: F.check_int(p, v, minimum=1),
                "duplex": lambda v, p: F.check_bool(p, v),
                "efficiency": lambda v, p: F.check_real(
                    p, v, minimum=0.0, maximum=1.0, exclusive_minimum=True, expected="a fraction in (0, 1] such as 0.8"
                ),
            },
            text=("notes",),
        )

    @property
    def effective_bps(self) -> float:
        """Achieved bytes/s for large transfers (``bandwidth_bps * efficiency``)."""
        return self.bandwidth_bps * self.efficiency

    def transfer_s(self, num_bytes: int) -> float:
        """Seconds to move ``num_bytes`` alone on the link: ``latency_s + num_bytes / effective_bps``."""
        return self.latency_s + F.check_int("num_bytes", num_bytes, minimum=0) / self.effective_bps


_SUBSPECS = {
    "gpu": GPUSpec,
    "cpu": CPUSpec,
    "ssd": SSDSpec,
    "h2d": LinkSpec,
    "d2h": LinkSpec,
    "ssd_link": LinkSpec,
    "ssd_gpu_link": LinkSpec,
}


@dataclass(frozen=True, kw_only=True)
class HardwareSpec:
    """One GPU and its host.

    Parameters
    ----------
    name : str
    gpu, cpu : GPUSpec, CPUSpec
    h2d, d2h : LinkSpec
        Host -> GPU and GPU -> host paths (PCIe or NVLink-C2C).
    ssd : SSDSpec or None
    ssd_link : LinkSpec or None
        SSD -> host DRAM path (the drive's own lanes); required with ``ssd``.
    ssd_gpu_link : LinkSpec or None
        SSD -> GPU direct path (GPUDirect Storage), when the machine supports it.
    notes, sources : str
        Assumptions made, and the spec sheets the numbers come from.
    """

    name: str
    gpu: GPUSpec
    cpu: CPUSpec
    h2d: LinkSpec
    d2h: LinkSpec
    ssd: SSDSpec | None = None
    ssd_link: LinkSpec | None = None
    ssd_gpu_link: LinkSpec | None = None
    notes: str = ""
    sources: str = ""

    def __post_init__(self) -> None:
        w = "hardware"
        _validate(self, w, {}, text=("notes", "sources"))
        for key, cls in _SUBSPECS.items():
            value = getattr(self, key)
            if value is None and key in ("ssd", "ssd_link", "ssd_gpu_link"):
                continue
            if not isinstance(value, cls):
                F.fail(
                    f"{w}.{key}",
                    f"expected a {cls.__name__}, a preset name or a table of fields, got {type(value).__name__}",
                )
        if self.ssd is not None and self.ssd_link is None:
            F.fail(f"{w}.ssd_link", "expected the SSD -> host link (e.g. 'pcie4-x4') because ssd is set")
        if self.ssd is None and self.ssd_gpu_link is not None:
            F.fail(f"{w}.ssd_gpu_link", "set only together with ssd")

    # ------------------------------------------------------------------ derived
    @property
    def h2d_bps(self) -> float:
        """Achieved host -> GPU bytes/s."""
        return self.h2d.effective_bps

    @property
    def ssd_read_bps(self) -> float | None:
        """Achieved SSD -> host bytes/s: the slower of the drive and its link (None without SSD)."""
        if self.ssd is None or self.ssd_link is None:
            return None
        return min(self.ssd.read_bps, self.ssd_link.effective_bps)

    def to_dict(self) -> dict[str, Any]:
        return F.to_plain(self)  # type: ignore[return-value]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "hardware") -> HardwareSpec:
        """Build from a table; ``gpu`` and the links may be preset names or tables of fields."""
        from moesim.hardware.presets import subspec_from_config

        convert = {key: (lambda value, path, key=key: subspec_from_config(key, value, path)) for key in _SUBSPECS}
        return F.build(cls, data, where, default_prefix="hardware", convert=convert)

    def with_overrides(self, **fields: Any) -> HardwareSpec:
        """A validated copy with fields replaced; nested fields by dotted name or table::

        spec.with_overrides(**{"h2d.efficiency": 0.7, "gpu": "h100-sxm", "cpu": {"dram_bytes": "64GiB"}})
        """
        return override_hardware(self, fields, "hardware")


def override_hardware(spec: HardwareSpec, changes: Mapping[str, Any], where: str) -> HardwareSpec:
    """Apply (possibly dotted or nested) overrides to ``spec``; errors name ``where.field``."""
    from moesim.hardware.presets import subspec_from_config

    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = str(key).partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        elif (
            head in _SUBSPECS
            and isinstance(value, Mapping)
            and "preset" not in value
            and getattr(spec, head, None) is not None
        ):
            nested.setdefault(head, {}).update(value)
        elif head in _SUBSPECS:
            flat[head] = subspec_from_config(head, value, f"{where}.{head}")
        else:
            flat[head] = value
    for head, values in nested.items():
        if head not in _SUBSPECS:
            F.fail(f"{where}.{head}", f"has no sub-fields; nested fields exist under {', '.join(_SUBSPECS)}")
        current = flat.get(head, getattr(spec, head))
        if current is None:
            flat[head] = subspec_from_config(head, values, f"{where}.{head}")
        else:
            flat[head] = F.replace_checked(current, f"{where}.{head}", _prefix(head), values)
    return F.replace_checked(spec, where, "hardware", flat)


def _prefix(key: str) -> str:
    """Default error prefix of the sub-spec class stored under ``key``."""
    return {GPUSpec: "gpu", CPUSpec: "cpu", SSDSpec: "ssd", LinkSpec: "link"}[_SUBSPECS[key]]
