"""CanvasDataLoadOperator: its asset per table, templating, and the lineage it reports."""

from __future__ import annotations

from airflow.providers.openlineage.extractors import OperatorLineage
from airflow.sdk import Asset, AssetAlias

from airflow_provider_canvas.canvas_data.operators.load import CanvasDataLoadOperator, canvas_data_table_asset


def test_each_load_declares_its_table_as_an_outlet_asset(tmp_path):
    op = CanvasDataLoadOperator(task_id="t", table="accounts", location=tmp_path, postgres_conn_id="dw")
    renamed = CanvasDataLoadOperator(
        task_id="u",
        table="accounts",
        location=tmp_path,
        postgres_conn_id="dw",
        schema="cd2",
        target_table="acc",
    )

    assert op.outlets == [canvas_data_table_asset("dw", "canvas_data", "accounts")]
    assert op.outlets[0] == Asset(uri="x-canvas-data-table://dw/canvas_data/accounts")
    assert renamed.outlets == [Asset(uri="x-canvas-data-table://dw/cd2/acc")]


def test_templated_names_announce_the_asset_through_an_alias(tmp_path):
    op = CanvasDataLoadOperator(
        task_id="t", table="{{ params.table }}", location="{{ params.location }}", postgres_conn_id="dw"
    )

    assert [type(o) for o in op.outlets] == [AssetAlias]
    assert op.outlets[0].name == "canvas-data-load:dw/canvas_data/{{ params.table }}"
    expected = {"namespace", "table", "location", "postgres_conn_id", "schema", "target_table"}
    assert expected <= set(CanvasDataLoadOperator.template_fields)


def test_lineage_inputs_are_the_loaded_files_and_the_output_has_the_table_columns(tmp_path):
    op = CanvasDataLoadOperator(task_id="t", table="accounts", location=tmp_path, postgres_conn_id="dw")
    assert op.get_openlineage_facets_on_complete(None) == OperatorLineage()  # before (or without) a load

    op._lineage = {
        "files": [str(tmp_path / "canvas/accounts/j1/part-0.json.gz")],
        "namespace": "postgres://db.example.edu:5432",
        "name": "warehouse.canvas_data.accounts",
        "columns": [("id", "bigint"), ("name", "text")],
    }
    lineage = op.get_openlineage_facets_on_complete(None)

    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("file", f"{tmp_path}/canvas/accounts/j1/part-0.json.gz")
    ]
    [output] = lineage.outputs
    assert (output.namespace, output.name) == (
        "postgres://db.example.edu:5432",
        "warehouse.canvas_data.accounts",
    )
    assert [(f.name, f.type) for f in output.facets["schema"].fields] == [("id", "bigint"), ("name", "text")]
