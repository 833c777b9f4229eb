"""The central record: generations, the chain of rotated-away refresh tokens, announcements."""

from __future__ import annotations

import pendulum

from airflow_provider_canvas.tokens.model import TokenSet
from airflow_provider_canvas.tokens.record import CHAIN_LENGTH, Announcement, CentralCopy, fingerprint, newest


def _tokens(n: int) -> TokenSet:
    return TokenSet(f"at-{n}", f"rt-{n}", pendulum.now("UTC").add(minutes=n))


def _chain(rotations: int) -> CentralCopy:
    record = CentralCopy(TokenSet())
    for n in range(1, rotations + 1):
        record = record.after(_tokens(n), presented=_tokens(n - 1))
    return record


def test_a_connection_two_rotations_old_is_behind_and_an_unknown_refresh_token_wins():
    record = _chain(3)
    assert record.generation == 3 and record.current == fingerprint("rt-3")
    assert record.is_ahead_of(_tokens(1))  # a backup written back: stale, whatever its expiry says
    assert record.is_ahead_of(TokenSet("at-1", "rt-1", pendulum.now("UTC").add(days=9)))
    assert not record.is_ahead_of(_tokens(3))  # the same tokens
    assert not record.is_ahead_of(TokenSet("at-x", "rt-authorized-since", None))


def test_a_canvas_chain_keeps_its_refresh_token_and_compares_by_expiry():
    first = TokenSet("at-1", "rt", pendulum.now("UTC").add(minutes=1))
    second = TokenSet("at-2", "rt", pendulum.now("UTC").add(minutes=2))
    record = CentralCopy(TokenSet()).after(first, presented=first).after(second, presented=first)
    assert record.superseded == () and record.generation == 2
    assert record.is_ahead_of(first) and not record.is_ahead_of(second)


def test_the_chain_is_bounded_and_keeps_fingerprints_only():
    record = _chain(CHAIN_LENGTH + 10)
    assert len(record.superseded) == CHAIN_LENGTH
    assert "rt-" not in "".join(record.superseded)
    assert "rt-2" not in record.dump().replace(f'"refresh_token": "rt-{CHAIN_LENGTH + 10}"', "")


def test_a_record_round_trips_with_its_announcement_and_the_newest_generation_wins():
    announced = Announcement.mine("rt-3", "/state/rescue/c.json")
    record = CentralCopy(_tokens(3), generation=3, superseded=("a", "b"), announce=announced)
    parsed = CentralCopy.parse(record.dump(), "brightspace", "the lock backend")
    assert parsed == record and parsed.announce.presenting == fingerprint("rt-3")
    older = CentralCopy.parse(_chain(2).dump(), "brightspace", "the Variable")
    assert newest(parsed, older) is parsed and newest(None, older) is older and newest(None) is None
    tie = CentralCopy(_tokens(3), generation=3, source="the Variable")
    assert newest(parsed, tie) is parsed  # a tie goes to the first given: the lock backend
    assert record.after(_tokens(4), presented=_tokens(3)).announce is None  # the outcome clears it
