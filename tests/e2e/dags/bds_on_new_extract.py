"""The example DAG dags/brightspace_on_new_extract.py as it is, with OpenLineage enabled for it only.

The session's Airflow sets ``[openlineage] selective_enable`` (tests/e2e/conftest.py), so the other
test DAGs send no lineage events.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from airflow.providers.openlineage.utils.selective_enable import enable_lineage

_EXAMPLE = Path(__file__).resolve().parents[3] / "dags" / "brightspace_on_new_extract.py"
_spec = importlib.util.spec_from_file_location("brightspace_on_new_extract_example", _EXAMPLE)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

dag = enable_lineage(_module.dag)
