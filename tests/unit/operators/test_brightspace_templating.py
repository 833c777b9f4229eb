"""The Brightspace operators template their connection id and location, as the Canvas ones do."""

from __future__ import annotations

from airflow.sdk import AssetAlias

from airflow_provider_canvas.brightspace.operators.data_sets import (
    BrightspaceAdvancedDataSetOperator,
    BrightspaceDataSetsPullOperator,
    BrightspaceDataSetsToPostgresOperator,
)
from airflow_provider_canvas.canvas.operators.accounts import CanvasAccountsOperator


def test_connection_ids_and_locations_are_templated():
    assert "canvas_conn_id" in CanvasAccountsOperator.template_fields
    assert {"brightspace_conn_id", "location"} <= set(BrightspaceDataSetsPullOperator.template_fields)
    assert {"postgres_conn_id", "location"} <= set(BrightspaceDataSetsToPostgresOperator.template_fields)
    assert {"brightspace_conn_id", "destination"} <= set(BrightspaceAdvancedDataSetOperator.template_fields)


def test_a_templated_location_announces_its_assets_through_an_alias(tmp_path):
    fixed = BrightspaceDataSetsPullOperator(task_id="a", data_sets=["Users"], location=tmp_path)
    templated = BrightspaceDataSetsPullOperator(
        task_id="b", data_sets=["Users"], location="{{ params.bds_folder }}"
    )

    assert not any(isinstance(outlet, AssetAlias) for outlet in fixed.outlets)
    assert [outlet.name for outlet in templated.outlets] == ["brightspace-data-sets:{{ params.bds_folder }}"]
