"""The frontend roles' files for a site with several vLLM replicas, rendered by Ansible on the controller.

No lab needed: the roles' own templates and defaults render for an inventory whose vLLM group has two
hosts; Open WebUI must list both endpoints (with a key each) and nginx must balance both, and the
rendered nginx.conf must pass `nginx -t` (Debian's nginx, as on the hosts).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.lab.helpers import REPO, ansible_env

BIN = Path(REPO / ".venv" / "bin")

PLAYBOOK = """
- name: Render the frontend roles' files
  hosts: frontend
  gather_facts: false
  roles:
    - {role: open_webui, tags: never}
    - {role: nginx, tags: never}
  tasks:
    - ansible.builtin.include_vars: "{{ repo }}/roles/nginx/vars/Debian.yml"
    - ansible.builtin.command:
        argv: [openssl, req, -x509, -newkey, rsa:2048, -nodes, -days, "2", -subj, /CN=test,
               -keyout, "{{ out }}/selfsigned.key", -out, "{{ out }}/selfsigned.crt"]
        creates: "{{ out }}/selfsigned.crt"
    - ansible.builtin.template:
        src: "{{ repo }}/roles/{{ item.src }}"
        dest: "{{ out }}/{{ item.dest }}"
        mode: "0600"
      loop:
        - {src: nginx/templates/nginx.conf.j2, dest: nginx.conf}
        - {src: nginx/templates/vllm-api-key.conf.j2, dest: key.conf}
        - {src: open_webui/templates/open-webui.env.j2, dest: open-webui.env}
        - {src: open_webui/templates/secrets.env.j2, dest: secrets.env}
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        pytest.fail("Debian's nginx is needed for `nginx -t` (scripts/bootstrap.sh installs nginx-light)")
    root = tmp_path_factory.mktemp("render")
    out = root / "out"
    out.mkdir()
    inventory = {
        "all": {
            "vars": {
                "r1deploy_credentials_dir": str(root / "credentials"),
                "open_webui_vllm_group": "vllm_replicas",
                "nginx_vllm_group": "vllm_replicas",
                "nginx_vllm_route_enabled": True,
                "open_webui_public_url": "https://chat.example.com",
                "nginx_server_names": ["chat.example.com"],
                "repo": str(REPO),
                "out": str(out),
            },
            "children": {
                "gpu_nodes": {
                    "children": {
                        "ray_head": {"hosts": {"gpu01": {"r1deploy_node_ip": "10.0.0.11"}}},
                        "ray_workers": {"hosts": {"gpu02": {"r1deploy_node_ip": "10.0.0.12"}}},
                    }
                },
                "vllm_replicas": {"hosts": {"gpu01": {}, "gpu02": {}}},
                "frontend": {
                    "hosts": {
                        "web01": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": str(BIN / "python"),
                            "r1deploy_node_ip": "127.0.0.1",
                        }
                    }
                },
            },
        }
    }
    (root / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (root / "render.yml").write_text(PLAYBOOK)
    # The roles' internal paths point into the test folder (extra vars beat role vars).
    internal = {
        "__nginx_key_map_file": str(out / "key.conf"),
        "__nginx_tls_dir": str(out),
        "__nginx_pid_file": str(out / "nginx.pid"),
    }
    (root / "internal.yml").write_text(yaml.safe_dump(internal))
    proc = subprocess.run(
        # Only the roles' defaults and vars are wanted here, not their tasks (their OS checks are `always`).
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(root / "hosts.yml"),
            str(root / "render.yml"),
            "--skip-tags",
            "always",
            "-e",
            f"@{root / 'internal.yml'}",
        ],
        cwd=REPO,
        env={**ansible_env(), "ANSIBLE_FACT_CACHING": "memory"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out


def test_open_webui_uses_every_replica_with_the_key(rendered: Path) -> None:
    env = (rendered / "open-webui.env").read_text()
    assert "OPENAI_API_BASE_URLS=http://10.0.0.11:8000/v1;http://10.0.0.12:8000/v1\n" in env
    secrets = (rendered / "secrets.env").read_text()
    keys = next(line for line in secrets.splitlines() if line.startswith("OPENAI_API_KEYS=")).split("=", 1)[1]
    key_file = rendered.parent / "credentials" / "vllm_api_key"
    assert keys.split(";") == [key_file.read_text().strip()] * 2


def test_nginx_balances_every_replica_and_passes_nginx_t(rendered: Path) -> None:
    conf = (rendered / "nginx.conf").read_text()
    upstream = conf.split("upstream r1deploy_vllm {", 1)[1].split("}", 1)[0]
    assert "server 10.0.0.11:8000;" in upstream and "server 10.0.0.12:8000;" in upstream
    assert "least_conn;" in upstream
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    check = subprocess.run([nginx, "-t", "-c", str(rendered / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
