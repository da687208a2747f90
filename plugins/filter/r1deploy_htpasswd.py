"""Ansible filter over r1deploy.htpasswd: ``password | r1deploy_htpasswd_line(user, site)``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    from r1deploy import htpasswd
except ImportError:  # running from a checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from r1deploy import htpasswd


def r1deploy_htpasswd_line(password: Any, user: Any, site: Any = "") -> str:
    return htpasswd.ssha_line(str(user), str(password), str(site))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"r1deploy_htpasswd_line": r1deploy_htpasswd_line}
