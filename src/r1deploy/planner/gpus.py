"""GPU registry: compute capability and the memory ``nvidia-smi --query-gpu=memory.total`` reports.

Compute capabilities are NVIDIA's (developer.nvidia.com/cuda-gpus). Memory is what nvidia-smi prints
as ``memory.total`` in MiB with a current (R535+) driver; older drivers with ECC on print a little less
for some boards (V100-32GB: 32510 MiB). In preflight the real value comes from each host's
``r1deploy_gpus`` fact and overrides this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CC = tuple[int, int]

# Compute-capability thresholds: the one home of each (plan, preflight and, through the names below,
# runtime and gpustack import them; tests/static/test_static.py refuses a new literal elsewhere).
# vLLM's floor: no release runs below 7.0 (vllm/platforms/cuda.py; research section 1.1).
MIN_CC: CC = (7, 0)
# The first compute capability that is not Volta (Turing). Below it: no Marlin kernels (AWQ, GPTQ
# Marlin, FP8 weight-only need 7.5), no GSP so no NVIDIA open kernel modules, no sm_70 code in CUDA 13 or
# current vLLM/PyTorch wheels (research sections 1.4 and 2.1).
VOLTA_MAX_CC: CC = (7, 5)
MARLIN_MIN_CC: CC = VOLTA_MAX_CC
OPEN_MODULES_MIN_CC: CC = VOLTA_MAX_CC
# Ampere: bfloat16 (CUDA supported_dtypes, vllm/platforms/cuda.py) and FlashAttention need sm80; below it
# the plan forces --disable-custom-all-reduce and TRITON_ATTN, and MLA models are refused.
AMPERE_MIN_CC: CC = (8, 0)
BF16_MIN_CC: CC = AMPERE_MIN_CC
FLASH_ATTENTION_MIN_CC: CC = AMPERE_MIN_CC
# Native FP8 tensor cores (Ada, Hopper); below it vLLM runs FP8 checkpoints weight-only via Marlin.
FP8_NATIVE_MIN_CC: CC = (8, 9)
# The MLA fast paths (FlashMLA) need SM90.
MLA_FAST_MIN_CC: CC = (9, 0)
# Minimums of vLLM's plain GPTQ and bitsandbytes quantization configs (get_min_capability).
GPTQ_MIN_CC: CC = (6, 0)
BITSANDBYTES_MIN_CC: CC = (7, 0)


def is_volta(cc: CC) -> bool:
    """Volta-class for the serving stack: below :data:`VOLTA_MAX_CC` (V100 is 7.0)."""
    return cc < VOLTA_MAX_CC


class GpuError(ValueError):
    """An unknown GPU name."""


@dataclass(frozen=True)
class GpuSpec:
    name: str  # registry key, lower case
    compute_capability: str  # "7.0"
    memory_mib: int
    smi_names: tuple[str, ...]  # names nvidia-smi prints for this board
    nvlink: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cc_tuple(self) -> tuple[int, int]:
        return parse_cc(self.compute_capability)

    @property
    def architecture(self) -> str:
        return architecture_for_cc(self.compute_capability)


GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("v100-sxm2-16gb", "7.0", 16384, ("Tesla V100-SXM2-16GB",), nvlink=True),
        GpuSpec("v100-sxm2-32gb", "7.0", 32768, ("Tesla V100-SXM2-32GB",), nvlink=True, aliases=("v100",)),
        GpuSpec(
            "v100-sxm3-32gb", "7.0", 32768, ("Tesla V100-SXM3-32GB", "Tesla V100-SXM3-32GB-H"), nvlink=True
        ),
        GpuSpec("v100-pcie-16gb", "7.0", 16384, ("Tesla V100-PCIE-16GB",)),
        GpuSpec("v100-pcie-32gb", "7.0", 32768, ("Tesla V100-PCIE-32GB",)),
        GpuSpec("v100s-pcie-32gb", "7.0", 32768, ("Tesla V100S-PCIE-32GB",)),
        GpuSpec("t4", "7.5", 15360, ("Tesla T4",)),
        GpuSpec("a10", "8.6", 23028, ("NVIDIA A10",)),
        GpuSpec("l4", "8.9", 23034, ("NVIDIA L4",)),
        GpuSpec("l40s", "8.9", 46068, ("NVIDIA L40S",)),
        GpuSpec("a100-40gb", "8.0", 40960, ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"), nvlink=True),
        GpuSpec("a100-80gb", "8.0", 81920, ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"), nvlink=True),
        GpuSpec(
            "h100-80gb",
            "9.0",
            81559,
            ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"),
            nvlink=True,
            aliases=("h100",),
        ),
        GpuSpec(
            "h200", "9.0", 143771, ("NVIDIA H200", "NVIDIA H200 NVL"), nvlink=True, aliases=("h200-141gb",)
        ),
    )
}


def parse_cc(value: str | float | int) -> CC:
    """ "7.0" / 7.0 / "sm_70" / "70" -> (7, 0)."""
    text = str(value).strip().lower().removeprefix("sm_")
    m = re.fullmatch(r"(\d+)\.(\d+)", text)
    if m:
        return int(m.group(1)), int(m.group(2))
    if re.fullmatch(r"\d{2,3}", text):
        return int(text[:-1]), int(text[-1])
    raise ValueError(f'compute capability {value!r} is not of the form MAJOR.MINOR (e.g. "7.0")')


def architecture_for_cc(cc: str) -> str:
    major, minor = parse_cc(cc)
    table = {6: "Pascal", 8: "Ampere" if minor < 9 else "Ada", 9: "Hopper", 10: "Blackwell", 12: "Blackwell"}
    if major == 7:
        return "Volta" if minor < 5 else "Turing"
    return table.get(major, f"sm_{major}{minor}")


def known_gpu_names() -> list[str]:
    return sorted(GPUS)


def load_gpu(name: str) -> GpuSpec:
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    if key in GPUS:
        return GPUS[key]
    for g in GPUS.values():
        if key in g.aliases:
            return g
    by_smi = match_smi_name(str(name))
    if by_smi is not None:
        return by_smi
    raise GpuError(f"unknown GPU {name!r}; known GPUs: {', '.join(known_gpu_names())}")


def match_smi_name(smi_name: str) -> GpuSpec | None:
    """The registry entry whose nvidia-smi name is ``smi_name`` (case-insensitive), if any."""
    want = smi_name.strip().lower()
    for g in GPUS.values():
        if any(want == s.lower() for s in g.smi_names):
            return g
    return None
