"""Brightspace Advanced Data Sets for the emulator: the data sets, export jobs and their status clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_provider_canvas.testing.bds_files import ZipSource

ADS_STATUS_QUEUED, ADS_STATUS_PROCESSING, ADS_STATUS_COMPLETE, ADS_STATUS_ERROR = 0, 1, 2, 3


@dataclass
class AdsDataSet:
    data_set_id: str
    name: str
    columns: list[str]
    rows: list[dict[str, Any]] | None = None
    rows_count: int | None = None
    category: str = "Users"
    description: str = ""
    filters: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "DataSetId": self.data_set_id,
            "Name": self.name,
            "Description": self.description,
            "Category": self.category,
            "Filters": self.filters,
        }


@dataclass
class AdsJob:
    job_id: str
    data_set: AdsDataSet
    filters: list[dict[str, Any]]
    submitted: datetime
    started: float  # time.monotonic()
    duration: float
    will_fail: bool = False
    expired: bool = False
    source: ZipSource | None = field(default=None, repr=False)

    @property
    def status(self) -> int:
        """Queued for the first third of `duration`, Processing until done, then Complete or Error."""
        elapsed = time.monotonic() - self.started
        if elapsed >= self.duration:
            return ADS_STATUS_ERROR if self.will_fail else ADS_STATUS_COMPLETE
        return ADS_STATUS_PROCESSING if elapsed >= self.duration / 3 else ADS_STATUS_QUEUED


def filter_definitions(filters: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A data set's filters as Brightspace lists them, defaults filled in."""
    return [
        {
            "Name": f["Name"],
            "Type": f.get("Type", 1),
            "Description": f.get("Description", ""),
            "DefaultValue": f.get("DefaultValue", ""),
        }
        for f in (filters or [])
    ]
