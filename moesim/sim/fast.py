"""The simulator's Numba fast path: the DES timeline (:mod:`moesim.sim.des`) computed in one pass.

:func:`run_fast` checks a :class:`~moesim.sim.inputs.SimInputs` as the DES does, packs it into
arrays (policy, predictor and miss names to the kernel's codes), runs
:func:`moesim.kernels.sim_fast.simulate` and builds the same :class:`~moesim.sim.result.Result` as
the DES, with engine name ``"fast"``. :func:`unsupported` says what it cannot do; ``moesim.sim.run``
falls back to the DES for those scenarios under ``engine = "auto"``.

Supported: every eviction policy of :mod:`moesim.policies.eviction` (pool or per-layer quotas,
preloads), miss policies fetch/cpu/best, every predictor, any lookahead and cap, FIFO links
(one channel) in duplex or half duplex, chunked transfers, and CPU memory as a tier over SSD
(lru/lfu/fifo/static, SSD -> GPU direct reads). Not supported: links with more than one channel
(processor sharing of the bandwidth).

The two engines agree to rounding on every per-step and per-layer number and the summary
(tests/test_sim_fast.py holds them equal on random configurations and the shipped trace); the only
freedom is the order of two unrelated events at exactly the same instant (see the kernel module).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from moesim.errors import ConfigError
from moesim.sim.inputs import SimInputs
from moesim.sim.result import Result, StepColumns, Totals, build_result

_HOST_POLICIES = ("lru", "lfu", "fifo", "static")  # CPU memory's policies in the kernel
_MAX_COUNT = 2**31  # priorities pack (count, request clock) into one int64, 32 bits each


def _codes():
    from moesim.kernels import sim_fast

    return sim_fast.POLICY_CODES, sim_fast.PREDICTOR_CODES, sim_fast.MISS_CODES


def _canonical(registry, name: object) -> object:
    return registry.canonical(name) if isinstance(name, str) and name in registry else name


def unsupported(inputs: SimInputs) -> str | None:
    """Why the fast path cannot run ``inputs`` (features joined by '; '), or None if it can.

    Names no registry knows are not reported here: :func:`run_fast` raises the registry's
    ConfigError for them, as the DES does.
    """
    from moesim.policies.eviction import EVICTION
    from moesim.policies.miss import MISS
    from moesim.policies.prefetch import PREFETCH

    policy_codes, predictor_codes, miss_codes = _codes()
    reasons = []
    for link in (inputs.h2d, inputs.d2h, inputs.ssd):
        if link is not None and int(link.channels) != 1:
            reasons.append(f"link '{link.name}' with {link.channels} channels (processor sharing)")
    # The kernel's codes are fixed; a policy registered later has no array form.
    eviction = _canonical(EVICTION, inputs.cache.eviction)
    if eviction in EVICTION and eviction not in policy_codes:
        reasons.append(f"eviction policy '{eviction}'")
    host_eviction = _canonical(EVICTION, inputs.host.eviction)
    if inputs.host.capacity_experts is not None and host_eviction in EVICTION and host_eviction not in _HOST_POLICIES:
        reasons.append(f"CPU-memory eviction policy '{host_eviction}'")
    predictor = _canonical(PREFETCH, inputs.prefetch.predictor)
    if predictor in PREFETCH and predictor not in predictor_codes:
        reasons.append(f"prefetch predictor '{predictor}'")
    miss = _canonical(MISS, inputs.miss)
    if miss in MISS and miss not in miss_codes:
        reasons.append(f"miss policy '{miss}'")
    if inputs.num_demands >= _MAX_COUNT:
        reasons.append(f"{inputs.num_demands} expert requests (at most {_MAX_COUNT - 1})")
    elif eviction == "activation" and int(np.sum(inputs.demand_tokens, dtype=np.int64)) >= _MAX_COUNT:
        reasons.append(f"activation-aware counts beyond {_MAX_COUNT - 1} tokens")
    return "; ".join(reasons) or None


def _check(inputs: SimInputs) -> tuple[str, str, str, str, int]:
    """The checks the DES makes while building its components, with the same errors; returns the
    canonical eviction, host eviction, predictor and miss names and SCH's segment (0 if none)."""
    from moesim.policies.eviction import EVICTION, ExpertCache, make_policy
    from moesim.policies.miss import MISS
    from moesim.policies.prefetch import PREFETCH, make_predictor

    field = "cache.eviction"
    cls = EVICTION.get(inputs.cache.eviction, field=field)
    eviction = EVICTION.canonical(inputs.cache.eviction)
    segment = 0
    if cls.needs_future:  # make_policy would want the request stream; check the parameters alone
        given = dict(inputs.cache.eviction_params or {})
        valid = [f.name for f in fields(cls.Params)]
        unknown = sorted(set(given) - set(valid))
        if unknown:
            raise ConfigError(f"{field}_params: unknown field {unknown[0]!r} for eviction policy '{eviction}'; "
                              f"it takes {', '.join(valid) if valid else 'no parameters'}")
        missing = [name for name in valid if name not in given]
        if missing:
            raise ConfigError(f"{field}_params.{missing[0]}: eviction policy '{eviction}' needs it (e.g. 16)")
        segment = int(getattr(cls.Params(**given), "segment", 0))
    else:
        make_policy(eviction, inputs.cache.eviction_params, field=field)
    ExpertCache(inputs.cache.capacity_experts, "lru")  # capacity >= 1
    host_eviction = "lru"
    if inputs.host.capacity_experts is not None:
        host_eviction = EVICTION.canonical(inputs.host.eviction, field="offload.host_eviction")
        make_policy(host_eviction, {}, field="offload.host_eviction")
        ExpertCache(inputs.host.capacity_experts, "lru")
        if inputs.ssd is None:
            raise ConfigError("ssd: CPU memory does not hold every expert but the inputs have no SSD link; "
                              "give SimInputs.ssd or set host.capacity_experts = None")
    make_predictor(inputs)  # raises for a trace predictor without predictions or with lookahead != 1
    predictor = PREFETCH.canonical(inputs.prefetch.predictor)
    miss = MISS.canonical(inputs.miss, field="offload.miss")
    return eviction, host_eviction, predictor, miss, segment


