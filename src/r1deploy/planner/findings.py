"""One finding of a check: what is wrong, where (host), about what (variable or fact), and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

# error   refused, whatever the escape hatch says
# strict  a warning that preflight turns into an error unless r1deploy_ignore_preflight_errors is true
# warning reported only
Severity = Literal["error", "strict", "warning"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # stable id, e.g. "dtype-bf16-volta"
    message: str  # what is wrong, with the numbers
    subject: str = ""  # the variable, flag or fact concerned
    fix: str = ""  # what to change
    host: str = ""  # inventory host, "" for the controller/cluster

    @property
    def text(self) -> str:
        where = f"{self.host}: " if self.host else ""
        about = f" [{self.subject}]" if self.subject else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return (
            f"{where}{self.message}{about}.{fix}"
            if not self.message.endswith(".")
            else (f"{where}{self.message[:-1]}{about}.{fix}")
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text}


def split(findings: list[Finding], *, strict_is_error: bool) -> tuple[list[str], list[str]]:
    """(errors, warnings) as text; strict findings count as errors when ``strict_is_error``."""
    errors = [
        f.text for f in findings if f.severity == "error" or (strict_is_error and f.severity == "strict")
    ]
    warnings = [f.text for f in findings if f.text not in errors]
    return errors, warnings
