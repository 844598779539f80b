"""Plain-text summary of one simulation run (``moesim run``)."""

from __future__ import annotations

from typing import Any

from moesim.units import format_bytes, format_duration, format_rate


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"


def format_run(summary: dict[str, Any], scenario: dict[str, Any], *, wall_s: float | None = None) -> str:
    """The headline numbers, the memory plan and the time breakdown as a few aligned lines."""
    memory = scenario.get("memory", {})
    model = scenario.get("model", {})
    hardware = scenario.get("hardware", {})
    cache = scenario.get("cache", {})
    work = scenario.get("workload", {})
    lines = []
    title = scenario.get("name", "scenario")
    if scenario.get("description"):
        title += f": {scenario['description']}"
    lines.append(title)
    lines.append(
        f"model     {model.get('name')}: {len(model.get('moe_layers', []))} MoE layers x "
        f"{model.get('num_experts')} experts, top-{model.get('top_k')}; one expert "
        f"{format_bytes(memory.get('expert_bytes', 0))}"
    )
    lines.append(
        f"machine   {hardware.get('name')}: GPU {format_bytes(memory.get('gpu_bytes', 0))} = non-expert "
        f"{format_bytes(memory.get('non_expert_bytes', 0))} + KV {format_bytes(memory.get('kv_cache_bytes', 0))} "
        f"+ staging {format_bytes(memory.get('staging_bytes', 0))} + reserve "
        f"{format_bytes(memory.get('reserve_bytes', 0))} + cache"
    )
    per_layer = memory.get("layout") == "per-layer"
    lines.append(
        f"cache     {memory.get('capacity_experts')} experts{' per layer' if per_layer else ''} of "
        f"{memory.get('total_experts')} ({cache.get('eviction')}, {memory.get('layout')}); CPU memory holds "
        + ("all experts" if memory.get("host_slots") is None else f"{memory.get('host_slots')} (rest on SSD)")
    )
    engine = summary.get("engine")
    if scenario.get("engine_fallback"):
        engine = f"{engine} (the fast path does not support {scenario['engine_fallback']})"
    lines.append(
        f"workload  {summary['num_steps']} steps, batch {work.get('batch_size')}: {summary['decode_tokens']} decode"
        f" + {summary['prefill_tokens']} prefill tokens; engine {engine}"
        + (f" ({wall_s:.2f} s)" if wall_s is not None else "")
    )
    lines.append("")
    latency = summary["decode_step_latency_s"]
    lines.append(
        f"throughput   {summary['decode_tokens_per_s']:.2f} decode tokens/s; step latency mean "
        f"{format_duration(latency['mean'])}, p50 {format_duration(latency['p50'])}, "
        f"p90 {format_duration(latency['p90'])}, p99 {format_duration(latency['p99'])}"
    )
    if summary["prefill_tokens"]:
        lines.append(
            f"prefill      {format_duration(summary['prefill_time_s'])} for {summary['prefill_tokens']} tokens"
        )
    lines.append(
        f"experts      hit rate {_pct(summary['hit_rate'])} of {summary['demands']} demands: "
        f"{summary['misses']} misses, {summary['late_prefetches']} late prefetches, "
        f"{summary['cpu_experts']} run on CPU, {summary['staged_experts']} staged"
    )
    total = summary["total_time_s"]
    lines.append(
        f"traffic      h2d {format_bytes(summary['h2d_bytes'])} ({format_bytes(summary['h2d_bytes_per_token'])}/token"
        f" = {format_rate(summary['h2d_bytes'] / total if total else 0)} average), d2h "
        f"{format_bytes(summary['d2h_bytes'])}, ssd {format_bytes(summary['ssd_bytes'])}"
    )
    util = summary["utilisation"]
    lines.append("utilisation  " + "  ".join(f"{k} {_pct(v)}" for k, v in util.items() if v == v and v > 0))
    prefetch = summary["prefetch"]
    if prefetch["issued"]:
        lines.append(
            f"prefetch     {prefetch['issued']} issued, {prefetch['useful']} useful "
            f"({_pct(prefetch['accuracy'])}), {prefetch['wasted']} wasted, {prefetch['late']} late"
        )
    penalty = summary["miss_penalty"]
    lines.append(
        f"miss penalty {format_duration(penalty['stall_per_miss_s'])} GPU stall per miss; demand fetch "
        f"takes {format_duration(penalty['mean_demand_fetch_s'])} from issue to arrival"
    )
    lines.append("")
    lines.append("time breakdown        seconds   share")
    names = {
        "dense": "dense (attention...)",
        "expert_gpu": "expert kernels",
        "overhead": "combine + head",
        "stall_fetch": "stall: transfers",
        "stall_cpu": "stall: CPU experts",
    }
    for key, label in names.items():
        value = summary["time_breakdown_s"][key]
        lines.append(f"  {label:<20}{value:>10.4f}  {_pct(value / total if total else float('nan')):>6}")
    lines.append(f"  {'total':<20}{total:>10.4f}")
    return "\n".join(lines)
