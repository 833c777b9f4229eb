"""Reading a finished SIS import: which outcomes succeed, and a change_threshold refusal said plainly."""

from __future__ import annotations

import pytest

from airflow_provider_canvas.canvas.hooks.sis import sis_import_params
from airflow_provider_canvas.canvas.hooks.sis_models import SisOutcome
from airflow_provider_canvas.exceptions import LmsConfigurationError


def body(state: str, errors=None, warnings=None) -> dict:
    return {
        "id": 7,
        "workflow_state": state,
        "data": {"counts": {"users": 3}},
        "processing_errors": errors,
        "processing_warnings": warnings,
    }


@pytest.mark.parametrize(
    ("state", "succeeded"),
    [
        ("imported", True),
        ("imported_with_messages", True),
        ("failed", False),
        ("failed_with_messages", False),
        ("aborted", False),
    ],
)
def test_outcomes(state, succeeded):
    assert SisOutcome.from_json(body(state)).succeeded is succeeded


def test_a_batch_threshold_refusal_fails_even_when_canvas_calls_it_imported():
    outcome = SisOutcome.from_json(
        body(
            "imported_with_messages",
            errors=[["", "120 enrollments would be deleted and exceeds the set threshold of 10%"]],
        )
    )
    assert not outcome.succeeded
    assert outcome.threshold_refusals == [
        "batch mode would have deleted 120 enrollments, more than change_threshold 10% allows; "
        "Canvas deleted none of them"
    ]


def test_import_params_take_documented_options_only():
    assert sis_import_params(
        {"batch_mode": True, "batch_mode_term_id": "sis_term_id:T1", "skip_deletes": False}
    ) == {
        "import_type": "instructure_csv",
        "extension": "zip",
        "batch_mode": "true",
        "batch_mode_term_id": "sis_term_id:T1",
    }
    with pytest.raises(LmsConfigurationError, match="batch_mod"):
        sis_import_params({"batch_mod": True})
