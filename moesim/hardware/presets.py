"""Preset machines (:func:`get_hardware`), GPUs (:func:`get_gpu`) and links (:func:`get_link`).

GPU numbers are the vendor spec sheets' peak *dense* tensor-core rates (the sheets print 2:4-sparse
rates, twice these, with an asterisk); ``fp32`` is the non-tensor rate. GeForce cards are listed at
their FP32-accumulate rates, which is what bf16/fp16 GEMMs in inference frameworks use. Device memory
is binary (a "24 GB" card has 24 GiB of DRAM chips; ECC, where enabled, and the CUDA context take a
few hundred MiB of it, which the cache configuration, not this spec, accounts for).

Host CPUs, DRAM and SSDs are *assumptions* about a typical machine of each class, stated in each
preset's ``notes``; override them (``hardware.cpu.dram_bytes = "64GiB"``) to match a real box.

Link efficiency. PCIe carries data in transaction-layer packets: with a 256-byte maximum payload
every packet also carries about 24 bytes of header, framing and CRC, and data-link packets (ACKs,
flow-control credits) take a few percent more, so the protocol alone caps a x16 link near 88-90 % of
its post-encoding rate; DMA-engine and host-memory effects leave large pinned-memory copies at about
80 %. Hence the default ``efficiency=0.8`` of :func:`pcie_link`. NVLink-C2C uses the same 0.8 as an
assumption. Per-transfer latency (driver call, DMA setup, completion) is taken as 10 us on PCIe and
5 us on NVLink-C2C; kernel launch overhead as 5 us. These are assumptions, not measurements.
"""

from __future__ import annotations

from collections.abc import Callable

from moesim import fields as F
from moesim.hardware.spec import (
    _SUBSPECS,
    CPUSpec,
    GPUSpec,
    HardwareSpec,
    LinkSpec,
    SSDSpec,
    _prefix,
    override_hardware,
)
from moesim.policies.registry import Registry

GPUS: Registry[GPUSpec] = Registry("GPU preset")
LINKS: Registry[LinkSpec] = Registry("link preset")
HARDWARE: Registry[HardwareSpec] = Registry("hardware preset")

# PCIe generation -> (transfer rate per lane in GT/s, line-encoding efficiency): PCI-SIG base specs.
PCIE_GENERATIONS = {1: (2.5, 8 / 10), 2: (5.0, 8 / 10), 3: (8.0, 128 / 130), 4: (16.0, 128 / 130), 5: (32.0, 128 / 130)}
PCIE_EFFICIENCY = 0.8
PCIE_LATENCY_S = 10e-6


def pcie_link(
    generation: int,
    lanes: int = 16,
    *,
    efficiency: float = PCIE_EFFICIENCY,
    latency_s: float = PCIE_LATENCY_S,
    channels: int = 1,
) -> LinkSpec:
    """One direction of a PCIe link: ``GT/s x lanes x encoding / 8`` bytes/s theoretical.

    PCIe 3.0 x16 = 15.75 GB/s, 4.0 x16 = 31.5 GB/s, 5.0 x16 = 63.0 GB/s per direction.
    """
    generation = F.check_int("pcie.generation", generation, minimum=1, maximum=max(PCIE_GENERATIONS))
    lanes = F.check_int("pcie.lanes", lanes, minimum=1, maximum=32)
    rate_gt, encoding = PCIE_GENERATIONS[generation]
    return LinkSpec(
        name=f"pcie{generation}-x{lanes}",
        bandwidth_bps=rate_gt * 1e9 * lanes * encoding / 8,
        latency_s=latency_s,
        channels=channels,
        duplex=True,
        efficiency=efficiency,
        notes=f"PCIe {generation}.0 x{lanes}: {rate_gt:g} GT/s per lane, "
        f"{'128b/130b' if generation >= 3 else '8b/10b'} encoding",
    )


def register_gpu(spec: GPUSpec, *, aliases: tuple[str, ...] = ()) -> GPUSpec:
    return GPUS.register(spec.name, aliases=aliases)(spec)


