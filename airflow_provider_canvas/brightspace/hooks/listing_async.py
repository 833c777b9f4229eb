"""The extracts of one Brightspace data set, listed asynchronously (for triggers), through either listing API.

The pages are read with
:class:`~airflow_provider_canvas.brightspace.hooks.brightspace_async.BrightspaceAsyncHook`;
what a page means is read by the sync hook's own parsers, so a trigger and a task never disagree on
what an extract is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow_provider_canvas.brightspace.hooks.brightspace import (
    SCOPE_BDS_LIST,
    SCOPE_BDS_LIST_LEGACY,
    BrightspaceHook,
)
from airflow_provider_canvas.brightspace.hooks.models import BdsDataSet, BdsExtract
from airflow_provider_canvas.common.net import redact_url
from airflow_provider_canvas.exceptions import LmsError

if TYPE_CHECKING:
    from airflow_provider_canvas.brightspace.hooks.brightspace_async import BrightspaceAsyncHook


async def _paged(
    client: BrightspaceAsyncHook, rules: BrightspaceHook, url: str, items_key: str, next_key: str, scope: str
) -> AsyncIterator[Any]:
    """Every item of a paged listing, following the server's next link (on this instance only)."""
    seen: set[str] = set()
    next_url: str | None = rules._api_url(url)
    while next_url:
        if next_url in seen:
            raise LmsError(
                f"{redact_url(next_url)}: the listing's next link points back at a page already read"
            )
        seen.add(next_url)
        page = await client.get_json(next_url, scope)
        for item in page.get(items_key) or []:
            yield item
        link = page.get(next_key)
        next_url = rules._api_url(link) if link else None


async def list_extracts(client: BrightspaceAsyncHook, rules: BrightspaceHook, name: str) -> list[BdsExtract]:
    """The extracts Brightspace offers for the data set ``name`` (Full and Differential), newest first."""
    found: list[BdsExtract] = []
    if rules.bds_api == "dataExport":
        listing = _paged(
            client,
            rules,
            rules.lp_path("dataExport/bds?page=1"),
            "BrightspaceDataSets",
            "NextPageUrl",
            SCOPE_BDS_LIST_LEGACY,
        )
        names: list[str] = []
        async for entry in listing:
            names.append(entry.get("Name"))
            if entry.get("Name") != name:
                continue
            kind = "Full" if entry.get("FullDataSet") else "Differential"
            for extract in (entry, *(entry.get("PreviousDataSets") or [])):
                if extract.get("DownloadLink") and extract.get("CreatedDate"):
                    found.append(BdsExtract.from_json(extract, name, kind))
        if name not in names:  # the sync hook's "no data set named ...; did you mean ...?"
            rules.get_data_set(name, [BdsDataSet(n, None, None, None) for n in dict.fromkeys(names)])
    else:
        data_sets = [
            BdsDataSet.from_json(item)
            async for item in _paged(
                client, rules, rules.lp_path("datasets/bds"), "Objects", "Next", SCOPE_BDS_LIST
            )
        ]
        data_set = rules.get_data_set(name, data_sets)
        for kind in ("Full", "Differential"):
            plugin_id = data_set.full_plugin_id if kind == "Full" else data_set.differential_plugin_id
            if not plugin_id:
                continue
            link = data_set.extracts_links.get(kind) or rules.lp_path(
                f"datasets/bds/{data_set.schema_id}/plugins/{plugin_id}/extracts"
            )
            async for item in _paged(client, rules, link, "Objects", "Next", SCOPE_BDS_LIST):
                found.append(BdsExtract.from_json(item, data_set.name, kind))
    return sorted(found, key=lambda e: e.created, reverse=True)
