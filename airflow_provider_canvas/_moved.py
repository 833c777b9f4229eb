"""Old import paths (``hooks.canvas``, ``operators.brightspace``, ...) as aliases of the product modules.

DAGs, and triggers already serialised in the metadata database, may name the module paths of 0.1.
Importing one gives the product module itself (same classes, so ``isinstance`` and mocks agree) and a
DeprecationWarning naming the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

_PACKAGE = "airflow_provider_canvas"

#: 0.1's module (below the package) -> where it lives now.
MOVED = {
    "net": "common.net",
    "files": "common.files",
    "tokens.metadata": "common.airflow_access",
    "hooks.connection_checks": "common.connection",
    "hooks.connected": "common.connection",
    "hooks.async_base": "common.async_hook",
    "hooks.transport": "common.transport",
    "hooks.download": "common.download",
    "hooks.zip_check": "common.zip_check",
    "hooks.base": "tokens.hook",
    "hooks.diagnostics": "tokens.diagnostics",
    "hooks.canvas_sso": "canvas.hooks.sso",
    "hooks.canvas_data_async": "canvas_data.hooks.canvas_data_async",
    "hooks.canvas_data_auth": "canvas_data.hooks.auth",
    "hooks.canvas_data_models": "canvas_data.hooks.models",
    "hooks.canvas_data_objects": "canvas_data.hooks.objects",
    "hooks.canvas_data": "canvas_data.hooks.canvas_data",
    "hooks.canvas": "canvas.hooks.canvas",
    "hooks.bds_async_listing": "brightspace.hooks.listing",
    "hooks.brightspace_async": "brightspace.hooks.brightspace_async",
    "hooks.brightspace_models": "brightspace.hooks.models",
    "hooks.brightspace": "brightspace.hooks.brightspace",
    "operators._jsonl": "canvas.operators._jsonl",
    "operators._canvas_data_tables": "canvas_data.operators._tables",
    "operators.canvas_data_load": "canvas_data.operators.load",
    "operators.canvas_data": "canvas_data.operators.pull",
    "operators.canvas": "canvas.operators.accounts",
    "operators.bds_lineage": "brightspace.operators.lineage",
    "operators.brightspace_ads": "brightspace.operators.ads",
    "operators.brightspace": "brightspace.operators.data_sets",
    "triggers.bds_extracts": "brightspace.triggers.new_extract",
    "triggers.brightspace": "brightspace.triggers.ads",
    "triggers.canvas_data": "canvas_data.triggers.jobs",
    "sensors.brightspace": "brightspace.sensors.new_extract",
    "loading.catalogue": "brightspace.loading.catalogue",
    "loading.column_types": "brightspace.loading.column_types",
    "loading.extract": "brightspace.loading.extract",
    "loading.full_replace": "brightspace.loading.full_replace",
    "loading.ledger": "brightspace.loading.ledger",
    "loading.postgres": "brightspace.loading.postgres",
    "loading.pull_state": "brightspace.loading.pull_state",
    "loading.pulled_check": "brightspace.loading.pulled_check",
    "loading.upsert": "brightspace.loading.upsert",
    "loading.sql": "brightspace.loading.sql",
    "loading.dap_ledger": "canvas_data.loading.ledger",
    "loading.dap_load": "canvas_data.loading.load",
    "loading.dap_records": "canvas_data.loading.records",
    "loading.dap_schema": "canvas_data.loading.schema",
    "loading.dap_sql": "canvas_data.loading.sql",
    "loading.dap_state": "canvas_data.loading.state",
    "loading.dap_stream": "canvas_data.loading.stream",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module it moved to."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        old = fullname.removeprefix(_PACKAGE + ".")
        if fullname == old or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        new = f"{_PACKAGE}.{MOVED[spec.name.removeprefix(_PACKAGE + '.')]}"
        warnings.warn(f"{spec.name} is deprecated: import {new}", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the old path's spec on the module: give it back its own.
        moved = module.__spec__
        assert moved is not None  # create_module's spec, which the import system set before this call
        module.__spec__ = moved.loader_state


def install() -> None:
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