def register_link(spec: LinkSpec, *, aliases: tuple[str, ...] = ()) -> LinkSpec:
    return LINKS.register(spec.name, aliases=aliases)(spec)


def register_hardware(spec: HardwareSpec, *, aliases: tuple[str, ...] = ()) -> HardwareSpec:
    return HARDWARE.register(spec.name, aliases=aliases)(spec)


def get_gpu(name: object, *, field: str = "gpu") -> GPUSpec:
    return GPUS.get(name, field=field)


def get_link(name: object, *, field: str = "link") -> LinkSpec:
    return LINKS.get(name, field=field)


def get_hardware(name: object, *, field: str = "hardware") -> HardwareSpec:
    """The preset machine called ``name`` (e.g. ``"rtx4090-pcie4"``).

    Raises
    ------
    ConfigError
        ``hardware: unknown hardware preset 'x'; use one of t4-pcie3, ...``.
    """
    return HARDWARE.get(name, field=field)


def list_hardware() -> tuple[str, ...]:
    return HARDWARE.names()


def list_gpus() -> tuple[str, ...]:
    return GPUS.names()


def list_links() -> tuple[str, ...]:
    return LINKS.names()


def _no_presets(key: str) -> Callable[..., object]:
    def get(name: object, *, field: str) -> object:
        F.fail(field, f"there are no {key} presets; give a table of fields")

    return get


def subspec_from_config(key: str, value: object, where: str) -> object:
    """A component of a :class:`HardwareSpec` from a spec, a preset name (GPUs and links) or a table."""
    if value is None:
        return None
    cls, prefix = _SUBSPECS[key], _prefix(key)
    getters = {GPUSpec: get_gpu, LinkSpec: get_link}
    return F.resolve(
        value,
        where,
        spec_type=cls,
        example={GPUSpec: "rtx4090", LinkSpec: "pcie4-x16"}.get(cls, ""),
        get_preset=getters.get(cls) or _no_presets(key),
        from_table=lambda table, path: F.build(cls, table, path, default_prefix=prefix),
        override=lambda base, changes, path: F.replace_checked(base, path, prefix, changes),
    )


def hardware_from_config(value: object, where: str = "hardware") -> HardwareSpec:
    """A :class:`HardwareSpec` from a spec, a preset name, or a table.

    A table with ``preset`` starts from that machine and overrides the rest, nested tables and dotted
    keys included: ``{"preset": "rtx4090-pcie4", "h2d": "pcie3-x16", "cpu": {"dram_bytes": "64GiB"}}``.
    """
    return F.resolve(
        value,
        where,
        spec_type=HardwareSpec,
        example="rtx4090-pcie4",
        get_preset=get_hardware,
        from_table=HardwareSpec.from_dict,
        override=override_hardware,
    )


# NVMe drives stream at ~95 % of their x4 link (a 990 PRO reads 7.45 of PCIe 4.0 x4's 7.88 GB/s).
_SSD_LINK_EFFICIENCY = 0.95


def _machine(
    name: str,
    gpu: str,
    cpu: CPUSpec,
    link: LinkSpec,
    ssd: SSDSpec,
    ssd_pcie_gen: int,
    *,
    notes: str,
    sources: str,
    aliases: tuple[str, ...] = (),
) -> HardwareSpec:
    """Register a machine whose host<->GPU link is symmetric and whose SSD sits on 4 PCIe lanes."""
    return register_hardware(
        HardwareSpec(
            name=name,
            gpu=get_gpu(gpu),
            cpu=cpu,
            h2d=link,
            d2h=link,
            ssd=ssd,
            ssd_link=pcie_link(ssd_pcie_gen, 4, efficiency=_SSD_LINK_EFFICIENCY),
            notes=notes,
            sources=sources,
        ),
        aliases=aliases,
    )


