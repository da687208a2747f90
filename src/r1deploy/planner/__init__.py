"""r1deploy's rules, in one place: models, GPUs, dtype, TP x PP layout, memory fit, vLLM flags, the
preflight checks and the known inventory variables (``variables``). Pure Python (standard library only,
no Ansible import); the CLI, the Ansible filter ``r1deploy_plan`` and the ``r1deploy_gpu_facts`` module
call it. See docs/planner.md and docs/architecture.md ("Which module owns which rule")."""

from r1deploy.planner.findings import Finding
from r1deploy.planner.gpus import GPUS, GpuError, GpuSpec, known_gpu_names, load_gpu, match_smi_name, parse_cc
from r1deploy.planner.models import MODELS, ModelError, ModelSpec, from_config, known_model_names, load_model
from r1deploy.planner.plan import (
    ANSIBLE_LABELS,
    CLI_LABELS,
    DEFAULT_DISABLE_CUSTOM_ALL_REDUCE,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_MAX_MODEL_LEN,
    DEFAULT_MAX_NUM_SEQS,
    PlanRequest,
    make_plan,
    plan_from_dict,
    valid_tp_sizes,
)

__all__ = [
    "ANSIBLE_LABELS",
    "CLI_LABELS",
    "DEFAULT_DISABLE_CUSTOM_ALL_REDUCE",
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "DEFAULT_MAX_MODEL_LEN",
    "DEFAULT_MAX_NUM_SEQS",
    "GPUS",
    "MODELS",
    "Finding",
    "GpuError",
    "GpuSpec",
    "ModelError",
    "ModelSpec",
    "PlanRequest",
    "from_config",
    "known_gpu_names",
    "known_model_names",
    "load_gpu",
    "load_model",
    "make_plan",
    "match_smi_name",
    "parse_cc",
    "plan_from_dict",
    "valid_tp_sizes",
]
