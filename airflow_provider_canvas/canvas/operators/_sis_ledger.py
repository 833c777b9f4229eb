"""Where a SIS import task remembers what it uploaded: Airflow Variables, in the metadata database.

Two records, both JSON, both readable and writable from any worker through the Task SDK:
- ``canvas_sis_upload__<conn>__<account>__<dag>__<task>__<run>[__<map index>]``: the checksum of the
  payload a try is uploading, when it began, and, once Canvas answered, the import's id. A retry of
  the task (on this worker or another) reads it first and waits for that import instead of uploading
  the same payload again.
- ``canvas_sis_last_good__<conn>__<account>__<data set>``: the rows per CSV kind of the last import
  of the data set that succeeded, which the shrink guard compares the next payload with.
"""

from __future__ import annotations

import json
import re
from typing import Any

from airflow_provider_canvas.common import airflow_access as metadata


def _part(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", str(value))[:60]


def upload_key(
    conn_id: str, account_id: int | str, dag_id: str, task_id: str, run_id: str, map_index: int
) -> str:
    parts = [conn_id, account_id, dag_id, task_id, run_id] + ([map_index] if map_index >= 0 else [])
    return "canvas_sis_upload__" + "__".join(_part(p) for p in parts)


def last_good_key(conn_id: str, account_id: int | str, data_set: str) -> str:
    return "canvas_sis_last_good__" + "__".join(_part(p) for p in (conn_id, account_id, data_set))


def read(key: str) -> dict[str, Any] | None:
    raw = metadata.get_variable(key)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def write(key: str, value: dict[str, Any]) -> None:
    metadata.set_variable(key, json.dumps(value, sort_keys=True))
