"""Hardware specs: GPU, host CPU/DRAM, SSD, links, and preset machines.

:class:`HardwareSpec` ties one :class:`GPUSpec` to its host (:class:`CPUSpec`), host <-> GPU links
(:class:`LinkSpec`, PCIe or NVLink-C2C) and an optional SSD. Presets: :func:`get_hardware` /
:func:`list_hardware` (``"rtx4090-pcie4"``, ``"h100-sxm-pcie5"``, ``"gh200-c2c"``, ...), with GPU and
link presets (:func:`get_gpu`, :func:`get_link`, :func:`pcie_link`) to compose new machines.
Scenarios resolve what they were given with :func:`hardware_from_config`.
"""

from moesim.hardware.presets import (
    GPUS,
    HARDWARE,
    LINKS,
    get_gpu,
    get_hardware,
    get_link,
    hardware_from_config,
    list_gpus,
    list_hardware,
    list_links,
    pcie_link,
    register_gpu,
    register_hardware,
    register_link,
)
from moesim.hardware.spec import FLOPS_DTYPES, CPUSpec, GPUSpec, HardwareSpec, LinkSpec, SSDSpec

__all__ = [
    "FLOPS_DTYPES",
    "GPUS",
    "HARDWARE",
    "LINKS",
    "CPUSpec",
    "GPUSpec",
    "HardwareSpec",
    "LinkSpec",
    "SSDSpec",
    "get_gpu",
    "get_hardware",
    "get_link",
    "hardware_from_config",
    "list_gpus",
    "list_hardware",
    "list_links",
    "pcie_link",
    "register_gpu",
    "register_hardware",
    "register_link",
]
