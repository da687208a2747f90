"""Serving-venv profile selection and the installed-venv checks (r1deploy.runtime)."""

from __future__ import annotations

import pytest

from r1deploy import runtime


def gpus(cc: str, count: int = 8) -> dict:
    return {"count": count, "devices": [{"compute_capability": cc}] * count}


@pytest.mark.parametrize(
    ("fact", "profile", "arch"),
    [
        ({"count": 0, "devices": []}, "cpu", ""),
        (gpus("7.0"), "volta", "sm_70"),  # V100
        (gpus("7.5"), "cuda", "sm_75"),  # T4
        (gpus("8.0"), "cuda", "sm_80"),  # A100
        (gpus("9.0", 1), "cuda", "sm_90"),  # H200
    ],
)
def test_auto_profile_follows_compute_capability(fact: dict, profile: str, arch: str) -> None:
    choice = runtime.choose_profile(fact)
    assert (choice.profile, choice.cuda_arch) == (profile, arch)


def test_mixed_cluster_uses_the_oldest_gpu() -> None:
    fact = {"count": 2, "devices": [{"compute_capability": "8.0"}, {"compute_capability": "7.0"}]}
    assert runtime.choose_profile(fact).profile == "volta"


@pytest.mark.parametrize(
    ("fact", "requested", "message"),
    [
        (gpus("7.0"), "cuda", "no sm_70 kernels"),
        (gpus("7.0"), "cpu", "would not use the GPUs"),
        ({"count": 0}, "volta", "no NVIDIA GPU"),
        (gpus("6.0"), "auto", "below 7.0"),
        ({"count": 2, "devices": [{"name": "x"}]}, "auto", "unknown"),
        (gpus("7.0"), "rocm", "unknown"),
    ],
)
def test_impossible_profiles_are_refused_with_the_fix(fact: dict, requested: str, message: str) -> None:
    with pytest.raises(runtime.ProfileError, match=message):
        runtime.choose_profile(fact, requested)


def test_kernel_report_catches_missing_sm70() -> None:
    report = {
        "versions": {"torch": "2.11.0", "vllm": "0.26.0", "ray": "2.60.0"},
        "torch_arch_list": ["sm_75", "sm_80", "sm_90"],
        "kernel_launch": "RuntimeError: CUDA error: no kernel image is available for execution on the device",
    }
    problems = runtime.check_kernel_report(report, "volta", "sm_70")
    assert any("without sm_70" in p for p in problems)
    assert any("no kernel image" in p for p in problems)


def test_kernel_report_accepts_a_good_gpu_venv() -> None:
    report = {
        "versions": {"torch": "2.10.0", "vllm": "0.18.0", "ray": "2.60.0"},
        "torch_arch_list": ["sm_70", "sm_80"],
        "kernel_launch": "ok",
    }
    assert runtime.check_kernel_report(report, "volta", "sm_70") == []


def test_kernel_report_names_a_failed_import() -> None:
    report = {"versions": {"torch": "2.13.0"}, "errors": {"vllm": "ImportError: libc10_cuda.so"}}
    problems = runtime.check_kernel_report(report, "cpu", "")
    assert problems == [
        "vllm does not import in the serving venv: ImportError: libc10_cuda.so",
        "ray does not import in the serving venv: ",
    ]


def test_version_mismatch_across_hosts_is_named() -> None:
    same = {"python": "3.12.3", "torch": "2.10.0", "vllm": "0.18.0", "ray": "2.60.0"}
    assert runtime.same_versions({"gpu01": same, "gpu02": dict(same)}) == []
    problems = runtime.same_versions({"gpu01": same, "gpu02": {**same, "ray": "2.59.0"}})
    assert problems == [
        "gpu02 has ray 2.59.0 but gpu01 has ray 2.60.0: every node needs the same serving venv"
    ]
