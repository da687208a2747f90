"""Serving-venv profile selection and the installed-venv checks (r1deploy.runtime)."""

from __future__ import annotations

import re

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


def test_a_driverless_host_takes_the_profile_the_inventory_names() -> None:
    """Before the driver, lspci knows the GPUs but not their compute capability: auto cannot choose
    (above), a named profile is taken as said, so preflight can check its interpreter and lock."""
    driverless = {"count": 4, "devices": [{"name": "GV100GL [Tesla V100 SXM2 32GB]"}] * 4}
    assert runtime.choose_profile(driverless, "volta").profile == "volta"
    assert runtime.venv_python("Rocky", "9", driverless, "volta") == "3.12"
    assert runtime.venv_python("Ubuntu", "22", driverless, "volta") == "3.10"
    assert runtime.venv_python("Ubuntu", "22", driverless) is None  # auto: serving.yml checks it later
    # The predicate preflight's play uses to defer those checks (the same rule choose_profile applies).
    assert runtime.waits_for_driver(driverless) and not runtime.waits_for_driver(driverless, "volta")
    assert not runtime.waits_for_driver({"count": 0, "devices": []})
    assert not runtime.waits_for_driver(gpus("7.0"))


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


def test_cuda_builds_of_vision_audio_on_a_cpu_host_are_a_problem() -> None:
    report = {
        "versions": {"torch": "2.13.0+cpu", "vllm": "0.32.0", "ray": "2.60.0"},
        "installed_forbidden_on_cpu": ["torchaudio", "torchvision"],
    }
    problems = runtime.check_kernel_report(report, "cpu", "")
    assert problems == [
        "CUDA builds of torchaudio, torchvision are installed; they break vLLM on CPU "
        "(the cpu lock never installs them: remove them from the venv or rebuild it)"
    ]
    assert runtime.check_kernel_report({**report, "installed_forbidden_on_cpu": []}, "cpu", "") == []


@pytest.mark.parametrize(
    ("distribution", "major", "profile", "executable", "packages", "lock"),
    [
        (
            "Ubuntu",
            "22",
            "volta",
            "/usr/bin/python3.10",
            ("python3.10", "python3.10-venv"),
            "volta-py310.txt",
        ),
        ("Ubuntu", "22", "cpu", "/usr/bin/python3.11", ("python3.11", "python3.11-venv"), "cpu-py311.txt"),
        ("Debian", "12", "cpu", "/usr/bin/python3.11", ("python3.11", "python3.11-venv"), "cpu-py311.txt"),
        (
            "Debian",
            "12",
            "volta",
            "/usr/bin/python3.11",
            ("python3.11", "python3.11-venv"),
            "volta-py311.txt",
        ),
        ("Ubuntu", "24", "cuda", "/usr/bin/python3.12", ("python3.12", "python3.12-venv"), "cuda-py312.txt"),
        ("Rocky", "9", "volta", "/usr/bin/python3.12", ("python3.12", "python3.12-pip"), "volta-py312.txt"),
        ("RedHat", "9", "cpu", "/usr/bin/python3.11", ("python3.11", "python3.11-pip"), "cpu-py311.txt"),
    ],
)
def test_each_os_builds_the_venv_with_a_python_that_has_a_lock(
    distribution: str, major: str, profile: str, executable: str, packages: tuple, lock: str
) -> None:
    plan = runtime.venv_plan(distribution, major, profile)
    assert (plan.executable, plan.packages, plan.lock) == (executable, packages, lock)


def test_a_profile_without_a_lock_for_the_os_python_names_the_variable_and_fix() -> None:
    with pytest.raises(
        runtime.ProfileError, match=r"cpu profile has locks for Python 3\.11 but Ubuntu 24\.04 offers 3\.12"
    ):
        runtime.venv_plan("Ubuntu", "24", "cpu")
    with pytest.raises(runtime.ProfileError, match="set vllm_runtime_python"):
        runtime.venv_plan("Ubuntu", "20", "volta")


def test_a_custom_lock_keeps_the_os_python() -> None:
    plan = runtime.venv_plan("Rocky", "9", "volta", requirements_file="/srv/site-lock.txt")
    assert (plan.executable, plan.lock) == ("/usr/bin/python3.12", "/srv/site-lock.txt")


def test_the_role_installed_interpreter_may_be_missing_before_install() -> None:
    plan = runtime.venv_plan("Rocky", "9", "volta")
    checked, problems = runtime.check_interpreter(plan, "volta", 2, "", "No such file or directory")
    assert problems == [] and checked == plan


def test_a_user_interpreter_picks_the_lock_of_its_version() -> None:
    plan = runtime.venv_plan("Rocky", "9", "volta", python="/opt/python/bin/python3")
    checked, problems = runtime.check_interpreter(plan, "volta", 0, "3.11\n", "")
    assert problems == [] and checked.lock == "volta-py311.txt" and checked.packages == ()


@pytest.mark.parametrize(
    ("rc", "stdout", "stderr", "message"),
    [
        (
            0,
            "3.9\n",
            "",
            r"'/usr/bin/python3' is Python 3\.9, but the volta profile has locks for Python 3\.10, 3\.11",
        ),
        (2, "", "[Errno 2] No such file or directory", "does not run on the host"),
        (
            1,
            "3.11\n",
            "ModuleNotFoundError: No module named 'ensurepip'",
            r"cannot create a venv .*python3\.11-venv",
        ),
    ],
)
def test_a_user_interpreter_that_cannot_build_the_venv_is_refused(
    rc: int, stdout: str, stderr: str, message: str
) -> None:
    plan = runtime.venv_plan("Rocky", "9", "volta", python="/usr/bin/python3")
    _, problems = runtime.check_interpreter(plan, "volta", rc, stdout, stderr)
    assert len(problems) == 1
    assert re.search(message, problems[0]) and "vllm_runtime_python" in problems[0]


def test_the_venv_python_is_read_from_pyvenv_cfg() -> None:
    assert runtime.pyvenv_python("home = /usr/bin\nversion = 3.11.2\n") == "3.11"
    assert runtime.pyvenv_python("") == ""


def test_every_lock_matrix_row_uses_one_python_per_os() -> None:
    rows = runtime.lock_matrix()
    assert ("volta", "EL 9", "3.12") in rows and ("volta", "Ubuntu 22.04", "3.10") in rows
    assert ("cpu", "Ubuntu 22.04", "3.11") in rows
    assert not [r for r in rows if r[0] == "cpu" and r[1] == "Ubuntu 24.04"]
