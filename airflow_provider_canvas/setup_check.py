"""For the example DAGs: a run with nothing configured skips and says what to set, instead of failing.

Someone who installs the provider and unpauses an example DAG should see a skipped run with the
next step in its log, not a red bar.
"""

from __future__ import annotations

from collections.abc import Mapping

from airflow.sdk.exceptions import AirflowNotFoundException, AirflowSkipException

from airflow_provider_canvas.common import airflow_access as metadata

SETUP_GUIDE = "guide in docs/installation.md, 'Pointing the DAGs at a real Canvas or Brightspace'"


def missing_connections(conn_ids: Mapping[str, str]) -> list[str]:
    """The ids among ``conn_ids`` ({id: what it should be}) that no connection source defines."""
    missing = []
    for conn_id in conn_ids:
        try:
            metadata.get_connection(conn_id)
        except AirflowNotFoundException:
            missing.append(conn_id)
    return missing


def skip_unless_configured(connections: Mapping[str, str]) -> None:
    """Raise ``AirflowSkipException`` naming each missing connection of ``{id: what it should be}``."""
    missing = missing_connections(connections)
    if missing:
        todo = "; ".join(f"create the connection {conn_id!r} ({connections[conn_id]})" for conn_id in missing)
        raise AirflowSkipException(f"Not configured yet: {todo}. See the {SETUP_GUIDE}.")
