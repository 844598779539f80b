"""``moesim hardware [NAME]``: the hardware presets, or one machine's full sheet."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moesim.cli._common import format_table, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "hardware",
        help="list hardware presets, or show one machine's GPU, host, links and SSD",
        description=(
            "Without NAME: one row per preset machine (GPU memory and bandwidth, dense bf16/fp8 FLOP/s, "
            "host->GPU link and its achieved rate, host DRAM, SSD). With NAME: every field, the FLOP/s "
            "table, link efficiencies, the assumptions made and the spec sheets used; with --model also "
            "what one expert costs to move and how many fit beside the model's resident weights."
        ),
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="a preset name, e.g. rtx4090-pcie4")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--model", metavar="MODEL", help="with NAME: expert transfer times and HBM fit for this model")
    parser.add_argument(
        "--format", dest="fmt", metavar="FMT", help="with --model: expert weight format (default: the model's)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim.errors import ConfigError
    from moesim.hardware import get_hardware, list_hardware

    if args.name is None:
        if args.model or args.fmt:
            raise ConfigError(
                "--model/--format: give a hardware NAME too, e.g. moesim hardware rtx4090-pcie4 --model mixtral-8x7b"
            )
        specs = [get_hardware(name) for name in list_hardware()]
        if args.json:
            print_json([summary(spec) for spec in specs])
        else:
            _print(preset_table(specs))
        return 0
    if args.fmt and not args.model:
        raise ConfigError("--format: only used with --model")
    spec = get_hardware(args.name, field="NAME")
    data: dict[str, Any] = {"hardware": spec.to_dict(), "derived": derived(spec)}
    if args.model:
        from moesim.models import get_model

        data["model_fit"] = model_fit(spec, get_model(args.model, field="--model"), args.fmt)
    if args.json:
        print_json(data)
    else:
        _print(render_sheet(spec, data))
    return 0


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")


def _tflops(rate: float | None) -> str:
    return "-" if rate is None else f"{rate / 1e12:.1f}"


def summary(spec) -> dict[str, Any]:
    """One machine's headline numbers (a table row)."""
    flops = spec.gpu.flops_by_dtype
    return {
        "name": spec.name,
        "gpu": spec.gpu.name,
        "hbm_bytes": spec.gpu.hbm_bytes,
        "hbm_bps": spec.gpu.hbm_bps,
        "bf16_flops": spec.gpu.flops_for("bf16"),
        "fp8_flops": flops.get("fp8"),
        "h2d": spec.h2d.name,
        "h2d_bps": spec.h2d.bandwidth_bps,
        "h2d_effective_bps": spec.h2d.effective_bps,
        "dram_bytes": spec.cpu.dram_bytes,
        "dram_bps": spec.cpu.dram_bps,
        "ssd_read_bps": spec.ssd_read_bps,
    }


def preset_table(specs) -> str:
    from moesim.units import format_bytes, format_rate

    rows = []
    for spec in specs:
        s = summary(spec)
        rows.append(
            [
                s["name"],
                s["gpu"],
                format_bytes(s["hbm_bytes"]),
                format_rate(s["hbm_bps"]),
                _tflops(s["bf16_flops"]),
                _tflops(s["fp8_flops"]),
                s["h2d"],
                format_rate(s["h2d_effective_bps"]),
                format_bytes(s["dram_bytes"]),
                format_rate(s["dram_bps"]),
                "-" if s["ssd_read_bps"] is None else format_rate(s["ssd_read_bps"]),
            ]
        )
    headers = [
        "hardware",
        "gpu",
        "HBM",
        "HBM bw",
        "bf16 TF",
        "fp8 TF",
        "host->gpu",
        "achieved",
        "DRAM",
        "DRAM bw",
        "SSD read",
    ]
    return format_table(headers, rows, align="llrrrrlrrrr")


def derived(spec) -> dict[str, Any]:
    return {
        "h2d_effective_bps": spec.h2d.effective_bps,
        "d2h_effective_bps": spec.d2h.effective_bps,
        "ssd_read_bps": spec.ssd_read_bps,
        "gpu_compute_dtypes": {
            dtype: spec.gpu.compute_dtype(dtype) for dtype in ("bf16", "fp8", "int8", "fp4", "int4")
        },
    }