def _releases(inputs: SimInputs, num_layers: int, num_experts: int):
    """Activation releases indexed by (step, layer of the key): offsets [S*L+1], keys, counts."""
    num_steps = inputs.num_steps
    if inputs.release_offsets is None:
        return np.zeros(num_steps * num_layers + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = np.asarray(inputs.release_keys, dtype=np.int64)
    counts = np.asarray(inputs.release_counts, dtype=np.int64)
    step = np.repeat(np.arange(num_steps, dtype=np.int64), np.diff(np.asarray(inputs.release_offsets)))
    slot = step * num_layers + keys // num_experts
    order = np.argsort(slot, kind="stable")
    offsets = np.searchsorted(slot[order], np.arange(num_steps * num_layers + 1)).astype(np.int64)
    return offsets, keys[order], counts[order]


def _pack(inputs: SimInputs):
    """The kernel's arguments (see moesim.kernels.sim_fast.simulate)."""
    from moesim.kernels import sim_fast as k

    policy_codes, predictor_codes, miss_codes = _codes()
    eviction, host_eviction, predictor, miss, segment = _check(inputs)
    num_steps, num_layers, num_experts = inputs.num_steps, inputs.num_layers, inputs.num_experts
    per_layer = inputs.cache.layout == "per_layer"

    params = np.zeros(k.NUM_PARAMS, dtype=np.int64)
    params[k.P_STEPS] = num_steps
    params[k.P_LAYERS] = num_layers
    params[k.P_EXPERTS] = num_experts
    params[k.P_PER_LAYER] = per_layer
    params[k.P_POLICY] = policy_codes[eviction]
    params[k.P_CAPACITY] = inputs.cache.capacity_experts
    params[k.P_SEGMENT] = segment
    host_capacity = inputs.host.capacity_experts
    params[k.P_HOST_CAPACITY] = -1 if host_capacity is None else host_capacity
    params[k.P_HOST_POLICY] = policy_codes[host_eviction]
    params[k.P_SSD_DIRECT] = bool(inputs.host.ssd_direct)
    params[k.P_PREDICTOR] = predictor_codes[predictor]
    params[k.P_LOOKAHEAD] = inputs.prefetch.lookahead_layers
    max_experts = inputs.prefetch.max_experts
    params[k.P_MAX_EXPERTS] = -1 if max_experts is None else max_experts
    params[k.P_CHUNK_BYTES] = inputs.prefetch.chunk_bytes or 0
    params[k.P_MISS] = miss_codes[miss]
    params[k.P_DUPLEX] = inputs.d2h is not None
    params[k.P_EXPERT_BYTES] = inputs.expert_bytes
    params[k.P_TOP_K] = inputs.top_k

    fparams = np.zeros(k.NUM_FPARAMS, dtype=np.float64)
    fparams[k.F_COMBINE] = inputs.combine_s
    for index, link in enumerate((inputs.h2d, inputs.d2h or inputs.h2d, inputs.ssd)):
        if link is not None:
            fparams[k.F_BW + index] = link.bandwidth_bps
            fparams[k.F_LAT + index] = link.latency_s
        else:
            fparams[k.F_BW + index] = 1.0

    if inputs.predicted_offsets is not None:
        predicted_offsets = np.ascontiguousarray(inputs.predicted_offsets, dtype=np.int64)
        predicted_ids = np.ascontiguousarray(inputs.predicted_ids, dtype=np.int16)
    else:
        predicted_offsets, predicted_ids = np.zeros(num_steps * num_layers + 1, np.int64), np.zeros(0, np.int16)
    if eviction == "activation":
        release_offsets, release_keys, release_counts = _releases(inputs, num_layers, num_experts)
    else:
        release_offsets, release_keys, release_counts = np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)

    def as_(array, dtype):  # the kernel's fixed dtypes; SimInputs already has them (no copy)
        return np.ascontiguousarray(array, dtype=dtype).ravel()

    return (params, fparams, as_(inputs.demand_offsets, np.int64), as_(inputs.demand_ids, np.int16),
            as_(inputs.demand_tokens, np.int32), as_(inputs.dense_s, np.float64), as_(inputs.head_s, np.float64),
            as_(inputs.expert_gpu_s, np.float64), as_(inputs.expert_cpu_s, np.float64),
            as_(inputs.activation_bytes, np.int64), predicted_offsets, predicted_ids,
            as_(inputs.cache.preload_keys, np.int64), as_(inputs.host.preload_keys, np.int64),
            release_offsets, release_keys, release_counts)


