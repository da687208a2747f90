"""Which inventory variables exist, with their types: the one home of that rule.

Stage-1 preflight refuses an unknown variable with an r1deploy or role prefix (a typo would otherwise be
ignored silently) and checks the type of every known one. The names come from the roles'
``meta/argument_specs.yml`` (every entry point) and from the two explicit lists below, nothing else: a
name that only a document, a template or a task mentions is not a variable a user may set.
Pure Python: the Ansible filter ``r1deploy_known_variables`` reads the YAML files and passes them in.
"""

from __future__ import annotations

from typing import Any

# Types are argument-spec types; "raw" accepts any value (templated strings, numbers or percentages).
#
# Names the project accepts that are not role options: the inventory contract, facts and extra
# variables that exist before any role's defaults (docs/architecture.md, "Inventory contract").
INVENTORY_BUILTINS: dict[str, str] = {
    # Per host, the inventory contract: the address on the private cluster network.
    "r1deploy_node_ip": "raw",
    # The GPU fact (preflight's r1deploy_gpu_facts module); in host_vars for playbooks/render_units.yml,
    # and in the fact cache after a preflight run.
    "r1deploy_gpus": "raw",
    # Play keywords are templated before inventory variables exist: extra variables only.
    "r1deploy_gpu_reboot_batch": "int",  # serial of playbooks/gpu_stack.yml
    "r1deploy_any_errors_fatal": "raw",  # any_errors_fatal of the deploy plays
    # inventories/sample marks itself unedited; stage 1 then lists what to fill in (roles/preflight).
    "r1deploy_unedited_sample": "bool",
    # Extra variables of single playbooks.
    "r1deploy_render_dir": "raw",  # playbooks/render_units.yml
    "r1deploy_render_roles_dir": "raw",  # playbooks/render_units.yml
    "r1deploy_teardown_confirmed": "raw",  # playbooks/teardown.yml (the CLI passes it)
    "r1deploy_teardown_purge": "raw",  # playbooks/teardown.yml
    # Written by `r1deploy lab up` (src/r1deploy/lab/inventory.py and lab/inventory_vars/).
    "r1deploy_lab_model_dir": "raw",
    "r1deploy_lab_public_ip": "raw",
    "r1deploy_lab_frontend_public_ip": "raw",
}

# Project-wide settings several roles read (``r1deploy_x | default(...)``) that no role declares yet.
# Issue 13: they belong in the argument_specs of the shared defaults role; each leaves this list when a
# role's meta/argument_specs.yml declares it (tests/unit/test_known_variables.py checks the overlap).
SHARED_SETTINGS_WITHOUT_A_ROLE: dict[str, str] = {
    "r1deploy_gpu_model": "str",  # preflight (null on CPU-only sites)
    "r1deploy_gpus_per_node": "int",  # preflight
    "r1deploy_ignore_preflight_errors": "bool",  # preflight
    "r1deploy_apt_mirror_url": "str",  # base_os
    "r1deploy_apt_security_mirror_url": "str",  # base_os
    "r1deploy_pip_index_url": "str",  # vllm_runtime, open_webui
    "r1deploy_pip_find_links": "str",  # vllm_runtime, open_webui
    "r1deploy_pip_offline": "bool",  # vllm_runtime, open_webui
    "r1deploy_nvidia_repo_url": "str",  # nvidia_driver, cuda_toolkit, nccl
    "r1deploy_nvidia_repo_key_url": "str",  # nvidia_driver, cuda_toolkit, nccl
    "r1deploy_model_path": "raw",  # model (model_controller_path); the lab sets it
}


# The settings several roles share live in roles/r1deploy (r1deploy_*, written once); each
# role's own copy defaults to the shared one. A copy set in the inventory would reach its own role only
# (a worker dialling another GCS port, nginx sending another API key, the head on another venv), so
# stage 1 refuses it and names the shared setting to set instead.
SHARED_COPIES: dict[str, str] = {
    **dict.fromkeys(
        ("vllm_runtime_user", "ray_head_user", "ray_worker_user", "vllm_server_user"), "r1deploy_service_user"
    ),
    **dict.fromkeys(
        (
            "vllm_runtime_venv",
            "ray_head_venv",
            "ray_worker_venv",
            "vllm_server_venv",
            "model_venv",
            "preflight_venv",
        ),
        "r1deploy_venv",
    ),
    **dict.fromkeys(("ray_head_port", "ray_worker_head_port"), "r1deploy_ray_port"),
    **dict.fromkeys(
        (
            "vllm_server_port",
            "nginx_vllm_port",
            "open_webui_vllm_port",
            "prometheus_vllm_port",
            "firewall_vllm_api_port",
        ),
        "r1deploy_vllm_port",
    ),
    **dict.fromkeys(
        ("vllm_server_api_key", "nginx_vllm_api_key", "open_webui_openai_api_key", "prometheus_vllm_api_key"),
        "r1deploy_vllm_api_key",
    ),
    **dict.fromkeys(("ray_head_auth_token", "ray_worker_auth_token"), "r1deploy_ray_auth_token"),
    "vllm_server_planner_model": "r1deploy_model",
    "prometheus_port": "r1deploy_prometheus_port",
    "model_name": "r1deploy_model_name",
    **dict.fromkeys(("model_root", "preflight_model_root"), "r1deploy_model_root"),
    **dict.fromkeys(("model_dir", "preflight_model_dir", "vllm_server_model_dir"), "r1deploy_model_dir"),
}


def from_argument_specs(specs: dict[str, Any]) -> dict[str, str]:
    """{name: type} of every option of every entry point, from ``{role: parsed argument_specs.yml}``.
    An option without a type is a string (Ansible's default)."""
    known: dict[str, str] = {}
    for _role, data in sorted(specs.items()):
        entries = (data or {}).get("argument_specs") if isinstance(data, dict) else None
        for entry in (entries or {}).values():
            for name, spec in ((entry or {}).get("options") or {}).items():
                known[str(name)] = str(spec.get("type", "str")) if isinstance(spec, dict) else "raw"
    return known


def known_variables(specs: dict[str, Any]) -> dict[str, str]:
    """{name: type} a user may set: the roles' options (their types win), then the two lists above."""
    return {**INVENTORY_BUILTINS, **SHARED_SETTINGS_WITHOUT_A_ROLE, **from_argument_specs(specs)}
