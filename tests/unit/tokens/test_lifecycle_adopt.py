"""First tokens (a person's consent) are kept as refreshed ones: lock, rescue file, save, read back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pendulum
import pytest

from airflow_provider_canvas.exceptions import TokenSaveError
from airflow_provider_canvas.tokens import lifecycle as lifecycle_module
from airflow_provider_canvas.tokens.lifecycle import TokenLifecycle
from airflow_provider_canvas.tokens.model import TokenSet
from airflow_provider_canvas.tokens.rescue import RescueFile

FIRST = TokenSet("at-1", "rt-1", pendulum.now("UTC").add(hours=1))


class _Store:
    """A TokenStore whose connection and central copy live in memory; ``fail``: neither can be written."""

    conn_id = "c"
    platform = "brightspace"
    location = "the extra of connection 'c'"
    variable_key = "canvas_provider_tokens__c"
    writable = True
    central = None
    connection_behind = False

    def __init__(self, events: list[str], fail: bool = False) -> None:
        self.events = events
        self.fail = fail
        self.saved: TokenSet | None = None
        self.kept: TokenSet | None = None

    def load(self, durable: object = None) -> TokenSet:
        self.events.append("load")
        return self.saved or TokenSet()

    @property
    def connection_tokens(self) -> TokenSet:
        return self.saved or TokenSet()

    def next_record(self, tokens: TokenSet, presented: TokenSet) -> TokenSet:
        return tokens

    def is_spent(self, refresh_token: str | None) -> bool:
        return False

    def write_variable(self, tokens: TokenSet) -> None:
        self.events.append("central copy")
        if self.fail:
            raise OSError("metadata database down")
        self.kept = tokens

    def save(self, tokens: TokenSet) -> None:
        self.events.append("save")
        if self.fail:
            raise OSError("metadata database down")
        self.saved = tokens


def _lifecycle(tmp_path, store: _Store, events: list[str]) -> tuple[TokenLifecycle, RescueFile]:
    @contextlib.contextmanager
    def lock() -> Iterator[None]:
        events.append("lock")
        yield
        events.append("unlock")

    rescue = RescueFile.for_connection(str(tmp_path), "c")

    def never_refresh(current: TokenSet) -> TokenSet:
        raise AssertionError("adopting tokens never refreshes")

    return TokenLifecycle(store, refresh=never_refresh, lock=lock, rescue=rescue, buffer_seconds=300), rescue


def test_adopted_tokens_are_rescued_before_the_connection_is_written_and_saved_under_the_lock(tmp_path):
    events: list[str] = []
    store = _Store(events)
    tokens, rescue = _lifecycle(tmp_path, store, events)

    def write_connection() -> None:
        events.append("write connection")
        assert rescue.read("brightspace") == FIRST  # the tokens are safe before anything else happens

    assert tokens.adopt(FIRST, before_save=write_connection) is True

    assert events == ["lock", "write connection", "load", "central copy", "save", "unlock"]
    assert store.saved == store.kept == FIRST and rescue.read("brightspace") is None
    assert tokens.access_token() == "at-1" and tokens.refresh_count == 0


def test_a_failed_first_save_keeps_the_rescue_file_and_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(lifecycle_module.time, "sleep", lambda seconds: None)
    events: list[str] = []
    tokens, rescue = _lifecycle(tmp_path, _Store(events, fail=True), events)

    with pytest.raises(TokenSaveError, match="were authorized but could be saved neither") as raised:
        tokens.adopt(FIRST)

    assert raised.value.rescue_path == rescue.path
    assert rescue.read("brightspace") == FIRST
    assert events.count("save") == 3 and "at-1" not in str(raised.value)
