"""Generated CSV cells of every documented Brightspace Data Sets type, fixed-width (byte offsets computable).

A cell is a ``str.format`` template: ``{0}`` is the row's 12-digit id, ``{1}`` its last 4 digits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

#: Timestamps of rows generated without an extract date: ISO 8601 UTC with 7 fractional digits.
GENERATED_TIMESTAMP = "2026-11-01T12:00:00.0000000Z"

_INTEGERS = ("integer", "int", "bigint")
_FLOATS = ("double precision", "float", "real")


def brightspace_timestamp(moment: datetime | None, *, utc: bool = True) -> str:
    """``2026-11-01T12:00:00.0000000Z`` as Brightspace writes datetime2 (``utc=False``: local, no zone)."""
    if moment is None:
        return GENERATED_TIMESTAMP if utc else GENERATED_TIMESTAMP[:-1]
    text = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"
    return text + "Z" if utc else text


def cell_template(column: str, index: int, kind: str | None, created: datetime | None = None) -> str:
    """The template of one column's cells: a value of type ``kind`` (a PostgreSQL type name).

    ``kind=None`` (a column nobody typed) follows BDS naming habits: the first column and ``...Id``
    columns hold the id, ``Is...`` flags a boolean, ``...Date``/``...Accessed`` a timestamp, other
    columns ``<name>-<id>`` (as before types were known). ``text`` holds a comma, doubled quotes and
    a line break, as free text in extracts does. Typed timestamps are the extract's date, so a later
    extract changes them.
    """
    escaped = column.replace("{", "{{").replace("}", "}}")
    if kind is None:
        return _by_name(column, escaped, index)
    kind = kind.lower()
    if kind in _INTEGERS:
        return "{0}"
    if kind == "smallint":
        return "{1}"  # 0..9999 fits smallint
    if kind == "boolean":
        return "False" if column == "IsDeleted" else "True"  # IsDeleted true would delete the row
    if kind == "numeric":
        return "{1}.125000000"  # decimal(19, 9) as D2L writes it
    if kind in _FLOATS:
        return "{1}.5"
    if kind in ("timestamptz", "timestamp with time zone"):
        return brightspace_timestamp(created)
    if kind in ("timestamp", "timestamp without time zone"):
        return brightspace_timestamp(created, utc=False)
    if kind == "uuid":
        return "00000000-0000-4000-8000-{0}"
    return f'"{escaped} {{0}}, ""quoted""\nsecond line"'


def _by_name(column: str, escaped: str, index: int) -> str:
    if index == 0 or column.endswith("Id"):
        return "{0}"
    if column == "IsDeleted":
        return "False"
    if column.startswith("Is") and column[2:3].isupper():
        return "True"
    if column.endswith(("Date", "Accessed")):
        return GENERATED_TIMESTAMP
    return escaped + "-{0}"


def row_template(columns: list[str], types: Mapping[str, str], created: datetime | None = None) -> str:
    """One CSV row of templates, ``\\r\\n``-terminated as Brightspace's extracts are."""
    cells = [cell_template(column, i, types.get(column), created) for i, column in enumerate(columns)]
    return ",".join(cells) + "\r\n"
