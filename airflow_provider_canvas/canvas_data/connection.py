"""A ``canvas_data`` connection, parsed once: DAP's API URL, the client credentials, the namespace."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow_provider_canvas.canvas_data.hooks.models import DEFAULT_API_URL, DEFAULT_NAMESPACE


@dataclass(frozen=True)
class DapSettings:
    """host: the DAP API URL (empty: Instructure's gateway); login/password: the DAP client ID and
    secret from identity.instructure.com; extra ``namespace`` (default ``canvas``)."""

    url_fields: ClassVar[Mapping[str, tuple[str, str]]] = {
        "base_url": ("the API URL (host)", DEFAULT_API_URL)
    }

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    namespace: str

    @classmethod
    def parse(cls, conn: Any, extras: Mapping[str, Any], conn_label: str) -> DapSettings:
        return cls(
            base_url=conn.host or DEFAULT_API_URL,
            client_id=conn.login,
            client_secret=conn.password,
            namespace=str(extras.get("namespace", DEFAULT_NAMESPACE)),
        )
