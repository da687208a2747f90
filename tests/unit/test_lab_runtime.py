"""The pieces that make Docker work on this kernel and keep lab processes under control."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1deploy.lab import procs, runc_wrapper
from r1deploy.lab.docker import CAP_SYS_RESOURCE, bounding_set_lacks, dockerd_argv

ALL = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]


def _bundle(tmp_path: Path) -> Path:
    caps = {k: list(ALL) for k in runc_wrapper.CAP_SETS}
    (tmp_path / "config.json").write_text(
        json.dumps({"ociVersion": "1.0.2", "process": {"capabilities": caps}})
    )
    return tmp_path


def test_wrapper_drops_cap_sys_resource_from_every_set_on_create(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    runc_wrapper.patch(["--root", "/run/x", "--log", "/l.json", "create", "--bundle", str(bundle), "abc123"])
    caps = json.loads((bundle / "config.json").read_text())["process"]["capabilities"]
    for key in runc_wrapper.CAP_SETS:
        assert caps[key] == ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"]


def test_wrapper_patches_the_process_json_of_exec(tmp_path: Path) -> None:
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh"], "capabilities": {"bounding": list(ALL)}}))
    runc_wrapper.patch(["exec", "--process", str(process), "--detach", "abc123"])
    assert "CAP_SYS_RESOURCE" not in json.loads(process.read_text())["capabilities"]["bounding"]


def test_wrapper_leaves_other_commands_alone(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    before = (bundle / "config.json").read_text()
    runc_wrapper.patch(["state", "abc123"])
    runc_wrapper.patch(["delete", "--force", "abc123"])
    assert (bundle / "config.json").read_text() == before


def test_wrapper_execs_the_real_runc_with_the_same_arguments(tmp_path: Path) -> None:
    fake = tmp_path / "runc"
    fake.write_text('#!/bin/sh\necho "real:$*"\n')
    fake.chmod(0o755)
    out = subprocess.run(
        [sys.executable, runc_wrapper.__file__, "--version"],
        env={"R1DEPLOY_REAL_RUNC": str(fake), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "real:--version"


def test_bounding_set_check_reads_bit_24() -> None:
    here = "Name:\tx\nCapBnd:\t000001fffeffffff\n"
    full = "CapBnd:\t000001ffffffffff\n"
    assert bounding_set_lacks(CAP_SYS_RESOURCE, here)
    assert not bounding_set_lacks(CAP_SYS_RESOURCE, full)


def test_dockerd_never_forwards_or_masquerades(tmp_path: Path) -> None:
    plain = dockerd_argv(tmp_path, None)
    wrapped = dockerd_argv(tmp_path, tmp_path / "runc-wrapper")
    for argv in (plain, wrapped):
        assert "--ip-forward=false" in argv and "--ip-masq=false" in argv
    assert "--default-runtime" not in plain
    assert wrapped[wrapped.index("--default-runtime") + 1] == "r1deploy-runc"


def test_a_pidfile_pointing_at_someone_elses_process_is_never_signalled(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        pidfile = tmp_path / "x.pid"
        pidfile.write_text(f"{other.pid}\n")  # e.g. a recycled pid
        assert procs.running(pidfile, "apt-cacher-ng") is None
        assert procs.stop(pidfile, "apt-cacher-ng") is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_start_and_stop_a_background_process(tmp_path: Path) -> None:
    pidfile, log = tmp_path / "p.pid", tmp_path / "p.log"
    pid = procs.start(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], pidfile, log
    )
    assert procs.running(pidfile, "time.sleep(60)") == pid
    deadline = time.monotonic() + 10
    while "up" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "up" in log.read_text()  # output goes to the log file
    assert procs.stop(pidfile, "time.sleep(60)") is True
    assert procs.running(pidfile, "time.sleep(60)") is None
    assert not pidfile.exists()


@pytest.mark.parametrize("workers", [-1, 17])
def test_worker_count_out_of_range_is_refused(workers: int, tmp_path: Path) -> None:
    from r1deploy.lab import Lab, LabError

    with pytest.raises(LabError, match="--workers must be between 0 and 16"):
        Lab("lab", workers=workers, root=tmp_path)
