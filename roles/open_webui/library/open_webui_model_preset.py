#!/usr/bin/python
# Copyright: r1deploy contributors
# Apache-2.0
"""Ansible module: give Open WebUI models a sampling preset and public read access."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: open_webui_model_preset
short_description: Ensure an Open WebUI model entry carries sampling parameters and is public
description:
  - Signs in to a local Open WebUI as an admin and creates or updates the model entry whose id is the
    served model's id, so every chat with that model uses the given sampling parameters, has no
    system prompt, and every signed-in user can read (use) the model.
  - Parameters not named in I(params) that an admin set in the UI are kept; a system prompt is removed.
  - Supports check mode and diff mode.
options:
  url:
    description: Base URL of the local Open WebUI (no trailing slash).
    type: str
    required: true
  admin_email:
    description: E-mail of an admin account.
    type: str
    required: true
  admin_password:
    description: Password of that account.
    type: str
    required: true
    no_log: true
  model_ids:
    description: Model ids to configure. Empty configures every model Open WebUI's OpenAI connections list.
    type: list
    elements: str
    default: []
  params:
    description: Parameters to enforce (e.g. temperature, top_p).
    type: dict
    required: true
  description:
    description: Description shown under the model name.
    type: str
    default: ""
  timeout:
    description: Seconds to wait for the models to be listed when I(model_ids) is empty.
    type: int
    default: 120
author: r1deploy
"""

EXAMPLES = r"""
- name: R1 sampling preset
  open_webui_model_preset:
    url: http://127.0.0.1:8080
    admin_email: admin@example.com
    admin_password: "{{ open_webui_admin_password }}"
    model_ids: [deepseek-r1]
    params: {temperature: 0.6, top_p: 0.95}
"""

RETURN = r"""
models:
  description: The model ids that were checked.
  type: list
  returned: always
created:
  description: Model ids whose entry was created.
  type: list
  returned: always
updated:
  description: Model ids whose entry was updated.
  type: list
  returned: always
"""

PUBLIC_READ = {"principal_type": "user", "principal_id": "*", "permission": "read"}


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


def request(url, method="GET", token=None, payload=None, timeout=30):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise ApiError(exc.code, exc.read().decode(errors="replace")) from exc
    return json.loads(body) if body else None


def has_public_read(grants):
    return any(
        g.get("principal_type") == "user" and g.get("principal_id") == "*" and g.get("permission") == "read"
        for g in grants or []
    )


def desired_entry(model_id, current, params, description):
    """The entry to write, and whether it differs from ``current`` (None: no entry yet)."""
    new_params = dict((current or {}).get("params") or {})
    new_params.pop("system", None)
    new_params.update(params)
    meta = dict((current or {}).get("meta") or {})
    if description:
        meta["description"] = description
    grants = [
        {k: g[k] for k in ("principal_type", "principal_id", "permission")}
        for g in (current or {}).get("access_grants") or []
    ]
    if not has_public_read(grants):
        grants.append(dict(PUBLIC_READ))
    entry = {
        "id": model_id,
        "base_model_id": (current or {}).get("base_model_id"),
        "name": (current or {}).get("name") or model_id,
        "meta": meta,
        "params": new_params,
        "access_grants": grants,
        "is_active": True,
    }
    if current is None:
        return entry, True
    before = {
        "params": current.get("params") or {},
        "description": (current.get("meta") or {}).get("description"),
        "public": has_public_read(current.get("access_grants")),
        "active": bool(current.get("is_active", True)),
    }
    after = {
        "params": new_params,
        "description": meta.get("description"),
        "public": True,
        "active": True,
    }
    return entry, before != after


def summary(entry):
    if entry is None:
        return {}
    return {
        "params": entry.get("params") or {},
        "description": (entry.get("meta") or {}).get("description"),
        "public": has_public_read(entry.get("access_grants")),
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "admin_email": {"type": "str", "required": True},
            "admin_password": {"type": "str", "required": True, "no_log": True},
            "model_ids": {"type": "list", "elements": "str", "default": []},
            "params": {"type": "dict", "required": True},
            "description": {"type": "str", "default": ""},
            "timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    p = module.params
    base = p["url"].rstrip("/")

    try:
        auth = request(
            base + "/api/v1/auths/signin",
            "POST",
            payload={"email": p["admin_email"], "password": p["admin_password"]},
        )
    except ApiError as exc:
        if exc.status in (400, 401, 403):
            module.fail_json(
                msg=(
                    f"cannot sign in to Open WebUI at {base} as {p['admin_email']} (HTTP {exc.status}). "
                    "The admin's password differs from open_webui_admin_password (changed in the admin "
                    "panel?) or that account is not an admin. Fix: set open_webui_admin_password (vault) "
                    "to the admin's current password, or open_webui_manage_models: false."
                )
            )
        module.fail_json(msg=f"Open WebUI sign-in at {base} failed: {exc}")
    except (urllib.error.URLError, OSError) as exc:
        module.fail_json(msg=f"cannot reach Open WebUI at {base}: {exc}. Check `journalctl -u open-webui`.")
    if (auth or {}).get("role") != "admin":
        module.fail_json(
            msg=f"{p['admin_email']} is not an admin in Open WebUI: set open_webui_admin_email to an admin."
        )
    token = auth["token"]

    model_ids = list(p["model_ids"])
    if not model_ids:
        deadline = time.monotonic() + p["timeout"]
        while True:
            listed = (request(base + "/api/models", token=token, timeout=60) or {}).get("data", [])
            model_ids = [
                m["id"]
                for m in listed
                if m.get("owned_by") == "openai" and not (m.get("info") or {}).get("base_model_id")
            ]
            if model_ids or time.monotonic() > deadline:
                break
            time.sleep(5)
        if not model_ids:
            module.fail_json(
                msg=(
                    f"Open WebUI at {base} lists no model from its vLLM endpoints after {p['timeout']}s "
                    "(is the serving stack up and the API key right?). Fix: start vLLM, or set "
                    "open_webui_default_model to the served model name."
                )
            )

    created, updated = [], []
    diff_before, diff_after = {}, {}
    for model_id in model_ids:
        quoted = urllib.parse.quote(model_id, safe="")
        try:
            current = request(f"{base}/api/v1/models/model?id={quoted}", token=token)
        except ApiError as exc:
            if exc.status not in (401, 404):
                module.fail_json(msg=f"reading model {model_id} from Open WebUI failed: {exc}")
            current = None
        entry, differs = desired_entry(model_id, current, p["params"], p["description"])
        if not differs:
            continue
        diff_before[model_id] = summary(current)
        diff_after[model_id] = summary(entry)
        if current is None:
            created.append(model_id)
            path = "/api/v1/models/create"
        else:
            updated.append(model_id)
            path = "/api/v1/models/model/update"
        if module.check_mode:
            continue
        try:
            request(base + path, "POST", token=token, payload=entry)
        except ApiError as exc:
            module.fail_json(msg=f"writing model {model_id} to Open WebUI failed: {exc}")

    changed = bool(created or updated)
    result = {"changed": changed, "models": model_ids, "created": created, "updated": updated}
    if module._diff and changed:
        result["diff"] = {
            "before": json.dumps(diff_before, indent=2, sort_keys=True) + "\n",
            "after": json.dumps(diff_after, indent=2, sort_keys=True) + "\n",
            "before_header": "open-webui models",
            "after_header": "open-webui models",
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
