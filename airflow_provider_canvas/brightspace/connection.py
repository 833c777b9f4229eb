"""A ``brightspace`` connection, parsed once: the instance, D2L's token endpoint, scopes, the LP API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from airflow_provider_canvas.common.connection import plain_extras
from airflow_provider_canvas.exceptions import LmsConfigurationError
from airflow_provider_canvas.get_provider_info import extra_defaults
from airflow_provider_canvas.tokens.settings import LmsSettings

_DEFAULTS = extra_defaults("brightspace")
DEFAULT_TOKEN_URL: str = _DEFAULTS["oauth_url"]
#: Enough for the Data Sets pull through either listing API (``datasets:bds:read`` is the current one's).
DEFAULT_SCOPES: str = _DEFAULTS["scopes"]
DEFAULT_LP_VERSION: str = _DEFAULTS["lp_version"]
#: The extra key of the token endpoint. Not ``token_url``: Airflow's secrets masker hides every
#: field whose name holds "token", so the form showed (and saved) ``***``. That key is still read,
#: and ``***`` (what 0.1's form saved for the masked default) means the default.
TOKEN_URL_KEY, LEGACY_TOKEN_URL_KEY = "oauth_url", "token_url"
TOKEN_URL_KEYS = (TOKEN_URL_KEY, LEGACY_TOKEN_URL_KEY)
#: From this LP version on, data sets are listed through ``datasets/bds`` (D2L's own Data Hub
#: walkthrough uses 1.43); older versions use ``dataExport/bds``. The ``bds_api`` extra overrides.
DATASETS_API_MIN_LP_VERSION = (1, 43)


def stored_token_url(extra: Mapping[str, Any]) -> str:
    """The token endpoint a connection's extra names (``oauth_url``, or 0.1.0's ``token_url``), else D2L's."""
    return token_url_of(plain_extras(extra, "brightspace"))


def token_url_of(extras: Mapping[str, Any]) -> str:
    """The token endpoint named by folded extras (see ``plain_extras``): ``***`` already means unset."""
    return str(extras.get(TOKEN_URL_KEY) or extras.get(LEGACY_TOKEN_URL_KEY) or DEFAULT_TOKEN_URL)


@dataclass(frozen=True)
class BrightspaceSettings(LmsSettings):
    """host: the Brightspace base URL; login/password: the OAuth 2.0 app's client ID and secret."""

    platform = "brightspace"
    example_host = "https://myschool.brightspace.com"
    server_name = "D2L Brightspace"
    client_auth = "basic"
    single_use_refresh_tokens = True
    url_fields = {
        "base_url": ("the host", example_host),
        # Checked as it will be used: the default when 0.1.0's form saved ``***``.
        "token_url": ("the token URL (oauth_url)", DEFAULT_TOKEN_URL),
    }

    lp_version: str
    #: ``datasets`` (ObjectListPage listing) or ``dataExport`` (the older BrightspaceDataSets one).
    bds_api: str
    authorization_endpoint: str

    @classmethod
    def parse(cls, conn: Any, extras: Mapping[str, Any], conn_label: str) -> BrightspaceSettings:
        fields = cls.common_fields(conn, extras, conn_label)
        token_url = token_url_of(extras)
        lp_version = str(extras.get("lp_version", DEFAULT_LP_VERSION))
        return cls(
            token_url=token_url,
            refresh_scope=fields["scopes"] or DEFAULT_SCOPES,
            lp_version=lp_version,
            bds_api=_bds_api(extras.get("bds_api"), lp_version, conn_label),
            # D2L serves consent and tokens on one host: /oauth2/auth beside /core/connect/token.
            authorization_endpoint=extras.get("auth_url") or urljoin(token_url, "/oauth2/auth"),
            **fields,
        )

    def lp_path(self, path: str) -> str:
        """``/d2l/api/lp/{version}/<path>`` for this connection's LP API version."""
        return f"/d2l/api/lp/{self.lp_version}/{path.lstrip('/')}"


def _bds_api(configured: Any, lp_version: str, conn_label: str) -> str:
    if configured and configured != "auto":
        if configured not in ("datasets", "dataExport"):
            raise LmsConfigurationError(
                f"{conn_label}: bds_api must be 'datasets', 'dataExport' or 'auto', got {configured!r}"
            )
        return str(configured)
    try:
        version = tuple(int(part) for part in lp_version.split("."))
    except ValueError:
        raise LmsConfigurationError(
            f"{conn_label}: lp_version must look like 1.49, got {lp_version!r}"
        ) from None
    return "datasets" if version >= DATASETS_API_MIN_LP_VERSION else "dataExport"
