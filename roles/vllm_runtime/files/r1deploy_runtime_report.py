#!/usr/bin/env python3
"""Report what the serving venv can do on this host, as JSON (run with the venv's python).

Versions of python/torch/vLLM/Ray, and with --gpu: torch's CUDA arch list and one real vLLM kernel
launch on GPU 0, which fails with "no kernel image is available" when the wheels lack this GPU's
architecture (the classic V100 failure), long before the API server would.
"""

import argparse
import importlib
import importlib.metadata
import json
import platform

# CUDA builds of these crash the import of vLLM's CPU build; the cpu lock never installs them.
FORBIDDEN_ON_CPU = ("torchvision", "torchaudio", "torchcodec")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", action="store_true", help="check CUDA kernels on GPU 0")
    args = parser.parse_args()
    report = {"versions": {"python": platform.python_version()}, "errors": {}}
    modules = {}
    for name in ("torch", "vllm", "ray"):
        try:
            modules[name] = importlib.import_module(name)
            report["versions"][name] = getattr(modules[name], "__version__", "")
        except Exception as exc:  # report every import failure, not just the first
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
    installed = set()
    for dist in importlib.metadata.distributions():
        installed.add((dist.metadata["Name"] or "").lower())
    report["installed_forbidden_on_cpu"] = sorted(set(FORBIDDEN_ON_CPU) & installed)
    torch = modules.get("torch")
    if torch is not None:
        report["torch_cuda"] = torch.version.cuda or ""
        report["cuda_available"] = bool(torch.cuda.is_available())
        if args.gpu and report["cuda_available"]:
            report["torch_arch_list"] = list(torch.cuda.get_arch_list())
            try:
                from vllm import _custom_ops as ops

                x = torch.randn(4, 128, device="cuda", dtype=torch.float16)
                weight = torch.ones(128, device="cuda", dtype=torch.float16)
                out = torch.empty_like(x)
                ops.rms_norm(out, x, weight, 1e-6)
                torch.cuda.synchronize()
                report["kernel_launch"] = "ok"
            except Exception as exc:
                report["kernel_launch"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