def run_fast(inputs: SimInputs) -> Result:
    """Simulate ``inputs`` with the Numba fast path; the same Result as the DES (engine ``"fast"``).

    Parameters
    ----------
    inputs : SimInputs
        A resolved problem (``moesim.sim.build.build_inputs``) that :func:`unsupported` accepts.

    Returns
    -------
    Result
        Per-step and per-layer tables and the summary, built by :func:`moesim.sim.result.build_result`.

    Raises
    ------
    ConfigError
        If the scenario uses a feature the fast path lacks (see :func:`unsupported`), or for the
        invalid settings the DES also rejects (unknown names, bad policy parameters, capacities).
    """
    from moesim.kernels import sim_fast as k

    reason = unsupported(inputs)
    if reason is not None:
        raise ConfigError(f"engine: the fast path does not support this scenario ({reason}); use engine = \"des\"")
    step_f, step_i, layer_i, layer_f, totals_f, totals_i, error = k.simulate(*_pack(inputs))
    if error:
        raise RuntimeError(f"moesim fast path: internal error {error} (please report it with the scenario)")
    columns = StepColumns(inputs.num_steps, inputs.num_layers)
    steps = columns.steps
    steps["phase"][:] = inputs.step_phase
    steps["num_tokens"][:] = inputs.step_num_tokens
    for index, name in enumerate(k.STEP_FLOAT_COLUMNS):
        steps[name][:] = step_f[:, index]
    for index, name in enumerate(k.STEP_INT_COLUMNS):
        steps[name][:] = step_i[:, index]
    for index, name in enumerate(k.LAYER_INT_COLUMNS):
        columns.layers[name][:] = layer_i[:, index]
    columns.layers["stall_s"][:] = layer_f
    values = dict(zip(k.TOTAL_FLOAT_FIELDS, totals_f.tolist()))
    values.update(zip(k.TOTAL_INT_FIELDS, totals_i.tolist()))
    totals = Totals(**values)
    return build_result(columns, totals, engine="fast", moe_layers=tuple(range(inputs.num_layers)))
