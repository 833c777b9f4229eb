"""Wait, in a scheduled DAG, until Brightspace has published an extract of a data set newer than a date."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf

from airflow_provider_canvas.brightspace.hooks.brightspace import (
    SCOPE_BDS_LIST,
    SCOPE_BDS_LIST_LEGACY,
    BrightspaceHook,
)
from airflow_provider_canvas.brightspace.hooks.models import parse_time
from airflow_provider_canvas.exceptions import LmsThrottledError, LmsUnavailableError

if TYPE_CHECKING:
    from airflow.sdk import Context


class BrightspaceNewExtractSensor(BaseSensorOperator):
    """Succeeds once ``data_set`` has an extract created after ``newer_than``; XCom: the new extracts.

    With ``deferrable`` (default: ``[operators] default_deferrable``) it waits in the triggerer
    (:class:`~airflow_provider_canvas.brightspace.triggers.new_extract.BrightspaceNewExtractTrigger`), holding
    no worker slot; otherwise it pokes from the task. For a DAG that should run on every new extract
    rather than on a schedule, use an ``AssetWatcher`` with that trigger instead.

    :param data_set: the data set's name (templated).
    :param newer_than: ISO-8601 date-time, e.g. ``"{{ data_interval_end }}"`` (templated).
    :param bds_type: ``Full``, ``Differential`` or None (either).
    :param brightspace_conn_id: the ``brightspace`` connection (templated).
    """

    template_fields: Sequence[str] = ("data_set", "newer_than", "brightspace_conn_id")
    required_scopes: tuple[str, ...] = (SCOPE_BDS_LIST, SCOPE_BDS_LIST_LEGACY)

    def __init__(
        self,
        *,
        data_set: str,
        newer_than: str,
        bds_type: str | None = None,
        brightspace_conn_id: str = BrightspaceHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 300.0)
        super().__init__(**kwargs)
        self.data_set = data_set
        self.newer_than = newer_than
        self.bds_type = bds_type
        self.brightspace_conn_id = brightspace_conn_id
        self.deferrable = deferrable

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from airflow_provider_canvas.brightspace.triggers.new_extract import BrightspaceNewExtractTrigger

        self.defer(
            trigger=BrightspaceNewExtractTrigger(
                self.brightspace_conn_id,
                self.data_set,
                bds_type=self.bds_type,
                newer_than=str(self.newer_than),
                poll_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        hook = BrightspaceHook(self.brightspace_conn_id)
        try:
            extracts = hook.list_extracts(self.data_set, self.bds_type)
        except (LmsThrottledError, LmsUnavailableError) as err:  # still, after the hook's retries
            self.log.warning("%s: %s; poking again", self.data_set, err)
            return False
        finally:
            hook.close()
        since = parse_time(self.newer_than)
        new = [e.metadata() for e in reversed(extracts) if e.created > since]
        self.log.info("%s: %d extract(s) newer than %s", self.data_set, len(new), since.to_iso8601_string())
        return PokeReturnValue(is_done=True, xcom_value=new) if new else False

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        self.log.info(
            "%s: %d new extract(s), the newest %s",
            self.data_set,
            len(event["new_extracts"]),
            event["newest"]["created"],
        )
        return list(event["new_extracts"])