def model_fit(spec, model, fmt: str | None) -> dict[str, Any]:
    """Per-expert transfer cost and how many experts fit in HBM beside the model's resident weights."""
    expert_fmt = fmt or model.default_expert_format
    expert_bytes = model.expert_bytes(expert_fmt)
    resident = model.non_expert_bytes()
    free = spec.gpu.hbm_bytes - resident
    num_experts = model.num_moe_layers * model.num_experts
    capacity = min(max(free, 0) // expert_bytes, num_experts)
    return {
        "model": model.name,
        "expert_format": expert_fmt,
        "expert_bytes": expert_bytes,
        "h2d_s": spec.h2d.transfer_s(expert_bytes),
        "ssd_s": None if spec.ssd_read_bps is None else spec.ssd.latency_s + expert_bytes / spec.ssd_read_bps,
        "non_expert_bytes": resident,
        "hbm_free_bytes": free,
        "capacity_experts": int(capacity),
        "num_experts": num_experts,
        "fraction_resident": min(capacity / num_experts, 1.0),
        "all_experts_bytes": num_experts * expert_bytes,
        "fits_in_dram": resident + num_experts * expert_bytes <= spec.cpu.dram_bytes,
    }


def render_sheet(spec, data: dict[str, Any]) -> str:
    from moesim.units import format_bytes, format_duration, format_rate

    gpu, cpu = spec.gpu, spec.cpu
    lines = [f"{spec.name}", f"  notes    {spec.notes or '-'}", f"  sources  {spec.sources or '-'}", ""]
    lines += [
        (
            f"GPU  {gpu.name}: {format_bytes(gpu.hbm_bytes)} at {format_rate(gpu.hbm_bps)}, "
            f"kernel launch {format_duration(gpu.launch_s)}"
        ),
        f"     source: {gpu.source or '-'}" + (f"; {gpu.notes}" if gpu.notes else ""),
    ]
    dtypes = data["derived"]["gpu_compute_dtypes"]
    lines.append(
        format_table(
            ["dtype", "dense TFLOP/s", "runs as"],
            [
                [dtype, _tflops(gpu.flops_for(dtype)), dtypes.get(dtype, dtype)]
                for dtype in dict.fromkeys([*gpu.flops_by_dtype, "bf16", "fp8", "int8", "fp4", "int4"])
            ],
            align="lrl",
        )
    )
    lines += [
        "",
        f"CPU  {cpu.name}: {cpu.num_cores} cores, {format_bytes(cpu.dram_bytes)} DRAM at {format_rate(cpu.dram_bps)}, "
        + ", ".join(f"{dtype} {rate / 1e12:.2f} TFLOP/s" for dtype, rate in cpu.flops_by_dtype.items()),
        f"     {cpu.notes or ''}".rstrip(),
        "",
        "links",
    ]
    links = [
        ("host->gpu", spec.h2d),
        ("gpu->host", spec.d2h),
        ("ssd->host", spec.ssd_link),
        ("ssd->gpu", spec.ssd_gpu_link),
    ]
    lines.append(
        format_table(
            ["path", "link", "theoretical", "efficiency", "achieved", "latency", "channels", "duplex"],
            [
                [
                    path,
                    link.name,
                    format_rate(link.bandwidth_bps),
                    f"{link.efficiency:.2f}",
                    format_rate(link.effective_bps),
                    format_duration(link.latency_s),
                    link.channels,
                    "yes" if link.duplex else "no",
                ]
                for path, link in links
                if link is not None
            ],
            align="llrrrrrl",
        )
    )
    if spec.ssd is not None:
        ssd = spec.ssd
        lines += [
            "",
            (
                f"SSD  {ssd.name}: {format_bytes(ssd.capacity_bytes)}, reads {format_rate(ssd.read_bps)}, "
                f"latency {format_duration(ssd.latency_s)}; achieved {format_rate(spec.ssd_read_bps)}"
            ),
            f"     {ssd.notes or ssd.source}",
        ]
    fit = data.get("model_fit")
    if fit:
        lines += [
            "",
            (
                f"{fit['model']} experts in {fit['expert_format']}: {format_bytes(fit['expert_bytes'])} each, "
                f"{format_bytes(fit['all_experts_bytes'])} in all"
            ),
            f"  one expert host->gpu   {format_duration(fit['h2d_s'])}",
        ]
        if fit["ssd_s"] is not None:
            lines.append(f"  one expert from SSD    {format_duration(fit['ssd_s'])}")
        lines += [
            (
                f"  resident non-expert    {format_bytes(fit['non_expert_bytes'])}; "
                f"HBM left {format_bytes(fit['hbm_free_bytes'])}"
            ),
            (
                f"  experts that fit       {fit['capacity_experts']} of {fit['num_experts']} "
                f"({100 * fit['fraction_resident']:.1f} %)"
            ),
            f"  whole model in DRAM    {'yes' if fit['fits_in_dram'] else 'no'}",
        ]
    return "\n".join(lines)
