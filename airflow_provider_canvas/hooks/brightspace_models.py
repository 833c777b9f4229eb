"""What the Brightspace APIs describe: data sets, their extracts, and the status of an export job."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pendulum

from airflow_provider_canvas.exceptions import LmsError


class ExportJobStatus(enum.IntEnum):
    """``Status`` of an Advanced Data Sets export job."""

    QUEUED = 0
    PROCESSING = 1
    COMPLETE = 2
    ERROR = 3
    DELETED = 4


@dataclass(frozen=True)
class ExportJobState:
    """What an export job answer says, for the trigger and the operator alike."""

    status: ExportJobStatus | None  # None: a value this provider does not know yet
    raw: Any = None

    @property
    def complete(self) -> bool:
        return self.status is ExportJobStatus.COMPLETE

    @property
    def failed(self) -> bool:
        return self.status in (ExportJobStatus.ERROR, ExportJobStatus.DELETED)

    def __str__(self) -> str:
        return self.status.name if self.status is not None else f"in status {self.raw!r}"


def export_job_state(job: Mapping[str, Any]) -> ExportJobState:
    """The state of an export job from its ``Status``; an unknown value means "not done yet"."""
    raw = job.get("Status")
    try:
        return ExportJobState(ExportJobStatus(int(raw)), raw)
    except (TypeError, ValueError):
        return ExportJobState(None, raw)


@dataclass(frozen=True)
class BdsExtract:
    """One downloadable extract (ZIP) of a Brightspace Data Set."""

    data_set: str
    bds_type: str  # "Full" or "Differential"
    created: pendulum.DateTime
    download_link: str
    download_size: int | None
    version: str | None = None
    schema_id: str | None = None
    plugin_id: str | None = None

    @property
    def is_full(self) -> bool:
        return self.bds_type == "Full"

    def metadata(self) -> dict[str, Any]:
        """JSON-safe facts about the extract, fit for logs, XCom and asset events."""
        return {
            "data_set": self.data_set,
            "bds_type": self.bds_type,
            "created": self.created.to_iso8601_string(),
            "download_size": self.download_size,
            "version": self.version,
            "schema_id": self.schema_id,
            "plugin_id": self.plugin_id,
        }


@dataclass(frozen=True)
class BdsDataSet:
    """A Brightspace Data Set: its Full and Differential plugins."""

    name: str
    schema_id: str | None
    full_plugin_id: str | None
    differential_plugin_id: str | None
    description: str = ""
    # The legacy listing carries the extracts inline; the current one links to them.
    extracts_links: dict[str, str] = field(default_factory=dict, repr=False)
    extracts: tuple[BdsExtract, ...] = field(default=(), repr=False)


def parse_time(value: Any) -> pendulum.DateTime:
    """A Brightspace date-time, in UTC."""
    parsed = pendulum.parse(str(value))
    if not isinstance(parsed, pendulum.DateTime):
        raise LmsError(f"expected a date-time from Brightspace, got {value!r}")
    return parsed.in_timezone("UTC")
