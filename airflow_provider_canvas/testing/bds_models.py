"""The emulator's Brightspace data sets and their extracts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from airflow_provider_canvas.testing.bds_files import CorruptSource, ZipSource


@dataclass
class BdsDataSet:
    name: str
    columns: list[str]
    schema_id: str
    full_plugin_id: str
    differential_plugin_id: str
    description: str = ""
    version: str = "1.0"
    #: Column -> PostgreSQL type of generated values (the catalogue's, then the caller's); others by name.
    types: dict[str, str] = field(default_factory=dict)
    extracts: list[BdsExtract] = field(default_factory=list, repr=False)


@dataclass
class BdsExtract:
    extract_id: int
    data_set: BdsDataSet = field(repr=False)
    bds_type: str
    created: datetime
    columns: list[str]
    version: str
    source: ZipSource = field(repr=False)
    corrupt: bool = False

    @property
    def plugin_id(self) -> str:
        ds = self.data_set
        return ds.full_plugin_id if self.bds_type == "Full" else ds.differential_plugin_id

    @property
    def served(self) -> ZipSource:
        return CorruptSource(self.source.size) if self.corrupt else self.source

    @property
    def download_size(self) -> int:
        return self.source.size
