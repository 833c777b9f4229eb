"""What Canvas answers about SIS imports and account reports: their states and what an outcome means."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: SIS import ``workflow_state``s after which nothing changes any more (Instructure's SIS Imports API).
SIS_FINAL_STATES = frozenset(
    {"imported", "imported_with_messages", "failed", "failed_with_messages", "aborted", "restored",
     "partially_restored"}
)  # fmt: skip
SIS_SUCCEEDED_STATES = frozenset({"imported", "imported_with_messages"})
#: Account report ``status``es after which nothing changes any more.
REPORT_FINAL_STATES = frozenset({"complete", "error", "aborted", "deleted"})

# "120 enrollments would be deleted and exceeds the set threshold of 10%"
_BATCH_THRESHOLD = re.compile(r"(\d+) (\w+) would be deleted and exceeds the set threshold of (\d+)%")


def is_final(kind: str, body: dict[str, Any]) -> bool:
    """Whether a SIS import (``kind="sis_import"``) or a report has ended."""
    if kind == "sis_import":
        return body.get("workflow_state") in SIS_FINAL_STATES
    return body.get("status") in REPORT_FINAL_STATES


def describe_progress(kind: str, body: dict[str, Any]) -> str:
    state = body.get("workflow_state") if kind == "sis_import" else body.get("status")
    return f"{state}, {body.get('progress') or 0}%"


@dataclass(frozen=True)
class SisOutcome:
    """A finished SIS import, read for the task: did it do what was asked, and what did Canvas say."""

    import_id: int
    state: str
    warnings: list[list[str]]
    errors: list[list[str]]
    counts: dict[str, Any]
    statistics: dict[str, Any] | None
    threshold_refusals: list[str]
    diffing_threshold_exceeded: bool

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SisOutcome:
        errors = [list(map(str, e)) for e in body.get("processing_errors") or []]
        refusals = []
        for _file, message in (e if len(e) == 2 else ["", " ".join(e)] for e in errors):
            match = _BATCH_THRESHOLD.search(message)
            if match:
                count, kind, threshold = match.groups()
                refusals.append(
                    f"batch mode would have deleted {count} {kind}, more than change_threshold "
                    f"{threshold}% allows; Canvas deleted none of them"
                )
        return cls(
            import_id=int(body["id"]),
            state=str(body.get("workflow_state")),
            warnings=[list(map(str, w)) for w in body.get("processing_warnings") or []],
            errors=errors,
            counts=dict((body.get("data") or {}).get("counts") or {}),
            statistics=body.get("statistics"),
            threshold_refusals=refusals,
            diffing_threshold_exceeded=bool(body.get("diffing_threshold_exceeded")),
        )

    @property
    def succeeded(self) -> bool:
        return self.state in SIS_SUCCEEDED_STATES and not self.threshold_refusals

    def summary(self) -> dict[str, Any]:
        """What goes to XCom and the asset event: no row data, only states and counts."""
        return {
            "import_id": self.import_id,
            "workflow_state": self.state,
            "counts": self.counts,
            "statistics": self.statistics,
            "warning_count": len(self.warnings),
            "error_count": len(self.errors),
            "diffing_threshold_exceeded": self.diffing_threshold_exceeded,
        }
