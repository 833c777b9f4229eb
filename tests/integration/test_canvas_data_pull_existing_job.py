"""DAP hands back the existing job for an identical query: the pull records it once, not twice."""

from __future__ import annotations

from test_canvas_data_pull import conn_id, dap, make_op  # noqa: F401 (fixtures)

from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder


def test_a_job_handed_back_for_an_identical_query_is_recorded_once(dap, conn_id, tmp_path):  # noqa: F811
    pulls = [make_op(conn_id, tmp_path, ["users"], deferrable=False).execute({}) for _ in range(3)]

    # Nothing changed after the snapshot: the second and third incremental are the same query.
    assert pulls[1]["users"]["kind"] == "incremental"
    assert pulls[2]["users"]["job_id"] == pulls[1]["users"]["job_id"]
    batches = DapTableFolder(tmp_path, "canvas", "users").read_state().batches
    assert [b.job_id for b in batches] == [pulls[0]["users"]["job_id"], pulls[1]["users"]["job_id"]]
    assert len(dap.jobs) == 2  # the third run created no job
