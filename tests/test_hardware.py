"""Hardware specs: spec-sheet numbers, link arithmetic, unit strings, validation, overrides, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from moesim.cli import main
from moesim.errors import ConfigError
from moesim.hardware import (
    GPUSpec,
    HardwareSpec,
    LinkSpec,
    get_gpu,
    get_hardware,
    get_link,
    hardware_from_config,
    list_hardware,
    pcie_link,
)
from moesim.models import get_model

REQUIRED = [
    "t4-pcie3",
    "rtx3060-pcie4",
    "rtx3090-pcie4",
    "rtx4090-pcie4",
    "l4-pcie4",
    "a100-80gb-pcie4",
    "h100-pcie5",
    "h100-sxm-pcie5",
    "gh200-c2c",
]
GIB = 2**30

# (GPU preset, memory GiB, memory GB/s, dtype, rate the spec sheet prints, printed rate is 2:4-sparse)
SPEC_SHEETS = [
    ("t4", 16, 320, "fp16", 65e12, False),
    ("rtx3090", 24, 936, "bf16", 71e12, False),
    ("rtx4090", 24, 1008, "bf16", 165.2e12, False),
    ("rtx4090", 24, 1008, "fp8", 330.3e12, False),
    ("l4", 24, 300, "bf16", 242e12, True),
    ("l4", 24, 300, "fp8", 485e12, True),
    ("a100-80gb-pcie", 80, 1935, "bf16", 312e12, False),
    ("h100-pcie", 80, 2000, "bf16", 1513e12, True),
    ("h100-pcie", 80, 2000, "fp8", 3026e12, True),
    ("h100-sxm", 80, 3350, "bf16", 1979e12, True),
    ("h100-sxm", 80, 3350, "fp8", 3958e12, True),
    ("gh200-h100-96gb", 96, 4000, "fp8", 3958e12, True),
]


def test_required_presets_exist_and_round_trip():
    assert set(REQUIRED) <= set(list_hardware())
    for name in list_hardware():
        spec = get_hardware(name)
        assert HardwareSpec.from_dict(spec.to_dict()) == spec
        assert hardware_from_config(json.loads(json.dumps(spec.to_dict()))) == spec
        assert spec.with_overrides() == spec
        assert 0 < spec.h2d.efficiency <= 1 and spec.h2d.effective_bps < spec.h2d.bandwidth_bps
        assert spec.gpu.flops_for("bf16") > spec.gpu.flops_for("fp32") > 0
        assert spec.cpu.dram_bytes > spec.gpu.hbm_bytes // 2 and spec.notes and spec.sources


@pytest.mark.parametrize(("gpu", "mem_gib", "bw_gbps", "dtype", "printed", "sparse"), SPEC_SHEETS)
def test_gpu_presets_use_dense_spec_sheet_rates(gpu, mem_gib, bw_gbps, dtype, printed, sparse):
    spec = get_gpu(gpu)
    assert spec.hbm_bytes == mem_gib * GIB
    assert spec.hbm_bps == bw_gbps * 1e9
    assert spec.flops_for(dtype) == pytest.approx(printed / 2 if sparse else printed, rel=1e-3)


def test_pcie_rates_by_hand():
    assert pcie_link(3).bandwidth_bps == pytest.approx(8e9 * 16 * 128 / 130 / 8)  # 15.75 GB/s
    assert pcie_link(4).bandwidth_bps == pytest.approx(16e9 * 16 * 128 / 130 / 8)  # 31.51 GB/s
    assert pcie_link(5).bandwidth_bps == pytest.approx(32e9 * 16 * 128 / 130 / 8)  # 63.02 GB/s
    assert pcie_link(2, 8).bandwidth_bps == pytest.approx(5e9 * 8 * 0.8 / 8)  # 8b/10b
    link = get_link("pcie4-x16")
    assert link.efficiency == 0.8 and link.effective_bps == pytest.approx(0.8 * 31.5077e9, rel=1e-4)
    assert get_link("pcie4") is link
    # a Mixtral bf16 expert over PCIe 4.0 x16: 10 us + 352 MB / 25.2 GB/s
    nbytes = 3 * 4096 * 14336 * 2
    assert link.transfer_s(nbytes) == pytest.approx(10e-6 + nbytes / link.effective_bps)
    assert get_link("nvlink-c2c").bandwidth_bps == 450e9
    assert get_hardware("gh200-c2c").h2d_bps == pytest.approx(360e9)
    # the SSD path is the slower of the drive and its four lanes
    spec = get_hardware("rtx4090-pcie4")
    assert spec.ssd_read_bps == min(spec.ssd.read_bps, spec.ssd_link.effective_bps) == 7e9


def test_unit_strings_are_parsed():
    gpu = GPUSpec(
        name="x", hbm_bytes="24GiB", hbm_bps="1008GB/s", flops={"bf16": "82.6TFLOPS", "fp32": 1e12}, launch_s="5us"
    )
    assert (gpu.hbm_bytes, gpu.hbm_bps) == (24 * GIB, 1008e9) and gpu.launch_s == pytest.approx(5e-6)
    assert gpu.flops_by_dtype == {"fp32": 1e12, "bf16": 82.6e12}
    link = LinkSpec(name="l", bandwidth_bps="32GB/s", latency_s="1.5ms")
    assert (link.bandwidth_bps, link.efficiency, link.channels, link.duplex) == (32e9, 0.8, 1, True)
    assert link.latency_s == pytest.approx(1.5e-3)


def test_flops_fall_back_to_the_16_bit_rate_without_native_support():
    t4, ampere, hopper = get_gpu("t4"), get_gpu("rtx3090"), get_gpu("h100-sxm")
    assert t4.compute_dtype("bf16") == "fp16" and t4.flops_for("bf16") == 65e12
    assert ampere.compute_dtype("fp8") == "bf16" and ampere.flops_for("fp8") == 71e12
    assert hopper.compute_dtype("fp4") == "bf16" and hopper.flops_for("fp4") == 989.5e12
    assert hopper.compute_dtype("fp8") == "fp8"
    assert get_hardware("rtx4090-pcie4").cpu.flops_for("bf16") == 4.6e12
    assert get_hardware("gh200-c2c").cpu.compute_dtype("bf16") == "fp32"
    with pytest.raises(ConfigError, match="^dtype: unknown dtype 'fp6'; use one of fp32, tf32"):
        t4.flops_for("fp6")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"preset": "rtx4090-pcie4", "h2d.efficiency": 1.5},
            "hardware.h2d.efficiency: expected a fraction in (0, 1] such as 0.8, got 1.5",
        ),
        (
            {"preset": "rtx4090-pcie4", "h2d": {"efficiency": 0}},
            "hardware.h2d.efficiency: expected a fraction in (0, 1] such as 0.8, got 0",
        ),
        ({"preset": "rtx4090-pcie4", "gpu.hbm_bps": "fast"}, "hardware.gpu.hbm_bps: expected a quantity like"),
        (
            {"preset": "rtx4090-pcie4", "gpu": {"hbm_bytes": "24GB/s"}},
            "hardware.gpu.hbm_bytes: expected a size in bytes like '24GiB'",
        ),
        ({"preset": "rtx4090-pcie4", "gpu.flops": {"bf17": 1}}, "hardware.gpu.flops.bf17: unknown dtype; use one of"),
        ({"preset": "rtx4090-pcie4", "cpu.foo": 1}, "hardware.cpu.foo: unknown field; valid fields are"),
        ({"preset": "rtx4090-pcie4", "cpu": "epyc"}, "hardware.cpu: there are no cpu presets; give a table of fields"),
        ({"preset": "rtx4090-pcie4", "gpu": "rtx9090"}, "hardware.gpu: unknown GPU preset 'rtx9090'; use one of t4,"),
        ({"preset": "rtx4090-pcie4", "d2h": {"preset": "pcie9"}}, "hardware.d2h.preset: unknown link preset 'pcie9'"),
        ({"preset": "rtx4090-pcie4", "ssd_link": None}, "hardware.ssd_link: expected the SSD -> host link"),
        ({"preset": "rtx4090-pcie4", "name.x": 1}, "hardware.name: has no sub-fields"),
        ({"preset": "rtx4090-pcie4", "cpu.num_cores": 0}, "hardware.cpu.num_cores: expected an integer >= 1, got 0"),
        ({"preset": "nope"}, "hardware.preset: unknown hardware preset 'nope'; use one of t4-pcie3,"),
        ({"name": "x"}, "hardware.gpu: required field is missing (required: gpu, cpu, h2d, d2h)"),
        (7, "hardware: expected a preset name such as 'rtx4090-pcie4' or a table of fields, got 7"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_field(value, message):
    with pytest.raises(ConfigError) as info:
        hardware_from_config(value)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text


def test_overrides_compose_presets_and_nested_fields():
    spec = hardware_from_config(
        {
            "preset": "rtx4090-pcie4",
            "gpu": "rtx3090",
            "h2d": "pcie3",
            "d2h": {"preset": "pcie5-x16", "efficiency": 0.9},
            "cpu": {"dram_bytes": "64GiB"},
            "ssd.read_bps": "3.5GB/s",
            "notes": "my box",
        },
        where="scenario.hardware",
    )
    assert spec.gpu == get_gpu("rtx3090") and spec.h2d == get_link("pcie3-x16")
    assert spec.d2h.name == "pcie5-x16" and spec.d2h.efficiency == 0.9
    assert spec.cpu.dram_bytes == 64 * GIB and spec.cpu.num_cores == 16
    assert spec.ssd.read_bps == 3.5e9 and spec.notes == "my box"
    same = get_hardware("rtx4090-pcie4").with_overrides(**{"h2d.efficiency": 0.5})
    assert same.h2d_bps == pytest.approx(0.5 * 31.5077e9, rel=1e-4)
    with pytest.raises(ConfigError, match=r"^scenario\.hardware\.h2d\.latency_s: expected a quantity like '10us'"):
        hardware_from_config({"preset": "t4", "h2d.latency_s": "soon"}, where="scenario.hardware")
    assert get_hardware("RTX4090").name == "rtx4090-pcie4"
    no_ssd = hardware_from_config({"preset": "t4", "ssd": None, "ssd_link": None})
    assert no_ssd.ssd is None and no_ssd.ssd_read_bps is None


def test_import_does_not_load_numba():
    code = "import sys, moesim.hardware, moesim.cli.hardware; sys.exit('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_cli_lists_presets(capsys):
    assert main(["hardware"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["hardware", "gpu", "HBM"]
    row = next(line for line in out.splitlines() if line.startswith("rtx4090-pcie4 "))
    assert "pcie4-x16" in row and "25.2 GB/s" in row and "165.2" in row
    assert main(["hardware", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(list_hardware())
    assert rows[0]["h2d_effective_bps"] == pytest.approx(0.8 * 15.7538e9, rel=1e-4)


def test_cli_sheet_with_model_fit(capsys):
    assert main(["hardware", "rtx4090-pcie4", "--model", "mixtral-8x7b", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    model, hw = get_model("mixtral-8x7b"), get_hardware("rtx4090-pcie4")
    fit = data["model_fit"]
    free = 24 * GIB - model.non_expert_bytes()
    assert fit["capacity_experts"] == free // (3 * 4096 * 14336 * 2) == 64
    assert fit["h2d_s"] == pytest.approx(hw.h2d.transfer_s(model.expert_bytes()))
    assert fit["fits_in_dram"] is True
    assert data["hardware"]["h2d"]["efficiency"] == 0.8
    assert main(["hardware", "t4-pcie3", "--model", "mixtral-8x7b", "--format", "hqq-2bit"]) == 0
    text = capsys.readouterr().out
    assert "mixtral-8x7b experts in hqq-2bit" in text and "pcie3-x16" in text and "notes" in text


def test_cli_errors_are_one_line_exit_2(capsys):
    assert main(["hardware", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moesim: error: NAME: unknown hardware preset 'nope'") and err.count("\n") == 1
    assert main(["hardware", "--model", "mixtral-8x7b"]) == 2
    assert "give a hardware NAME too" in capsys.readouterr().err
    assert main(["hardware", "l4", "--model", "mixtrall"]) == 2
    assert capsys.readouterr().err.startswith("moesim: error: --model: unknown model preset 'mixtrall'")