# fmt: off
# ---------------------------------------------------------------------------------------- links
for _gen in (3, 4, 5):
    for _lanes in (16, 8, 4):
        register_link(pcie_link(_gen, _lanes), aliases=(f"pcie{_gen}",) if _lanes == 16 else ())
del _gen, _lanes
# NVIDIA GH200 datasheet: NVLink-C2C 900 GB/s total, i.e. 450 GB/s each way, cache-coherent.
NVLINK_C2C = register_link(LinkSpec(
    name="nvlink-c2c", bandwidth_bps="450GB/s", latency_s="5us", efficiency=0.8,
    notes="NVLink-C2C, 900 GB/s bidirectional (GH200 datasheet); 0.8 efficiency assumed",
), aliases=("c2c",))

# ---------------------------------------------------------------------------------------- GPUs
# NVIDIA T4 datasheet: 16 GB GDDR6, 320 GB/s; 65 TFLOPS FP16 (mixed precision), 130 TOPS INT8,
# 260 TOPS INT4, 8.1 TFLOPS FP32; PCIe 3.0 x16. Turing has no bf16 (bf16 runs at the fp16 rate).
register_gpu(GPUSpec(
    name="t4", hbm_bytes="16GiB", hbm_bps="320GB/s",
    flops={"fp32": "8.1TFLOPS", "fp16": "65TFLOPS", "int8": "130TFLOPS", "int4": "260TFLOPS"},
    source="NVIDIA T4 Tensor Core GPU datasheet",
    notes="ECC on by default leaves about 15 GiB usable",
), aliases=("tesla-t4",))
# GeForce RTX 3060 12 GB: 360 GB/s (15 Gbps x 192-bit); NVIDIA quotes 101 tensor TFLOPS (FP16, sparse,
# FP16 accumulate) -> 50.6 dense, and GA10x GeForce runs FP32-accumulate at half that: 25.3.
# INT8 dense = 2x FP16-accumulate = 101 TOPS; FP32 12.7 TFLOPS (3584 cores x 2 x 1.777 GHz).
register_gpu(GPUSpec(
    name="rtx3060-12gb", hbm_bytes="12GiB", hbm_bps="360GB/s",
    flops={"fp32": "12.7TFLOPS", "bf16": "25.3TFLOPS", "fp16": "25.3TFLOPS", "int8": "101TFLOPS",
           "int4": "202TFLOPS"},
    source="NVIDIA GeForce RTX 3060 specifications; GA102 whitepaper appendix A for the GeForce ratios",
), aliases=("rtx3060",))
# NVIDIA Ampere GA102 whitepaper, appendix A (GeForce RTX 3090): 936 GB/s, 24 GB GDDR6X; peak FP16/BF16
# tensor with FP32 accumulate 71 TFLOPS dense, INT8 284 TOPS, INT4 568 TOPS, FP32 35.6 TFLOPS.
register_gpu(GPUSpec(
    name="rtx3090", hbm_bytes="24GiB", hbm_bps="936GB/s",
    flops={"fp32": "35.6TFLOPS", "bf16": "71TFLOPS", "fp16": "71TFLOPS", "int8": "284TFLOPS",
           "int4": "568TFLOPS"},
    source="NVIDIA Ampere GA102 GPU architecture whitepaper v2, appendix A",
))
# NVIDIA Ada Lovelace whitepaper (GeForce RTX 4090): 1008 GB/s, 24 GB GDDR6X; FP16/BF16 tensor with
# FP32 accumulate 165.2 TFLOPS dense, FP8 (FP32 accumulate) 330.3, INT8 660.6 TOPS, INT4 1321.2,
# FP32 82.6 TFLOPS.
register_gpu(GPUSpec(
    name="rtx4090", hbm_bytes="24GiB", hbm_bps="1008GB/s",
    flops={"fp32": "82.6TFLOPS", "bf16": "165.2TFLOPS", "fp16": "165.2TFLOPS", "fp8": "330.3TFLOPS",
           "int8": "660.6TFLOPS", "int4": "1321.2TFLOPS"},
    source="NVIDIA Ada Lovelace GPU architecture whitepaper v1.1, appendix (GeForce RTX 4090)",
))
# NVIDIA L4 datasheet: 24 GB GDDR6, 300 GB/s; FP8 485 / BF16 242 / INT8 485 (with sparsity) ->
# 242.5 / 121 / 242.5 dense; FP32 30.3 TFLOPS; PCIe 4.0 x16.
register_gpu(GPUSpec(
    name="l4", hbm_bytes="24GiB", hbm_bps="300GB/s",
    flops={"fp32": "30.3TFLOPS", "tf32": "60TFLOPS", "bf16": "121TFLOPS", "fp16": "121TFLOPS",
           "fp8": "242.5TFLOPS", "int8": "242.5TFLOPS"},
    source="NVIDIA L4 Tensor Core GPU datasheet",
))
# NVIDIA A100 datasheet (80GB PCIe): 1935 GB/s HBM2e; BF16/FP16 312 TFLOPS dense, INT8 624 TOPS,
# INT4 1248 TOPS, TF32 156, FP32 19.5.
register_gpu(GPUSpec(
    name="a100-80gb-pcie", hbm_bytes="80GiB", hbm_bps="1935GB/s",
    flops={"fp32": "19.5TFLOPS", "tf32": "156TFLOPS", "bf16": "312TFLOPS", "fp16": "312TFLOPS",
           "int8": "624TFLOPS", "int4": "1248TFLOPS"},
    source="NVIDIA A100 Tensor Core GPU datasheet",
), aliases=("a100-80gb", "a100"))
# NVIDIA H100 datasheet (H100 PCIe): 80 GB HBM2e, 2.0 TB/s; BF16/FP16 1513, FP8 3026, INT8 3026
# (with sparsity) -> 756.5 / 1513 / 1513 dense; TF32 378; FP32 51 TFLOPS; PCIe 5.0 x16.
register_gpu(GPUSpec(
    name="h100-pcie", hbm_bytes="80GiB", hbm_bps="2000GB/s",
    flops={"fp32": "51TFLOPS", "tf32": "378TFLOPS", "bf16": "756.5TFLOPS", "fp16": "756.5TFLOPS",
           "fp8": "1513TFLOPS", "int8": "1513TFLOPS"},
    source="NVIDIA H100 Tensor Core GPU datasheet (PCIe column)",
))
# NVIDIA H100 datasheet (H100 SXM): 80 GB HBM3, 3.35 TB/s; BF16/FP16 1979, FP8 3958, INT8 3958
# (with sparsity) -> 989.5 / 1979 / 1979 dense; TF32 494.5; FP32 67 TFLOPS.
_H100_SXM_FLOPS = {"fp32": "67TFLOPS", "tf32": "494.5TFLOPS", "bf16": "989.5TFLOPS", "fp16": "989.5TFLOPS",
                   "fp8": "1979TFLOPS", "int8": "1979TFLOPS"}
