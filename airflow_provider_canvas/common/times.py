"""ISO-8601 date-times read from APIs, connections and state files, as pendulum DateTimes in UTC."""

from __future__ import annotations

import pendulum


def parse_utc(value: object) -> pendulum.DateTime:
    """``value`` (ISO-8601) in UTC. ValueError if it is no date-time: pendulum also parses a bare date, a
    time or a duration, which would fail later, far from the text that was wrong."""
    parsed = pendulum.parse(str(value))
    if not isinstance(parsed, pendulum.DateTime):
        raise ValueError(f"expected an ISO-8601 date-time, got {value!r}")
    return parsed.in_timezone("UTC")
