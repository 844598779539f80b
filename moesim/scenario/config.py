"""Scenarios: what to simulate, as frozen, keyword-only, validated dataclasses.

A scenario file (TOML) has a few top-level keys and one table per concern::

    name = "quickstart"
    description = "GPT-OSS-20B on an RTX 4090 over PCIe 4"
    seed = 0
    [trace]     path = "../traces/gpt-oss-20b.parquet"   # relative to the scenario file
    [model]     preset = "gpt-oss-20b"                   # plus any ModelSpec field to override
    [hardware]  preset = "rtx4090-pcie4"                 # plus overrides, nested: h2d.efficiency
    [cache]     capacity = 256, layout = "pool", eviction = "lru"
    [prefetch]  predictor = "none"
    [offload]   miss = "fetch", host_capacity = "all"
    [workload]  batch_size = 1, prefill = false
    [timing]    combine = "5us"

Unknown keys are errors; every error names the dotted path and what to write instead.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moesim import fields as F
from moesim.errors import ConfigError
from moesim.models import ModelSpec, model_from_config
from moesim.scenario.overrides import apply_overrides
from moesim.units import parse_bytes, parse_duration

LAYOUTS = ("pool", "per-layer")
PRELOADS = ("none", "popular")
HOST_PRELOADS = ("ordered", "popular", "none")
ENGINES = ("auto", "des", "fast")


def _table(data: object, path: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        F.fail(path, f"expected a table, got {data!r}")
    return dict(data)


def _take(table: dict[str, Any], path: str, known: Iterable[str]) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        F.fail(f"{path}.{unknown[0]}", f"unknown key; valid keys in [{path}] are {', '.join(sorted(known))}")


def _size_or_auto(value: object, path: str, *, keywords: tuple[str, ...] = ("auto",)) -> int | str:
    if isinstance(value, str) and value in keywords:
        return value
    return F.check_int(path, value, minimum=1, expected=f"a number of experts >= 1 or one of {', '.join(keywords)}")


SYNTHETIC_KEYS = ("fit", "tokens", "sequences", "seed", "skew", "tail", "persistence", "cross_layer",
                  "sequence_affinity")


@dataclass(frozen=True, kw_only=True)
class TraceConfig:
    """Which routing trace to replay.

    ``path``: a trace file (resolved against the scenario file), optionally only its first
    ``max_sequences`` sequences. Or ``synthetic``: a generated trace shaped like the scenario's
    model (its E, k and MoE layers), with the routing parameters fitted to a real trace (``fit =
    "path"``, rescaled by :meth:`SynthParams.rescaled`'s rule) or given (``skew``, ``tail``,
    ``persistence``, ``cross_layer``, ``sequence_affinity``), ``tokens`` per sequence, ``sequences``
    and ``seed``. Always marked synthetic in the results.
    """

    path: Path | None = None
    max_sequences: int | None = None
    synthetic: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: object, base_dir: Path) -> TraceConfig:
        table = _table(data, "trace")
        _take(table, "trace", ("path", "max_sequences", "synthetic"))
        if ("path" in table) == ("synthetic" in table):
            F.fail("trace", "give either path = \"file.parquet\" or a synthetic = { ... } table (not both)")
        limit = F.check_optional_int("trace.max_sequences", table.get("max_sequences"))
        if "path" in table:
            return cls(path=_resolve(F.check_str("trace.path", table["path"]), base_dir), max_sequences=limit)
        synth = _table(table["synthetic"], "trace.synthetic")
        _take(synth, "trace.synthetic", SYNTHETIC_KEYS)
        out: dict[str, Any] = {}
        if "fit" in synth:
            out["fit"] = str(_resolve(F.check_str("trace.synthetic.fit", synth["fit"]), base_dir))
        out["tokens"] = F.check_int("trace.synthetic.tokens", synth.get("tokens", 256), minimum=1)
        out["sequences"] = F.check_int("trace.synthetic.sequences", synth.get("sequences", 8), minimum=1)
        out["seed"] = F.check_int("trace.synthetic.seed", synth.get("seed", 0), minimum=0)
        for key in ("skew", "tail", "persistence", "cross_layer", "sequence_affinity"):
            if key in synth:
                if "fit" in synth:
                    F.fail(f"trace.synthetic.{key}", "set either fit = \"trace\" or the routing parameters, not both")
                out[key] = F.check_real(f"trace.synthetic.{key}", synth[key], minimum=0.0)
        return cls(synthetic=out, max_sequences=limit)


def _resolve(raw: str, base_dir: Path) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """The GPU expert cache.

    capacity : int or "auto"
        Expert slots (per MoE layer with ``layout = "per-layer"``); ``"auto"``: what GPU memory
        holds after the non-expert weights, the KV cache for the batch and ``reserve``.
    layout : "pool" | "per-layer"
        One pool shared by all layers, or a fixed quota per layer (mixtral-offloading).
    eviction : str
        An eviction policy name (``moesim.policies.eviction.EVICTION``); ``eviction_params`` its fields.
    preload : "none" | "popular"
        Start empty, or filled with the trace's most popular experts (static placement when
        combined with ``eviction = "static"``).
    reserve : bytes
        GPU memory kept for activations and workspace when sizing ``"auto"``.
    """

    capacity: int | str = "auto"
    layout: str = "pool"
    eviction: str = "lru"
    eviction_params: dict[str, Any] = field(default_factory=dict)
    preload: str = "none"
    reserve_bytes: int = 2 * 2**30

    @classmethod
    def from_dict(cls, data: object) -> CacheConfig:
        from moesim.policies.eviction import EVICTION

        table = _table(data, "cache")
        _take(table, "cache", ("capacity", "layout", "eviction", "eviction_params", "preload", "reserve"))
        out: dict[str, Any] = {}
        if "capacity" in table:
            out["capacity"] = _size_or_auto(table["capacity"], "cache.capacity")
        if "layout" in table:
            out["layout"] = F.check_str("cache.layout", str(table["layout"]).replace("_", "-"), choices=LAYOUTS)
        if "eviction" in table:
            out["eviction"] = EVICTION.canonical(table["eviction"], field="cache.eviction")
        if "eviction_params" in table:
            out["eviction_params"] = _table(table["eviction_params"], "cache.eviction_params")
        if "preload" in table:
            out["preload"] = F.check_str("cache.preload", table["preload"], choices=PRELOADS)
        if "reserve" in table:
            out["reserve_bytes"] = parse_bytes(table["reserve"], "cache.reserve")
        config = cls(**out)
        # validate the policy's parameters now, with the dotted path
        from moesim.policies.eviction import make_policy

        policy_cls = EVICTION.get(config.eviction)
        if not getattr(policy_cls, "needs_future", False):
            make_policy(config.eviction, config.eviction_params, field="cache.eviction")
        else:
            _check_params(policy_cls, config.eviction_params, "cache.eviction_params")
        return config


def _check_params(policy_cls: type, params: dict[str, Any], path: str) -> None:
    valid = [f.name for f in dataclasses.fields(policy_cls.Params)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        F.fail(f"{path}.{unknown[0]}", f"unknown parameter; '{policy_cls.name}' takes {', '.join(valid) or 'none'}")
    missing = [name for name in valid if name not in params]
    if missing:
        F.fail(f"{path}.{missing[0]}", f"eviction policy '{policy_cls.name}' needs it (e.g. segment = 16)")
    try:
        policy_cls.Params(**params)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {str(exc).split(': ', 1)[-1]}") from None


@dataclass(frozen=True, kw_only=True)
class PrefetchConfig:
    """predictor: none | oracle | previous-token | popularity | trace; lookahead in MoE layers;
    max_experts per decision (default: all predicted; popularity: top_k); chunk: split transfers so
    a demand fetch can overtake a started prefetch at a chunk boundary."""

    predictor: str = "none"
    lookahead: int = 1
    max_experts: int | None = None
    chunk_bytes: int | None = None

    @classmethod
    def from_dict(cls, data: object) -> PrefetchConfig:
        from moesim.policies.prefetch import PREFETCH

        table = _table(data, "prefetch")
        _take(table, "prefetch", ("predictor", "lookahead", "max_experts", "chunk"))
        out: dict[str, Any] = {}
        if "predictor" in table:
            out["predictor"] = PREFETCH.canonical(table["predictor"], field="prefetch.predictor")
        if "lookahead" in table:
            out["lookahead"] = F.check_int("prefetch.lookahead", table["lookahead"], minimum=1)
        if "max_experts" in table:
            out["max_experts"] = F.check_int("prefetch.max_experts", table["max_experts"], minimum=1)
        if "chunk" in table and table["chunk"] not in (None, 0, "none"):
            out["chunk_bytes"] = parse_bytes(table["chunk"], "prefetch.chunk", allow_zero=False)
        return cls(**out)


@dataclass(frozen=True, kw_only=True)
class OffloadConfig:
    """Where missing experts live and what a miss does.

    miss : fetch | cpu | best
    host_capacity : "all" | "auto" | int
        Experts CPU memory holds: all of them (no SSD traffic), as many as fit after
        ``host_reserve`` (the rest are read from SSD), or a number.
    host_eviction : str
        Eviction policy of the CPU-memory tier when it cannot hold everything (lru, lfu, fifo).
    host_preload : ordered | popular | none
        CPU memory starts with experts in layer order (as a loader fills it), the most popular, or
        empty.
    ssd_direct : bool
        GPU misses not in CPU memory are read SSD -> GPU directly (GPUDirect Storage) instead of
        through CPU memory.
    """

    miss: str = "fetch"
    host_capacity: int | str = "all"
    host_eviction: str = "lru"
    host_preload: str = "ordered"
    host_reserve_bytes: int = 8 * 2**30
    ssd_direct: bool = False

    @classmethod
    def from_dict(cls, data: object) -> OffloadConfig:
        from moesim.policies.eviction import EVICTION
        from moesim.policies.miss import MISS

        table = _table(data, "offload")
        _take(table, "offload", ("miss", "host_capacity", "host_eviction", "host_preload", "host_reserve", "ssd_direct"))
        out: dict[str, Any] = {}
        if "miss" in table:
            out["miss"] = MISS.canonical(table["miss"], field="offload.miss")
        if "host_capacity" in table:
            out["host_capacity"] = _size_or_auto(table["host_capacity"], "offload.host_capacity", keywords=("all", "auto"))
        if "host_eviction" in table:
            name = EVICTION.canonical(table["host_eviction"], field="offload.host_eviction")
            if getattr(EVICTION.get(name), "needs_future", False):
                F.fail("offload.host_eviction", f"'{name}' needs the future request stream, which the CPU tier "
                                                f"does not know; use lru, lfu or fifo")
            out["host_eviction"] = name
        if "host_preload" in table:
            out["host_preload"] = F.check_str("offload.host_preload", table["host_preload"], choices=HOST_PRELOADS)
        if "host_reserve" in table:
            out["host_reserve_bytes"] = parse_bytes(table["host_reserve"], "offload.host_reserve")
        if "ssd_direct" in table:
            out["ssd_direct"] = F.check_bool("offload.ssd_direct", table["ssd_direct"])
        return cls(**out)


@dataclass(frozen=True, kw_only=True)
class WorkloadConfig:
    """batch_size sequences decode in lockstep (a finished one is replaced by the next); prefill of
    the trace's prefill rows in chunks of prefill_chunk tokens when ``prefill``; at most
    ``max_steps`` steps (None: the whole trace); dtypes of the KV cache, activations and compute."""

    batch_size: int = 1
    prefill: bool = True
    prefill_chunk: int = 512
    max_steps: int | None = None
    kv_format: str = "bf16"
    activation_bytes: int = 2
    compute_dtype: str = "bf16"

    @classmethod
    def from_dict(cls, data: object) -> WorkloadConfig:
        from moesim.models import kv_bytes_per_element

        table = _table(data, "workload")
        _take(table, "workload", ("batch_size", "prefill", "prefill_chunk", "max_steps", "kv_format",
                                  "activation_bytes", "compute_dtype"))
        out: dict[str, Any] = {}
        if "batch_size" in table:
            out["batch_size"] = F.check_int("workload.batch_size", table["batch_size"], minimum=1)
        if "prefill" in table:
            out["prefill"] = F.check_bool("workload.prefill", table["prefill"])
        if "prefill_chunk" in table:
            out["prefill_chunk"] = F.check_int("workload.prefill_chunk", table["prefill_chunk"], minimum=1)
        if "max_steps" in table:
            out["max_steps"] = F.check_optional_int("workload.max_steps", table["max_steps"])
        if "kv_format" in table:
            kv_bytes_per_element(table["kv_format"], field="workload.kv_format")
            out["kv_format"] = table["kv_format"]
        if "activation_bytes" in table:
            out["activation_bytes"] = F.check_int("workload.activation_bytes", table["activation_bytes"], minimum=1)
        if "compute_dtype" in table:
            out["compute_dtype"] = F.check_str("workload.compute_dtype", table["compute_dtype"])
        return cls(**out)


@dataclass(frozen=True, kw_only=True)
class TimingConfig:
    """Fixed per-operation costs not derived from FLOPs and bytes: ``combine`` (gathering a MoE
    layer's expert outputs), ``sampling`` (per step, after the LM head)."""

    combine_s: float = 5e-6
    sampling_s: float = 0.0

    @classmethod
    def from_dict(cls, data: object) -> TimingConfig:
        table = _table(data, "timing")
        _take(table, "timing", ("combine", "sampling"))
        out: dict[str, Any] = {}
        if "combine" in table:
            out["combine_s"] = parse_duration(table["combine"], "timing.combine")
        if "sampling" in table:
            out["sampling_s"] = parse_duration(table["sampling"], "timing.sampling")
        return cls(**out)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A validated scenario; ``raw`` keeps the (overridden) mapping it was built from."""

    name: str
    description: str
    seed: int
    engine: str
    trace: TraceConfig
    model: ModelSpec
    hardware: Any  # moesim.hardware.HardwareSpec
    cache: CacheConfig
    prefetch: PrefetchConfig
    offload: OffloadConfig
    workload: WorkloadConfig
    timing: TimingConfig
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    source: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario (presets expanded) as plain data, for results and reports."""
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "engine": self.engine,
            "source": str(self.source) if self.source else None,
            "trace": {"path": str(self.trace.path) if self.trace.path else None,
                      "max_sequences": self.trace.max_sequences, "synthetic": self.trace.synthetic},
            "model": self.model.to_dict(),
            "hardware": self.hardware.to_dict(),
            "cache": F.to_plain(self.cache),
            "prefetch": F.to_plain(self.prefetch),
            "offload": F.to_plain(self.offload),
            "workload": F.to_plain(self.workload),
            "timing": F.to_plain(self.timing),
        }