register_gpu(GPUSpec(
    name="h100-sxm", hbm_bytes="80GiB", hbm_bps="3350GB/s", flops=_H100_SXM_FLOPS,
    source="NVIDIA H100 Tensor Core GPU datasheet (SXM column)",
), aliases=("h100",))
# NVIDIA GH200 Grace Hopper Superchip datasheet: H100 with 96 GB HBM3 at 4 TB/s, compute as H100 SXM.
register_gpu(GPUSpec(
    name="gh200-h100-96gb", hbm_bytes="96GiB", hbm_bps="4000GB/s", flops=_H100_SXM_FLOPS,
    source="NVIDIA GH200 Grace Hopper Superchip datasheet (96 GB HBM3 variant)",
), aliases=("gh200-gpu",))

# ---------------------------------------------------------------------------------------- SSDs
_NVME_GEN4 = SSDSpec(
    name="nvme-gen4", capacity_bytes="2TB", read_bps="7GB/s", latency_s="80us",
    source="consumer PCIe 4.0 NVMe class (e.g. Samsung 990 PRO: up to 7,450 MB/s sequential read)",
    notes="assumed: 7 GB/s sequential read, 80 us read latency",
)
_NVME_DC_GEN4 = SSDSpec(
    name="nvme-dc-gen4", capacity_bytes="3.84TB", read_bps="6.8GB/s", latency_s="80us",
    source="datacenter PCIe 4.0 NVMe class (e.g. Samsung PM9A3: 6,900 MB/s sequential read)",
    notes="assumed: 6.8 GB/s sequential read, 80 us read latency",
)
_NVME_CLOUD = SSDSpec(
    name="cloud-local-nvme", capacity_bytes="125GB", read_bps="2GB/s", latency_s="100us",
    notes="assumed: instance-store NVMe of a small cloud VM, 2 GB/s read, 100 us latency",
)

