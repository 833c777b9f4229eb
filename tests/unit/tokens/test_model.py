from __future__ import annotations

import pendulum

from airflow_provider_canvas.tokens.model import TokenSet, extra_value


def test_legacy_keys_are_read_when_plain_ones_are_missing():
    extra = {"extra__canvas__refresh_token": "legacy", "access_token": "plain"}
    assert extra_value(extra, "canvas", "refresh_token") == "legacy"
    assert extra_value(extra, "canvas", "access_token") == "plain"
    assert extra_value({"scopes": ""}, "canvas", "scopes") is None


def test_usable_respects_buffer_and_rejections():
    tokens = TokenSet("a", "r", pendulum.now("UTC").add(seconds=400))
    assert tokens.is_usable(300)
    assert not tokens.is_usable(500)
    assert not tokens.is_usable(300, rejected={"a"})
    assert not TokenSet("a", "r", None).is_usable(0)


def test_token_response_keeps_previous_refresh_token_when_none_is_sent():
    previous = TokenSet("old", "keep-me", None)
    fresh = TokenSet.from_token_response({"access_token": "new", "expires_in": 3600}, previous=previous)
    assert (fresh.access_token, fresh.refresh_token) == ("new", "keep-me")
    rotated = TokenSet.from_token_response(
        {"access_token": "new", "refresh_token": "rotated", "expires_in": 3600}, previous=previous
    )
    assert rotated.refresh_token == "rotated"
    assert 3590 < (rotated.expires_at - pendulum.now("UTC")).total_seconds() <= 3600


def test_extra_round_trip_and_order():
    tokens = TokenSet("a", "r", pendulum.datetime(2030, 1, 1, tz="UTC"))
    assert TokenSet.from_extra(tokens.to_extra(), "canvas") == tokens
    assert tokens.to_extra()["expires_at"] == "2030-01-01T00:00:00Z"
    older = TokenSet("b", "s", pendulum.datetime(2029, 1, 1, tz="UTC"))
    assert tokens.is_newer_than(older) and not older.is_newer_than(tokens)
    assert tokens.is_newer_than(TokenSet())


def test_repr_hides_secrets():
    shown = repr(TokenSet("access-secret", "refresh-secret", None))
    assert "access-secret" not in shown and "refresh-secret" not in shown


def test_complete_extra_adds_every_field_and_renames_legacy_keys():
    from airflow_provider_canvas.get_provider_info import CONN_FIELDS
    from airflow_provider_canvas.tokens.model import complete_extra

    stored = {
        "extra__brightspace__lp_version": "1.46",  # 0.1's legacy prefix
        "token_url": "https://auth.example.edu/core/connect/token",  # renamed: Airflow masked it
        "refresh_token": "rt",
        "custom": "kept",
    }
    extra = complete_extra("brightspace", stored)

    assert set(extra) == set(CONN_FIELDS["brightspace"]) | {"custom"}
    assert extra["lp_version"] == "1.46" and extra["oauth_url"] == stored["token_url"]
    assert extra["bds_api"] == "auto" and extra["lock_conn_id"] is None and extra["refresh_token"] == "rt"
    # The current name wins; the ``***`` that 0.1's form saved for the default is dropped.
    extra = complete_extra("brightspace", {"oauth_url": "https://a/t", "token_url": "https://b/t"})
    assert extra["oauth_url"] == "https://a/t"
    assert complete_extra("brightspace", {"token_url": "***"})["oauth_url"] == (
        "https://auth.brightspace.com/core/connect/token"
    )
    assert set(complete_extra("canvas", {})) == set(CONN_FIELDS["canvas"])
