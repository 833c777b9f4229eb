"""A trigger that fires when Brightspace publishes a new extract of a data set: for AssetWatchers and sensors.

What it remembers, and where: the ``CreatedDate`` of the newest extract it has announced.
- In an ``AssetWatcher`` Airflow 3.3 hands event triggers the watched asset's state store
  (``asset_state_store``, kept in the metadata database): the date is saved there after each event,
  so a restarted triggerer goes on from it, announcing what was published while it was down once
  and nothing twice. Not the pull's manifest: the triggerer may not see the pull's disk, and the
  watcher should fire when Brightspace has something new, not when a pull is behind.
- ``newer_than`` (kwargs) is where it starts when nothing is saved: extracts created after it are
  new. Without it, the newest extract seen at the first poll is the baseline (no event for what
  existed before the watch began). Kwargs identify a watcher's trigger, so give a fixed value in a
  DAG file, never "now".
- A deferrable sensor passes its ``newer_than`` and takes the first event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pendulum
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_canvas.brightspace.hooks.brightspace_async import BrightspaceAsyncHook
from airflow_provider_canvas.brightspace.hooks.models import BdsExtract, parse_time
from airflow_provider_canvas.exceptions import LmsError, LmsThrottledError, LmsUnavailableError


class BrightspaceNewExtractTrigger(BaseEventTrigger):
    """Polls the extracts of ``data_set`` and yields one event per poll that finds newer ones.

    The event's payload: ``data_set``, ``new_extracts`` (their metadata, oldest first), ``newest``
    (the newest one's) and ``newer_than`` (the date they are newer than). It keeps polling after
    an event (an AssetWatcher's trigger runs for as long as the DAG is there). Throttling, an
    unreachable Brightspace and a connection not made yet are logged and polled again; only the
    connection id is serialised, never a token.

    :param conn_id: the ``brightspace`` connection.
    :param data_set: the data set's name, as Data Hub lists it.
    :param bds_type: ``Full``, ``Differential`` or None (either).
    :param newer_than: ISO-8601 date-time: extracts created after it are new (see the module).
    :param poll_interval: seconds between two listings.
    """

    def __init__(
        self,
        conn_id: str,
        data_set: str,
        *,
        bds_type: str | None = None,
        newer_than: str | None = None,
        poll_interval: float = 300.0,
    ) -> None:
        super().__init__()
        if bds_type not in (None, "Full", "Differential"):
            raise ValueError(f"bds_type must be 'Full', 'Differential' or None, got {bds_type!r}")
        self.conn_id = conn_id
        self.data_set = data_set
        self.bds_type = bds_type
        self.newer_than = None if newer_than is None else parse_time(newer_than).to_iso8601_string()
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "data_set": self.data_set,
                "bds_type": self.bds_type,
                "newer_than": self.newer_than,
                "poll_interval": self.poll_interval,
            },
        )

    @property
    def state_key(self) -> str:
        """The asset state store key of this watch: one asset may be watched for several data sets."""
        return f"brightspace_newest_announced:{self.conn_id}:{self.data_set}:{self.bds_type or 'any'}"

    async def _saved(self) -> str | None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return None
        value = await store.aget(self.state_key)
        return str(value) if value else None

    async def _save(self, created: str) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is not None:
            await store.aset(self.state_key, created)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        last = await self._saved() or self.newer_than
        where = f"{self.data_set!r} on {self.conn_id}"
        self.log.info("Watching %s for extracts newer than %s", where, last or "the newest at the first look")
        while True:
            extracts = await self._list(where)
            if extracts is not None:
                newest = extracts[0].created.to_iso8601_string() if extracts else None
                if last is None:
                    last = newest or pendulum.from_timestamp(0).to_iso8601_string()
                    await self._save(last)
                    self.log.info("%s: the newest extract now is %s; announcing newer ones", where, last)
                else:
                    new = [e for e in reversed(extracts) if e.created > parse_time(last)]
                    if new:
                        self.log.info("%s: %d new extract(s), the newest %s", where, len(new), newest)
                        yield TriggerEvent(self._payload(new, last))
                        # Saved after the event: a crash in between repeats it rather than loses it.
                        last = new[-1].created.to_iso8601_string()
                        await self._save(last)
            await asyncio.sleep(self.poll_interval)

    async def _list(self, where: str) -> list[BdsExtract] | None:
        """The extracts of the watched type, newest first; None when this poll failed (logged)."""
        try:
            async with BrightspaceAsyncHook(self.conn_id) as hook:
                extracts = await hook.list_extracts(self.data_set)
        except (LmsThrottledError, LmsUnavailableError) as err:
            self.log.warning("%s: %s; polling again in %.0fs", where, err, self.poll_interval)
            return None
        except (LmsError, AirflowNotFoundException, httpx.HTTPError, OSError) as err:
            # A connection not made yet, a missing scope: logged, polled again. A bug is not caught here.
            self.log.error(
                "%s: %s: %s; polling again in %.0fs", where, type(err).__name__, err, self.poll_interval
            )
            return None
        return [e for e in extracts if self.bds_type in (None, e.bds_type)]

    def _payload(self, new: list[BdsExtract], newer_than: str) -> dict[str, Any]:
        return {
            "data_set": self.data_set,
            "newer_than": newer_than,
            "new_extracts": [e.metadata() for e in new],
            "newest": new[-1].metadata(),
        }