TOP_LEVEL = ("name", "description", "seed", "engine", "trace", "model", "hardware", "cache", "prefetch",
             "offload", "workload", "timing", "sweep")


def scenario_from_dict(data: Mapping[str, Any], *, base_dir: Path | str = ".", source: Path | None = None) -> Scenario:
    """Validate a raw scenario mapping (already overridden) into a :class:`Scenario`."""
    from moesim.hardware import hardware_from_config

    data = dict(data)
    _take(data, "scenario", TOP_LEVEL)
    base = Path(base_dir)
    name = F.check_str("name", data.get("name", source.stem if source else "scenario"))
    description = data.get("description", "")
    if not isinstance(description, str):
        F.fail("description", f"expected a string, got {description!r}")
    seed = F.check_int("seed", data.get("seed", 0), minimum=0)
    engine = F.check_str("engine", data.get("engine", "auto"), choices=ENGINES)
    if "model" not in data:
        F.fail("model", "missing; name a preset (model = \"gpt-oss-20b\") or a [model] table with preset = ...")
    if "hardware" not in data:
        F.fail("hardware", "missing; name a preset (hardware = \"rtx4090-pcie4\") or a [hardware] table")
    model = model_from_config(data["model"], "model")
    hardware = hardware_from_config(data["hardware"], "hardware")
    return Scenario(
        name=name,
        description=description,
        seed=seed,
        engine=engine,
        trace=TraceConfig.from_dict(data.get("trace"), base),
        model=model,
        hardware=hardware,
        cache=CacheConfig.from_dict(data.get("cache")),
        prefetch=PrefetchConfig.from_dict(data.get("prefetch")),
        offload=OffloadConfig.from_dict(data.get("offload")),
        workload=WorkloadConfig.from_dict(data.get("workload")),
        timing=TimingConfig.from_dict(data.get("timing")),
        raw=dict(data),
        source=source,
    )


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a scenario TOML file, with one-line errors for unreadable files."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"scenario '{path}': no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"scenario '{path}': cannot be read ({exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario '{path}': invalid TOML ({exc}); fix the syntax at that line") from None


def load_scenario(path: str | Path, overrides: Iterable[tuple[str, Any]] = ()) -> Scenario:
    """Read a scenario file, apply ``--set`` style overrides, validate. Errors name the file."""
    path = Path(path)
    raw = apply_overrides(read_scenario_file(path), overrides)
    try:
        return scenario_from_dict(raw, base_dir=path.parent, source=path)
    except ConfigError as exc:
        raise ConfigError(f"scenario '{path}': {exc}") from None
