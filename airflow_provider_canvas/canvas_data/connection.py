"""A ``canvas_data`` connection, parsed once: DAP's API URL, the client credentials, the namespace."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_provider_canvas.canvas_data.hooks.models import DEFAULT_API_URL, DEFAULT_NAMESPACE
from airflow_provider_canvas.common.connection import Extras
from airflow_provider_canvas.common.connection_checks import check_base_url


@dataclass(frozen=True)
class DapSettings:
    """host: the DAP API URL (empty: Instructure's gateway); login/password: the DAP client ID and
    secret from identity.instructure.com; extra ``namespace`` (default ``canvas``)."""

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    namespace: str

    @classmethod
    def parse(cls, conn: Any, extras: Extras, conn_label: str) -> DapSettings:
        base_url = DEFAULT_API_URL
        if conn.host:
            base_url = check_base_url(f"the API URL (host) of {conn_label}", conn.host, DEFAULT_API_URL)
        return cls(
            base_url=base_url,
            client_id=conn.login,
            client_secret=conn.password,
            namespace=str(extras.get("namespace", DEFAULT_NAMESPACE)),
        )