# ---------------------------------------------------------------------------------------- machines
_PCIE3, _PCIE4, _PCIE5 = get_link("pcie3-x16"), get_link("pcie4-x16"), get_link("pcie5-x16")


_machine(
    "t4-pcie3", "t4",
    CPUSpec(name="cloud VM, 4 vCPU Cascade Lake", num_cores=2, dram_bytes="16GiB", dram_bps="20GB/s",
            flops={"fp32": "320GFLOPS"},
            notes="AWS g4dn.xlarge class: 2 cores x 2 AVX-512 FMA x 16 fp32 lanes x 2 x 2.5 GHz; "
                  "DRAM share of a 6-channel DDR4-2933 socket assumed 20 GB/s"),
    _PCIE3, _NVME_CLOUD, 3,
    notes="host, DRAM and SSD are assumptions for a T4 cloud VM",
    sources="NVIDIA T4 datasheet; PCIe 3.0 base specification",
    aliases=("t4",),
)

_machine(
    "rtx3060-pcie4", "rtx3060-12gb",
    CPUSpec(name="Ryzen 5 5600X-class desktop", num_cores=6, dram_bytes="32GiB", dram_bps="51.2GB/s",
            flops={"fp32": "800GFLOPS"},
            notes="6 Zen 3 cores x 32 fp32 FLOP/cycle (2 x 256-bit FMA) x ~4.2 GHz; "
                  "2 channels DDR4-3200 = 51.2 GB/s"),
    _PCIE4, _NVME_GEN4, 4,
    notes="host, DRAM and SSD are assumptions for a budget desktop",
    sources="NVIDIA GeForce RTX 3060 specifications; PCIe 4.0 base specification",
    aliases=("rtx3060",),
)

_machine(
    "rtx3090-pcie4", "rtx3090",
    CPUSpec(name="Ryzen 9 5950X-class desktop", num_cores=16, dram_bytes="64GiB", dram_bps="51.2GB/s",
            flops={"fp32": "1.9TFLOPS"},
            notes="16 Zen 3 cores x 32 fp32 FLOP/cycle x ~3.8 GHz all-core; 2 channels DDR4-3200"),
    _PCIE4, _NVME_GEN4, 4,
    notes="host, DRAM and SSD are assumptions for a high-end desktop",
    sources="NVIDIA GA102 whitepaper appendix A; PCIe 4.0 base specification",
    aliases=("rtx3090",),
)

_machine(
    "rtx4090-pcie4", "rtx4090",
    CPUSpec(name="Ryzen 9 7950X-class desktop", num_cores=16, dram_bytes="128GiB", dram_bps="76.8GB/s",
            flops={"fp32": "2.3TFLOPS", "bf16": "4.6TFLOPS"},
            notes="16 Zen 4 cores x 32 fp32 FLOP/cycle x ~4.5 GHz (AVX512-BF16 doubles it); "
                  "4 DIMMs of DDR5 on 2 channels run at about 4800 MT/s = 76.8 GB/s"),
    _PCIE4, _NVME_GEN4, 4,
    notes="host, DRAM and SSD are assumptions for an offloading workstation (128 GiB to hold the experts)",
    sources="NVIDIA Ada Lovelace whitepaper; PCIe 4.0 base specification",
    aliases=("rtx4090",),
)

