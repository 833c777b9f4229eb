"""The Assets an operator updates: its default outlets (an AssetAlias while they are templated) and
the event each one gets at the end of the task."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias

from airflow_provider_canvas.common.locations import location_uri
from airflow_provider_canvas.common.templating import is_template

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath


def alias_location(location: str | os.PathLike[str] | ObjectStoragePath) -> str:
    """How an alias names a location: the template as written, or the location's URI."""
    return str(location) if is_template(location) else location_uri(location)


def default_outlets(
    kwargs: dict[str, Any], *, templated: bool, alias: str, assets: Callable[[], list[Asset]]
) -> AssetAlias | None:
    """Fill ``kwargs["outlets"]`` unless the DAG gave them; returns the alias the events go through.

    When what names the assets is ``templated`` they are known once rendered, so the outlet is an
    AssetAlias named ``alias`` (the text as written); otherwise the ``assets()`` themselves.
    """
    if "outlets" in kwargs:
        return None
    if templated:
        outlet = AssetAlias(name=alias)
        kwargs["outlets"] = [outlet]
        return outlet
    kwargs["outlets"] = assets()
    return None


def emit_asset_event(context: Context, asset: Asset, extra: dict[str, Any], alias: AssetAlias | None) -> None:
    """Give ``asset``'s event this ``extra``: through ``alias`` when the outlet is one."""
    events = context.get("outlet_events") if hasattr(context, "get") else None
    if events is None:
        return
    if alias is not None:
        events[alias].add(asset, extra=extra)
    else:
        events[asset].extra = extra
