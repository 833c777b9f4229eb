"""A hook's connection, read once: found, checked, its secret masked, its extra parsed into settings.

Every hook of this provider derives from :class:`ConnectedHook` and names a ``settings_class``: a
frozen dataclass of its product (``canvas/connection.py``, ...) that turns the stored fields into
what requests need (URLs, scopes, the token endpoint). What a person types is checked here (base
URLs and scope strings, also for ``canvas-oauth``), so a typo is refused before any request leaves,
with a message that says what to type instead. The sync hook and the triggerer's async hook parse
the same way. A hook's one HTTP session, retry policy and
:class:`~airflow_provider_canvas.common.transport.Transport` are built here too, from the settings
and the subclass's ``tokens``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar
from urllib.parse import urlsplit

import requests
from airflow.sdk import BaseHook

from airflow_provider_canvas.common import airflow_access
from airflow_provider_canvas.common.retry import RetryPolicy
from airflow_provider_canvas.common.transport import AccessTokens, ApiRules, Transport, json_session
from airflow_provider_canvas.exceptions import LmsConfigurationError

if TYPE_CHECKING:
    from typing_extensions import Self

#: What Airflow's 0.1 form saved in place of a masked default: means "the default".
MASKED = "***"


def extra_value(extra: Mapping[str, Any], platform: str, name: str) -> Any:
    """A field of the connection extra, accepting the legacy ``extra__<platform>__<name>`` key."""
    value = extra.get(name)
    if value in (None, ""):
        value = extra.get(f"extra__{platform}__{name}")
    return None if value == "" else value


def plain_extras(extra: Mapping[str, Any], conn_type: str) -> dict[str, Any]:
    """A connection's extra as settings read it: legacy ``extra__<type>__<name>`` keys under their
    plain names (a plain key wins), and no unset values: "" and ``***`` (a masked default) mean unset."""
    plain: dict[str, Any] = {}
    for key, value in extra.items():
        name = key.removeprefix(f"extra__{conn_type}__")
        if value in (None, "", MASKED) or (name != key and name in extra and extra[name] not in ("", None)):
            continue
        plain[name] = value
    return plain


Settings = TypeVar("Settings", covariant=True)


class SettingsClass(Protocol[Settings]):
    #: The URL fields of the settings: name -> (what it is called in messages, an example). A class
    #: attribute of the settings class, declared without ClassVar: the class object is what matches.
    url_fields: Mapping[str, tuple[str, str]]

    def parse(self, conn: Any, extras: Mapping[str, Any], conn_label: str) -> Settings: ...


class ConnectedHook(BaseHook):
    """The connection side of every hook; ``settings_class`` says what its fields mean.

    :param conn_id: the connection; Airflow may pass it as ``<conn_name_attr>=`` (the Test button does).
    :param timeout: (connect, read) seconds of every request.
    :param max_retries: how often a connection error, a 5xx answer to a read or a throttled
        request is retried.
    :param backoff_seconds: the first retry's wait; it doubles with each retry (with jitter).
    :param max_backoff_seconds: the longest wait between two retries.
    """

    conn_name_attr: ClassVar[str]
    conn_type: ClassVar[str]
    settings_class: ClassVar[SettingsClass[Any]]
    #: What the login and password fields must hold, for the message when one is empty.
    credentials_hint: ClassVar[str] = "the client ID as login and the client secret as password"
    #: The API's answers: refusals, pacing, what a dead token looks like.
    api_rules: ClassVar[ApiRules] = ApiRules()

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        timeout: tuple[float, float] = (10.0, 60.0),
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        **conn_id_by_name: str,
    ) -> None:
        super().__init__()
        named = conn_id_by_name.pop(self.conn_name_attr, None)
        if conn_id_by_name:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(conn_id_by_name)}")
        self.conn_id = conn_id or named or getattr(self, "default_conn_name")  # noqa: B009
        #: How messages name the connection. The Test button runs on a copy under a random id,
        #: which would mean nothing to the person reading the message.
        self.conn_label = f"connection {self.conn_id!r}"
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds

    def __repr__(self) -> str:
        return f"{type(self).__name__}(conn_id={self.conn_id!r})"

    # Requests: one session, one retry policy, the Transport that sends with this hook's tokens ----

    def token_keeper(self) -> AccessTokens:
        """What hands out a live access token (OAuth tokens, or Canvas Data 2's JWT)."""
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return str(self.settings.base_url)

    @cached_property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.backoff_seconds, self.max_backoff_seconds, log=self.log)

    @cached_property
    def session(self) -> requests.Session:
        return json_session()

    def close(self) -> None:
        if "session" in self.__dict__:
            self.session.close()

    @cached_property
    def transport(self) -> Transport:
        return Transport(
            session=self.session,
            base_url=self.base_url,
            tokens=self.token_keeper(),
            retry=self.retry,
            timeout=self.timeout,
            conn_label=self.conn_label,
            rules=self.api_rules,
            log=self.log,
        )

    def request(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:
        """See :meth:`Transport.request`: an authorised request, retried as the policy says; a
        refused access token is replaced once and the request sent once more."""
        return self.transport.request(method, path_or_url, **kwargs)

    def get_json(self, path_or_url: str, **kwargs: Any) -> Any:
        return self.transport.get_json(path_or_url, **kwargs)

    @classmethod
    def for_connection(cls, connection: Any, *, mask: bool = True, **options: Any) -> Self:
        """A hook on a connection it does not read itself: the CLI's connection to be, the triggerer's.

        The connection is checked as a stored one is. ``mask=False``: the caller has registered
        its secrets with the masker already (Airflow's async connection API does). ``options``
        go to the constructor.
        """
        hook = cls(connection.conn_id, **options)
        hook.__dict__["settings"] = hook.parse(connection)
        if mask:
            _mask_password(connection)
        hook.__dict__["connection"] = connection
        return hook

    @cached_property
    def connection(self) -> Any:
        """The stored connection, checked: right type, a client ID and secret, what the settings need."""
        conn = airflow_access.get_connection(self.conn_id)
        self.__dict__["settings"] = self.parse(conn)
        _mask_password(conn)
        return conn

    @cached_property
    def settings(self) -> Any:
        """The connection's fields as the product reads them (see ``settings_class``)."""
        connection = self.connection  # reading the stored connection parses it
        return self.__dict__.get("settings") or self.parse(connection)

    def parse(self, conn: Any) -> Any:
        """Check ``conn`` as this hook would use it and parse its settings; no I/O."""
        return parse_connection(type(self), conn, self.conn_label)


def parse_connection(hook: type[ConnectedHook], conn: Any, conn_label: str) -> Any:
    """``conn`` checked for ``hook`` (type, client ID and secret) and parsed into its settings."""
    if conn.conn_type != hook.conn_type:
        raise LmsConfigurationError(
            f"{conn_label} has type {conn.conn_type!r}; "
            f"{hook.__name__} needs a connection of type {hook.conn_type!r}"
        )
    if not conn.login or not conn.password:
        raise LmsConfigurationError(f"{conn_label} needs {hook.credentials_hint}")
    settings_class = hook.settings_class
    settings = settings_class.parse(conn, plain_extras(conn.extra_dejson or {}, hook.conn_type), conn_label)
    urls = {
        name: check_base_url(f"{what} of {conn_label}", getattr(settings, name), example)
        for name, (what, example) in settings_class.url_fields.items()
    }
    return dataclasses.replace(settings, **urls)


def _mask_password(conn: Any) -> None:
    from airflow.sdk.log import mask_secret

    mask_secret(conn.password)


CANVAS_SCOPE = re.compile(r"url:(GET|POST|PUT|PATCH|DELETE)\|/[^\s|,]+")
BRIGHTSPACE_SCOPE = re.compile(r"[a-z0-9_-]+:[a-z0-9_*-]+:[a-z0-9_*-]+", re.IGNORECASE)
SCOPE_FORMS = {
    "canvas": "url:VERB|/path, e.g. url:GET|/api/v1/accounts/:id",
    "brightspace": "group:resource:action, e.g. datahub:dataexports:read",
}


def is_loopback(hostname: str | None) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ``::1``: traffic that never leaves the machine."""
    if not hostname:
        return False
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def check_base_url(what: str, url: object, example: str) -> str:
    """``url`` without a trailing slash, refused unless https (or http to this machine).

    A client secret and refresh tokens sent over plain http to another host travel in clear.
    """
    text = url.strip() if isinstance(url, str) else ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LmsConfigurationError(f"{what} must be a URL with its scheme, e.g. {example} (got {url!r})")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise LmsConfigurationError(
            f"{what} must use https: type {'https' + text[len('http') :]!r} instead of {text!r}. Over "
            "http the client secret and tokens would travel in clear (http is accepted only for "
            "localhost and 127.0.0.1, e.g. the emulator)."
        )
    return text.rstrip("/")


def parse_scopes(platform: str, values: Iterable[object]) -> list[str]:
    """Scopes from arguments or a connection (space-separated allowed), checked, duplicates dropped."""
    scopes = list(dict.fromkeys(part for value in values for part in str(value).split()))
    pattern = CANVAS_SCOPE if platform == "canvas" else BRIGHTSPACE_SCOPE
    malformed = [scope for scope in scopes if not pattern.fullmatch(scope)]
    if malformed:
        raise LmsConfigurationError(
            f"not {platform} scope(s): {', '.join(repr(s) for s in malformed)}. A {platform} scope has "
            f"the form {SCOPE_FORMS[platform]}; separate several with spaces (no commas)."
        )
    return scopes
