"""The body of ``POST /dap/query/{namespace}/table/{table}/data``, checked as DAP's API document says.

A snapshot query is ``{"format", "mode"?}``, an incremental one adds ``since`` and ``until``?;
nothing else is allowed (``additionalProperties: false``), and a refusal is a ValidationError whose
``location`` points at the offending part of the body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from airflow_provider_canvas.testing.dap_formats import FORMATS
from airflow_provider_canvas.testing.dap_jobs import invalid
from airflow_provider_canvas.testing.dap_tables import parse_iso
from airflow_provider_canvas.testing.primitives import Response

_ALLOWED = ("format", "mode", "since", "until")
_MODES = ("expanded", "condensed")


@dataclass(frozen=True)
class TableQuery:
    format: str
    mode: str  # "expanded" (DAP's default) or "condensed"
    since: float | None = None
    until: float | None = None


def parse_query(body: bytes) -> TableQuery | Response:
    """The query, or the 400 ValidationError DAP answers for it."""
    text = body.decode("utf-8", "replace")
    try:
        query = json.loads(text)
    except ValueError as err:
        return invalid(f"the body is not JSON: {err}", getattr(err, "pos", 0) + 1)
    if not isinstance(query, dict):
        return invalid("the body must be a JSON object (a snapshot or an incremental query)")

    def at(name: str) -> int:
        return text.find(f'"{name}"') + 1 or 1

    extra = [k for k in query if k not in _ALLOWED]
    if extra:
        return invalid(
            f"additional property {extra[0]!r} is not allowed (allowed: {', '.join(_ALLOWED)})", at(extra[0])
        )
    fmt = query.get("format")
    if fmt == "parquet":
        return invalid(
            "format parquet is published, but this emulator writes jsonl, tsv and csv", at("format")
        )
    if fmt not in FORMATS:
        return invalid(f"format must be one of {', '.join(FORMATS)}, parquet; got {fmt!r}", at("format"))
    mode = query.get("mode") or "expanded"
    if mode not in _MODES:
        return invalid(f"mode must be expanded or condensed, got {mode!r}", at("mode"))
    stamps: dict[str, float | None] = {"since": None, "until": None}
    for name in stamps:
        if query.get(name) is None:
            continue
        try:
            stamps[name] = parse_iso(str(query[name]))
        except ValueError as err:
            return invalid(f"{name} must be an RFC 3339 date-time with a time zone: {err}", at(name))
    if stamps["until"] is not None and stamps["since"] is None:
        return invalid("until needs since (an incremental query)", at("until"))
    if stamps["until"] is not None and stamps["until"] < (stamps["since"] or 0.0):
        return invalid("until is before since", at("until"))
    return TableQuery(fmt, mode, stamps["since"], stamps["until"])
