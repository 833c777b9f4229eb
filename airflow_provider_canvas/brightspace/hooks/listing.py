"""What the Brightspace Data Sets listings mean, for the sync hook and the triggerer's async hook alike.

The listing logic is written once, free of I/O: each method is a generator that yields the
:class:`Page` it needs read next, is sent the page's JSON, and returns what the listings mean.
:func:`read_sync` and :func:`read_async` drive it with a blocking or an async GET, so a task and a
trigger never disagree on what an extract is.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from airflow_provider_canvas.brightspace.connection import BrightspaceSettings
from airflow_provider_canvas.brightspace.hooks.models import BdsDataSet, BdsExtract, legacy_data_sets
from airflow_provider_canvas.common.net import absolute_url, redact_url, same_host
from airflow_provider_canvas.exceptions import LmsConfigurationError, LmsError, LmsNotFoundError

SCOPE_BDS_LIST = "datasets:bds:read"
SCOPE_BDS_LIST_LEGACY = "datahub:dataexports:read"

T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    """One GET a listing needs: the URL, the scope it needs (for messages), the first page's query."""

    url: str
    scope: str
    params: dict[str, Any] | None = field(default=None)


#: A listing's logic: yields the pages it needs, is sent each page's JSON, returns the result.
Plan = Generator[Page, Any, T]


class BdsListings:
    """The Data Sets listings of one Brightspace connection, through the API its settings choose."""

    def __init__(self, settings: BrightspaceSettings) -> None:
        self.settings = settings

    def api_url(self, url: str) -> str:
        """An absolute URL on this instance; links on another host would receive the bearer token."""
        absolute = absolute_url(self.settings.base_url, url)
        if not same_host(absolute, self.settings.base_url):
            raise LmsError(
                f"Brightspace returned a link to another host ({redact_url(absolute)}); not following it"
            )
        return absolute

    def items(
        self, url: str, items_key: str, next_key: str, scope: str, params: dict[str, Any] | None = None
    ) -> Plan[list[Any]]:
        """Every item of a paged listing, following the server's own next link to the end."""
        items: list[Any] = []
        seen: set[str] = set()
        next_url: str | None = self.api_url(url)
        while next_url:
            if next_url in seen:
                raise LmsError(
                    f"{redact_url(next_url)}: the listing's next link points back at a page already read"
                )
            seen.add(next_url)
            page = yield Page(next_url, scope, params)
            params = None  # the next link already carries its query
            items += page.get(items_key) or []
            link = page.get(next_key)
            next_url = self.api_url(link) if link else None
        return items

    def data_sets(self) -> Plan[list[BdsDataSet]]:
        """Every Brightspace Data Set of the instance."""
        if self.settings.bds_api == "datasets":
            items = yield from self.items(
                self.settings.lp_path("datasets/bds"), "Objects", "Next", SCOPE_BDS_LIST
            )
            return [BdsDataSet.from_json(item) for item in items]
        entries = yield from self.items(
            self.settings.lp_path("dataExport/bds"),
            "BrightspaceDataSets",
            "NextPageUrl",
            SCOPE_BDS_LIST_LEGACY,
            {"page": 1},
        )
        return legacy_data_sets(entries)

    def data_set(self, name: str, data_sets: Sequence[BdsDataSet] | None = None) -> Plan[BdsDataSet]:
        """The data set called ``name`` (from ``data_sets`` if given, else a fresh listing)."""
        if data_sets is None:
            data_sets = yield from self.data_sets()
        for data_set in data_sets:
            if data_set.name == name:
                return data_set
        close = difflib.get_close_matches(name, [d.name for d in data_sets], n=1, cutoff=0.6)
        raise LmsNotFoundError(
            f"Brightspace has no data set named {name!r}"
            + (f"; did you mean {close[0]!r}?" if close else ""),
            status=404,
            url=redact_url(self.settings.base_url),
        )

    def extracts(self, data_set: str | BdsDataSet, bds_type: str | None = None) -> Plan[list[BdsExtract]]:
        """The extracts still available for a data set (Full, Differential or both), newest first."""
        if bds_type not in (None, "Full", "Differential"):
            raise LmsConfigurationError(f"bds_type must be 'Full', 'Differential' or None, got {bds_type!r}")
        if isinstance(data_set, str):
            data_set = yield from self.data_set(data_set)
        if data_set.extracts or self.settings.bds_api == "dataExport":
            found = [e for e in data_set.extracts if bds_type in (None, e.bds_type)]
        else:
            found = []
            for kind in ("Full", "Differential"):
                plugin_id = data_set.full_plugin_id if kind == "Full" else data_set.differential_plugin_id
                if bds_type not in (None, kind) or not plugin_id:
                    continue
                link = data_set.extracts_links.get(kind) or self.settings.lp_path(
                    f"datasets/bds/{data_set.schema_id}/plugins/{plugin_id}/extracts"
                )
                items = yield from self.items(link, "Objects", "Next", SCOPE_BDS_LIST)
                found += [BdsExtract.from_json(item, data_set.name, kind) for item in items]
        return sorted(found, key=lambda e: e.created, reverse=True)


def read_sync(plan: Plan[T], get_json: Callable[[Page], Any]) -> T:
    """Run ``plan``, reading each page it asks for with ``get_json``."""
    try:
        page = next(plan)
        while True:
            page = plan.send(get_json(page))
    except StopIteration as done:
        return cast(T, done.value)


async def read_async(plan: Plan[T], get_json: Callable[[Page], Awaitable[Any]]) -> T:
    """:func:`read_sync` with an async ``get_json``: the event loop never blocks."""
    try:
        page = next(plan)
        while True:
            page = plan.send(await get_json(page))
    except StopIteration as done:
        return cast(T, done.value)
