"""What the Brightspace APIs describe: data sets, their extracts, and the status of an export job."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
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

    @classmethod
    def from_json(cls, item: Mapping[str, Any], data_set: str, bds_type: str | None = None) -> BdsExtract:
        """An extract as either listing describes it (``BdsType`` wins over the listing's own kind)."""
        size = item.get("DownloadSize")
        return cls(
            data_set=data_set,
            bds_type=item.get("BdsType") or bds_type or "Full",
            created=parse_time(item["CreatedDate"]),
            download_link=item["DownloadLink"],
            download_size=int(size) if size is not None else None,
            version=item.get("Version"),
            schema_id=item.get("SchemaId"),
            plugin_id=item.get("PluginId"),
        )

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

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> BdsDataSet:
        """A data set from the ``datasets/bds`` listing: its plugins and the links to their extracts."""
        full = item.get("Full") or {}
        diff = item.get("Differential") or {}
        links = {
            kind: part["ExtractsLink"]
            for kind, part in (("Full", full), ("Differential", diff))
            if part.get("ExtractsLink")
        }
        return cls(
            name=full.get("Name") or diff.get("Name") or str(item.get("SchemaId")),
            schema_id=item.get("SchemaId"),
            full_plugin_id=full.get("PluginId"),
            differential_plugin_id=diff.get("PluginId"),
            description=full.get("Description") or "",
            extracts_links=links,
        )


def legacy_data_sets(entries: Iterable[Mapping[str, Any]]) -> list[BdsDataSet]:
    """Data sets from the ``dataExport/bds`` listing: one entry per plugin, extracts inline."""
    by_name: dict[str, dict[str, Any]] = {}
    for entry in entries:
        bds_type = "Full" if entry.get("FullDataSet") else "Differential"
        slot = by_name.setdefault(
            entry["Name"], {"description": entry.get("Description") or "", "extracts": []}
        )
        slot[bds_type] = entry.get("PluginId")
        for extract in (entry, *(entry.get("PreviousDataSets") or [])):
            if extract.get("DownloadLink") and extract.get("CreatedDate"):
                slot["extracts"].append(BdsExtract.from_json(extract, entry["Name"], bds_type))
    return [
        BdsDataSet(
            name=name,
            schema_id=None,
            full_plugin_id=slot.get("Full"),
            differential_plugin_id=slot.get("Differential"),
            description=slot["description"],
            extracts=tuple(slot["extracts"]),
        )
        for name, slot in by_name.items()
    ]


def parse_time(value: Any) -> pendulum.DateTime:
    """A Brightspace date-time, in UTC."""
    parsed = pendulum.parse(str(value))
    if not isinstance(parsed, pendulum.DateTime):
        raise LmsError(f"expected a date-time from Brightspace, got {value!r}")
    return parsed.in_timezone("UTC")
