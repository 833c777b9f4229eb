"""The legacy Brightspace Data Sets listing (`/dataExport/bds`) and the timestamps both listings use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_canvas.testing.bds_models import BdsDataSet, BdsExtract


def iso(moment: datetime) -> str:
    """Brightspace's timestamps: UTC with milliseconds and a `Z`."""
    return (
        moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def legacy_entry(
    ds: BdsDataSet,
    bds_type: str,
    listed: Sequence[BdsExtract],
    latest_link: str,
    link_of: Callable[[BdsExtract], str],
) -> dict[str, Any]:
    """One `BrightspaceDataSetReportInfo`: the newest extract of a plugin, older ones as PreviousDataSets."""
    plugin = ds.full_plugin_id if bds_type == "Full" else ds.differential_plugin_id

    def info(extract: BdsExtract, link: str) -> dict[str, Any]:
        return {
            "PluginId": plugin,
            "Name": ds.name,
            "Description": ds.description,
            "FullDataSet": bds_type == "Full",
            "CreatedDate": iso(extract.created),
            "DownloadLink": link,
            "DownloadSize": extract.download_size,
            "Version": extract.version,
            "QueuedForProcessingDate": iso(extract.created - timedelta(minutes=20)),
            "CurrentlyAvailable": True,
        }

    if not listed:
        entry: dict[str, Any] = {
            "PluginId": plugin,
            "Name": ds.name,
            "Description": ds.description,
            "FullDataSet": bds_type == "Full",
            "CreatedDate": None,
            "DownloadLink": None,
            "DownloadSize": None,
            "Version": ds.version,
            "QueuedForProcessingDate": None,
            "CurrentlyAvailable": False,
        }
    else:
        entry = info(listed[0], latest_link)
    entry["PreviousDataSets"] = [info(e, link_of(e)) for e in listed[1:]]
    return entry
