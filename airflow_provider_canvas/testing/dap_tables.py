"""Canvas Data 2 tables for the DAP emulator: typed JSON schemas, seeded rows and their change history.

Each table keeps its current rows and every committed change, so a snapshot is the current rows
and an incremental is the newest version of each row changed in a window (a delete as its key
only), as DAP serves them. Rows come from a seeded generator: the same seed gives the same data.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

Value = Callable[[random.Random, int], Any]
INT64 = {"type": "integer", "format": "int64"}
INT32 = {"type": "integer", "format": "int32"}
TEXT = {"type": "string"}
TIME = {"type": "string", "format": "date-time"}
BOOL = {"type": "boolean"}
#: The base of generated timestamps (created_at and the like); commits use the real clock.
_EPOCH = datetime(2024, 8, 1, tzinfo=timezone.utc).timestamp()


def iso(ts: float) -> str:
    """DAP's timestamp form: UTC, milliseconds, ``Z``."""
    ms = _ms(ts)
    moment = datetime.fromtimestamp(ms // 1000, timezone.utc).replace(microsecond=ms % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(ts: float) -> int:
    # Commit times are whole milliseconds, as written: a watermark read back compares equal.
    return round(ts * 1000)


def parse_iso(text: str) -> float:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.timestamp()


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _pick(*values: Any) -> Value:
    return lambda rng, key: rng.choice(values)


def _time(rng: random.Random, key: int) -> str:
    return iso(_EPOCH + rng.randrange(0, 600 * 86400))


def _maybe(value: Value, chance: float = 0.3) -> Value:
    """None (omitted from the record, as DAP omits nulls) with probability ``chance``."""
    return lambda rng, key: None if rng.random() < chance else value(rng, key)


_FIRST = ("Ada", "Ben", "Chloe", "Dmitri", "Eva", "Farah", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lea")
_LAST = ("Okafor", "Schmidt", "Nakamura", "Silva", "Novak", "Haddad", "Larsen", "Moreau", "Kowalski")


@dataclass(frozen=True)
class Column:
    name: str
    schema: dict[str, Any]
    value: Value
    required: bool = False
    title: str = ""


@dataclass
class EmulatedTable:
    """One DAP table: its schema version, current rows and committed changes (oldest first)."""

    name: str
    title: str
    columns: list[Column]
    seed: int
    version: int = 1
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    row_ts: dict[int, float] = field(default_factory=dict)
    # (commit time, key, the row after the change or None for a delete)
    changes: list[tuple[float, int, dict[str, Any] | None]] = field(default_factory=list)
    next_id: int = 1
    last_commit: float = 0.0

    def _row(self, key: int, revision: int) -> dict[str, Any]:
        rng = random.Random(f"{self.seed}:{self.name}:{key}:{revision}")
        values = {c.name: c.value(rng, key) for c in self.columns}
        return {name: value for name, value in values.items() if value is not None}

    def schema_json(self) -> dict[str, Any]:
        """``GET .../schema``: ``{"schema": <JSON schema with key/value/meta>, "version": N}``."""

        def props(columns: list[Column]) -> dict[str, Any]:
            return {c.name: {**c.schema, **({"title": c.title} if c.title else {})} for c in columns}

        value = {
            "type": "object",
            "properties": props(self.columns),
            "required": [c.name for c in self.columns if c.required],
            "additionalProperties": False,
        }
        schema = {
            "type": "object",
            "title": self.title,
            "properties": {
                "key": {
                    "type": "object",
                    "properties": {"id": {**INT64, "title": "The primary key."}},
                    "required": ["id"],
                    "additionalProperties": False,
                },
                "value": value,
                "meta": {
                    "type": "object",
                    "properties": {"ts": TIME, "action": _enum("U", "D")},
                    "required": ["ts"],
                    "additionalProperties": False,
                },
            },
            "required": ["key", "meta"],
            "additionalProperties": False,
        }
        return {"schema": schema, "version": self.version}

    # ----------------------------------------------------------------- changes
    def commit(self, ts: float, inserts: int = 0, updates: int = 0, deletes: int = 0) -> float:
        """One refresh of DAP's data: rows added, changed and removed at commit time ``ts``."""
        ts = max(_ms(ts), _ms(self.last_commit) + 1) / 1000
        rng = random.Random(f"{self.seed}:{self.name}:commit:{len(self.changes)}")
        existing = sorted(self.rows)
        chosen = rng.sample(existing, min(len(existing), updates + deletes))
        for key in chosen[:updates]:
            self._put(ts, key, self._row(key, revision=len(self.changes) + 1))
        for key in chosen[updates:]:
            del self.rows[key]
            self.row_ts[key] = ts
            self.changes.append((ts, key, None))
        for _ in range(inserts):
            key = self.next_id
            self.next_id += 1
            self._put(ts, key, self._row(key, revision=0))
        self.last_commit = ts
        return ts

    def _put(self, ts: float, key: int, row: dict[str, Any]) -> None:
        self.rows[key] = row
        self.row_ts[key] = ts
        self.changes.append((ts, key, dict(row)))

    def add_column(self, column: Column) -> None:
        """A new schema version with one more (nullable) column; rows changed afterwards carry it."""
        if any(c.name == column.name for c in self.columns):
            raise ValueError(f"{self.name} already has a column {column.name!r}")
        self.columns.append(column)
        self.version += 1

    # ----------------------------------------------------------------- queries
    def snapshot(self) -> tuple[list[dict[str, Any]], float]:
        """Every current row as a record, and the state's time (the job's ``at``)."""
        records = [
            {"key": {"id": key}, "value": self.rows[key], "meta": {"ts": iso(self.row_ts[key])}}
            for key in sorted(self.rows)
        ]
        return records, self.last_commit

    def incremental(self, since: float, until: float | None) -> tuple[list[dict[str, Any]], float]:
        """The newest version of each row changed in the window, and its end (the job's ``until``).

        The window holds commits after ``since`` up to ``until``: chaining one job's ``until`` to
        the next one's ``since`` neither repeats nor misses a commit.
        """
        end = self.last_commit if until is None else min(until, self.last_commit)
        end = max(end, since)
        newest: dict[int, tuple[float, dict[str, Any] | None]] = {}
        for ts, key, row in self.changes:
            if _ms(since) < _ms(ts) <= _ms(end):
                newest[key] = (ts, row)
        records = []
        for key in sorted(newest):
            ts, row = newest[key]
            if row is None:
                records.append({"key": {"id": key}, "meta": {"ts": iso(ts), "action": "D"}})
            else:
                records.append({"key": {"id": key}, "value": row, "meta": {"ts": iso(ts), "action": "U"}})
        return records, end


def _name(rng: random.Random, key: int) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _columns() -> dict[str, tuple[str, list[Column]]]:
    created, updated = Column("created_at", TIME, _time, True), Column("updated_at", TIME, _time, True)
    return {
        "accounts": (
            "Accounts: the root account and its sub-accounts.",
            [
                Column("name", TEXT, lambda rng, key: f"Faculty {key}", True),
                Column("uuid", TEXT, lambda rng, key: f"{rng.getrandbits(128):032x}", True),
                Column(
                    "parent_account_id", INT64, lambda rng, key: None if key == 1 else rng.randrange(1, key)
                ),
                Column("root_account_id", INT64, lambda rng, key: 1),
                Column(
                    "workflow_state", _enum("active", "deleted"), _pick("active", "active", "deleted"), True
                ),
                Column("default_time_zone", TEXT, _pick("America/Denver", "Europe/Berlin", "Asia/Tokyo")),
                Column("sis_source_id", TEXT, _maybe(lambda rng, key: f"SIS-A{key}")),
                created,
                updated,
            ],
        ),
        "users": (
            "Users: people in the Canvas instance.",
            [
                Column("name", TEXT, _name, True),
                Column("sortable_name", TEXT, lambda rng, key: f"{rng.choice(_LAST)}, {rng.choice(_FIRST)}"),
                Column(
                    "workflow_state",
                    _enum("registered", "pre_registered", "creation_pending", "deleted"),
                    _pick("registered", "registered", "pre_registered", "deleted"),
                    True,
                ),
                Column("time_zone", TEXT, _maybe(_pick("America/Denver", "Europe/Berlin"))),
                Column("uuid", TEXT, lambda rng, key: f"{rng.getrandbits(128):032x}", True),
                Column("locale", TEXT, _maybe(_pick("en", "de", "ja"), 0.6)),
                Column("public", BOOL, _pick(True, False)),
                created,
                updated,
            ],
        ),
        "courses": (
            "Courses: classes taught in an enrollment term.",
            [
                Column(
                    "name",
                    TEXT,
                    lambda rng, key: f"Course {key}: {rng.choice(('Algebra', 'Biology', 'Law'))}",
                    True,
                ),
                Column("course_code", TEXT, lambda rng, key: f"C{key:05d}", True),
                Column(
                    "workflow_state",
                    _enum("created", "claimed", "available", "completed", "deleted"),
                    _pick("available", "available", "completed", "claimed"),
                    True,
                ),
                Column("account_id", INT64, lambda rng, key: rng.randrange(1, 20), True),
                Column("enrollment_term_id", INT64, _pick(1, 2, 3)),
                Column("is_public", BOOL, _pick(True, False)),
                Column("storage_quota", INT64, _pick(524288000, 1048576000)),
                Column("start_at", TIME, _maybe(_time)),
                Column(
                    "settings",
                    {
                        "type": "object",
                        "properties": {"hide_final_grades": BOOL, "syllabus_visibility": TEXT},
                    },
                    lambda rng, key: {
                        "hide_final_grades": rng.random() < 0.2,
                        "syllabus_visibility": "course",
                    },
                ),
                created,
                updated,
            ],
        ),
        "enrollments": (
            "Enrollments: a user's role in a course section.",
            [
                Column("user_id", INT64, lambda rng, key: rng.randrange(1, 500), True),
                Column("course_id", INT64, lambda rng, key: rng.randrange(1, 60), True),
                Column("course_section_id", INT64, lambda rng, key: rng.randrange(1, 90)),
                Column(
                    "type",
                    _enum("StudentEnrollment", "TeacherEnrollment", "TaEnrollment", "ObserverEnrollment"),
                    _pick("StudentEnrollment", "StudentEnrollment", "StudentEnrollment", "TeacherEnrollment"),
                    True,
                ),
                Column(
                    "workflow_state",
                    _enum("active", "invited", "inactive", "completed", "deleted", "rejected"),
                    _pick("active", "active", "completed", "invited", "deleted"),
                    True,
                ),
                Column("total_activity_time", INT32, lambda rng, key: rng.randrange(0, 200000)),
                Column("last_activity_at", TIME, _maybe(_time, 0.4)),
                created,
                updated,
            ],
        ),
    }


#: More tables of the real ``canvas`` namespace (it has about 90): generated schemas, few rows.
CATALOGUE = (  # noqa: SIM905 (a list of 56 quoted names reads worse)
    "access_tokens account_users assignment_groups assignment_override_students assignment_overrides "
    "assignments attachments calendar_events collaborations communication_channels content_tags "
    "context_external_tools context_modules conversation_message_participants conversation_messages "
    "conversations course_account_associations course_sections developer_keys discussion_entries "
    "discussion_topics enrollment_states enrollment_terms favorites folders grading_periods "
    "grading_standards group_memberships groups late_policies learning_outcome_groups "
    "learning_outcome_results learning_outcomes lti_line_items lti_results master_templates "
    "originality_reports post_policies pseudonyms quiz_submissions quizzes role_overrides roles "
    "rubric_assessments rubric_associations rubrics score_statuses scores submission_comments "
    "submissions user_account_associations user_notes web_conference_participants web_conferences "
    "wiki_pages wikis"
).split()
#: Rows of each catalogue table unless ``rows`` names it.
CATALOGUE_ROWS = 40

#: Default row counts of the namespace ``canvas``.
DEFAULT_ROWS = {"accounts": 20, "users": 500, "courses": 60, "enrollments": 1500}


def _generated_column(rng: random.Random, index: int) -> Column:
    """One column of a catalogue table: each JSON schema kind the loader maps, nullable or required."""
    kind = rng.randrange(9)
    name = f"{('ref', 'count', 'label', 'state', 'stamp', 'flag', 'score', 'data', 'tags')[kind]}_{index}"
    if kind == 0:
        return Column(f"{name}_id", INT64, lambda r, key: r.randrange(1, 10**12), rng.random() < 0.5)
    if kind == 1:
        return Column(name, INT32, _maybe(lambda r, key: r.randrange(0, 10**6), 0.2))
    if kind == 2:
        return Column(name, TEXT, _maybe(lambda r, key: f"{r.choice(_LAST)} \t{key}\n\u00e9", 0.2))
    if kind == 3:
        states = ("active", "deleted", "pending")
        return Column(name, _enum(*states), _pick(*states), True)
    if kind == 4:
        return Column(name, TIME, _maybe(_time, 0.3))
    if kind == 5:
        return Column(name, BOOL, _pick(True, False))
    if kind == 6:
        double = {"type": "number", "format": "double"}
        return Column(name, double, lambda r, key: round(r.uniform(0, 100), 3))
    if kind == 7:
        shape = {"type": "object", "properties": {"n": INT32, "s": TEXT}}
        return Column(name, shape, _maybe(lambda r, key: {"n": r.randrange(9), "s": r.choice(_FIRST)}))
    return Column(name, {"type": "array", "items": TEXT}, lambda r, key: r.sample(_FIRST, r.randrange(4)))


def catalogue_columns(name: str) -> list[Column]:
    """The columns of catalogue table ``name``: 2 to 40, the same for the same name on every run."""
    rng = random.Random(f"catalogue:{name}")
    width = rng.choice((2, 4, 6, 9, 14, 20, 28, 40))
    columns = [_generated_column(rng, index) for index in range(width)]
    created, updated = Column("created_at", TIME, _time, True), Column("updated_at", TIME, _time, True)
    return [*columns, created, updated]


def canvas_tables(
    seed: int, rows: dict[str, int] | None = None, *, at: float, catalogue: bool = True
) -> dict[str, EmulatedTable]:
    """The namespace ``canvas``, first committed at ``at``: accounts, users, courses and enrollments
    with hand-written schemas, and (``catalogue``) the tables of :data:`CATALOGUE`."""
    counts = {**DEFAULT_ROWS, **(rows or {})}
    described = _columns()
    if catalogue:
        for name in CATALOGUE:
            title = f"{name.replace('_', ' ').capitalize()} (generated schema)."
            described[name] = (title, catalogue_columns(name))
    tables = {}
    for name, (title, columns) in described.items():
        table = EmulatedTable(name, title, columns, seed)
        table.commit(at, inserts=counts.get(name, CATALOGUE_ROWS))
        tables[name] = table
    return tables


def column_from_json(name: str, schema: dict[str, Any] | None) -> Column:
    """A column added by a schema bump: values are seeded strings or numbers for its type."""
    schema = dict(schema or TEXT)
    kind = schema.get("type")
    value: Value
    if kind == "integer":
        value = lambda rng, key: rng.randrange(0, 1000)  # noqa: E731
    elif kind == "boolean":
        value = _pick(True, False)
    else:
        value = lambda rng, key: f"{name}-{rng.randrange(1000)}"  # noqa: E731
    return Column(name, schema, value)
