"""The plugin IDs D2L publishes for Brightspace Data Sets: the emulator answers to the IDs real scripts use.

A plugin ID (and a schema ID) is the same on every Brightspace site. Where an ID is listed below it
has a public source; where none was found the emulator keeps a generated ID (uuid5 of the name) and
this table says so, rather than guessing one that merely looks real.

Sources (checked December 2026):

- ``D2L``: D2L's own sample client, github.com/Brightspace/bds-headless-client-example, ``main.py``
  (``FULL_DATA_SET_METADATA`` / ``DIFF_DATA_SET_METADATA``, release 1.2.0, commit c558f5b).
- ``public(n)``: not D2L's documentation: n independent public client scripts on GitHub hard-code
  the same ID for the same data set (headless-client derivatives, download scripts, a reference
  table of SchemaID / Full / Differential IDs). Only IDs found in at least two of them are used;
  the reference table alone is not trusted (it holds at least one made-up row).
"""

from __future__ import annotations

from typing import NamedTuple


class PublishedIds(NamedTuple):
    """IDs of one data set; ``None`` where no public source was found (the emulator generates one)."""

    full: str
    differential: str | None
    schema: str | None
    source: str


# fmt: off
PUBLISHED: dict[str, PublishedIds] = {
        "Users": PublishedIds(
        "1d6d722e-b572-456f-97c1-d526570daa6b", "e8339b7a-2d32-414e-9136-2adf3215a09c",
        "b21a6414-38f8-4da8-9a65-8b5586f9fe3b", "full: D2L; differential: public(3); schema: public(2)",
    ),
    "Organizational Units": PublishedIds(
        "07a9e561-e22f-4e82-8dd6-7bfb14c91776", "867fb940-2b80-49da-9c8b-277c99686fc3", None,
        "full: D2L; differential: public(3)",
    ),
    "User Enrollments": PublishedIds(
        "533f84c8-b2ad-4688-94dc-c839952e9c4f", "a78735f2-7210-4a57-aac1-e0f6bd714349",
        "5ced736e-4c4c-4b01-96c8-1c7d404ac5c2", "full, differential: D2L; schema: public(2)",
    ),
    "Grade Results": PublishedIds("9d8a96b4-8145-416d-bd18-11402bc58f8d", None, None, "full: D2L"),
    "Grade Objects": PublishedIds("793668a8-2c58-4e5e-b263-412d28d5703f", None, None, "full: D2L"),
    "Content Objects": PublishedIds("7e16311c-d302-45da-afd9-98af90706ccb", None, None, "full: public(3)"),
    "Content User Progress": PublishedIds(
        "428ad0cb-6203-486d-be85-adb01c79578b", None, None, "full: public(2)",
    ),
    "Quiz Attempts": PublishedIds("f1623581-c5d7-4562-93fe-6ad16010c96b", None, None, "full: public(3)"),
    "Quiz User Answers": PublishedIds("93d6063b-61d4-4629-a6af-b4fad71f8c55", None, None, "full: public(3)"),
    "Course Access": PublishedIds("e260902a-582c-48c9-8dd8-80aa7dfa6b76", None, None, "full: public(2)"),
    "Role Details": PublishedIds("bd61f20b-be91-4b93-b449-46361e2c323f", None, None, "full: public(2)"),
    "Organizational Unit Ancestors": PublishedIds(
        "61726e1b-bf42-4cab-910d-e5a226dec4f0", None, None, "full: public(2)",
    ),
    "Organizational Unit Descendants": PublishedIds(
        "2e20f325-6fef-4065-9b5d-1400304611db", "56d9e64a-0076-4fe7-8fd8-2f68feeb6161", None,
        "full, differential: public(2)",
    ),
    "Organizational Unit Parents": PublishedIds(
        "cb7caa4a-c35f-48d0-a9ae-59eefea299df", None, None, "full: public(2)",
    ),
    "User Logins": PublishedIds(
        "20794201-b8fe-4010-9197-9f4997f91531", "49ac9b6f-8cbc-4a98-a95c-6ce0d89bca57", None,
        "full: public(2); differential: public(2)",
    ),
    "Session History": PublishedIds("847d2e44-4fc1-4060-a6ce-80b6c6f95f7d", None, None, "full: public(2)"),
    "System Access Log": PublishedIds("5813e618-49ec-4e5c-90e7-1fb4fe4b59c6", None, None, "full: public(2)"),
    "Assignment Submissions": PublishedIds(
        "041dde83-3a29-4a37-97de-9ee615318111", None, None, "full: public(3)",
    ),
    "Discussion Posts": PublishedIds("bce64f34-acee-415e-aceb-e3a38ddf476f", None, None, "full: public(3)"),
}
# fmt: on

#: The shorter names older listings (and this project's tests) use for the same data sets.
PUBLISHED["Org Units"] = PUBLISHED["Organizational Units"]
PUBLISHED["Org Unit Ancestors"] = PUBLISHED["Organizational Unit Ancestors"]


def published_ids(name: str) -> PublishedIds | None:
    """The published IDs of data set ``name``, or ``None`` for a data set without any."""
    return PUBLISHED.get(name)