_machine(
    "l4-pcie4", "l4",
    CPUSpec(name="cloud VM, 16 vCPU", num_cores=8, dram_bytes="64GiB", dram_bps="40GB/s",
            flops={"fp32": "1.1TFLOPS"},
            notes="GCP g2-standard-16 / AWS g6.4xlarge class: 8 cores x 64 fp32 FLOP/cycle "
                  "(AVX-512) x ~2.2 GHz; DRAM share assumed 40 GB/s"),
    _PCIE4, _NVME_CLOUD, 4,
    notes="host, DRAM and SSD are assumptions for an L4 cloud VM",
    sources="NVIDIA L4 datasheet; PCIe 4.0 base specification",
    aliases=("l4",),
)

_machine(
    "a100-80gb-pcie4", "a100-80gb-pcie",
    CPUSpec(name="EPYC 7543-class server socket", num_cores=32, dram_bytes="512GiB", dram_bps="204.8GB/s",
            flops={"fp32": "2.9TFLOPS"},
            notes="32 Zen 3 cores x 32 fp32 FLOP/cycle x 2.8 GHz; 8 channels DDR4-3200 = 204.8 GB/s"),
    _PCIE4, _NVME_DC_GEN4, 4,
    notes="host is one server socket given to this GPU (an assumption)",
    sources="NVIDIA A100 datasheet; PCIe 4.0 base specification",
    aliases=("a100-pcie4",),
)

_SPR = {"num_cores": 56, "dram_bytes": "1TiB", "dram_bps": "307.2GB/s",
            "flops": {"fp32": "7.2TFLOPS", "bf16": "115TFLOPS"},
            "notes": "56 Sapphire Rapids cores x 64 fp32 FLOP/cycle (2 AVX-512 FMA) x 2.0 GHz; bf16 is the "
                  "AMX peak (1024 FLOP/cycle/core); 8 channels DDR5-4800 = 307.2 GB/s"}

_machine(
    "h100-pcie5", "h100-pcie",
    CPUSpec(name="Xeon Platinum 8480+-class socket", **_SPR),
    _PCIE5, _NVME_DC_GEN4, 4,
    notes="host is one server socket given to this GPU (an assumption)",
    sources="NVIDIA H100 datasheet (PCIe); PCIe 5.0 base specification",
    aliases=("h100-pcie",),
)

_machine(
    "h100-sxm-pcie5", "h100-sxm",
    CPUSpec(name="Xeon Platinum 8480C socket (DGX H100 class)", **_SPR),
    _PCIE5, _NVME_DC_GEN4, 4,
    notes="one H100 SXM with the socket it hangs off; in a DGX H100 four GPUs share that socket, "
          "so per-GPU DRAM bandwidth is lower when all are busy",
    sources="NVIDIA H100 datasheet (SXM); NVIDIA DGX H100 user guide; PCIe 5.0 base specification",
    aliases=("h100-sxm",),
)

_machine(
    "gh200-c2c", "gh200-h100-96gb",
    CPUSpec(name="Grace (72 Neoverse V2 cores)", num_cores=72, dram_bytes="480GiB", dram_bps="512GB/s",
            flops={"fp32": "7.1TFLOPS"},
            notes="72 cores x 4 x 128-bit SVE2 FMA pipes (32 fp32 FLOP/cycle) x 3.1 GHz; "
                  "480 GB LPDDR5X at up to 512 GB/s (GH200 datasheet)"),
    NVLINK_C2C, _NVME_DC_GEN4, 5,
    notes="CPU and GPU share a coherent address space over NVLink-C2C; transfers modelled as copies",
    sources="NVIDIA GH200 Grace Hopper Superchip datasheet; NVIDIA Grace CPU datasheet",
    aliases=("gh200",),
)
# fmt: on
