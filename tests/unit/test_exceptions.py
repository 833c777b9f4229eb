"""Every error of the provider is an LmsError; the ones a retry cannot fix fail the task at once."""

from __future__ import annotations

import inspect

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_canvas import exceptions


def _error_classes() -> list[type[BaseException]]:
    return [
        value
        for value in vars(exceptions).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == exceptions.__name__
    ]


def test_every_error_of_the_provider_is_an_lms_error() -> None:
    classes = _error_classes()
    assert len(classes) >= 15
    assert all(issubclass(cls, exceptions.LmsError) for cls in classes)


@pytest.mark.parametrize("cls", [exceptions.LmsConfigurationError, exceptions.LmsAuthError])
def test_errors_only_a_person_can_fix_stop_task_retries(cls: type[Exception]) -> None:
    # Airflow's task runner fails a task without retrying when the error is an AirflowFailException.
    assert issubclass(cls, AirflowFailException)


@pytest.mark.parametrize(
    "cls",
    [
        exceptions.LmsUnavailableError,
        exceptions.LmsThrottledError,
        exceptions.TokenLockTimeout,
        exceptions.TokenSaveError,
        exceptions.MetadataWriteError,
        exceptions.DownloadError,
    ],
)
def test_errors_a_later_try_may_not_meet_keep_task_retries(cls: type[Exception]) -> None:
    assert not issubclass(cls, AirflowFailException)


def test_configuration_errors_stay_value_errors() -> None:
    assert issubclass(exceptions.LmsConfigurationError, ValueError)


def test_every_public_error_class_lives_in_exceptions_py() -> None:
    # Read with ast, so a module nobody imported yet counts; testing/ is the emulator, not the provider.
    import ast
    from pathlib import Path

    root = Path(exceptions.__file__).parent
    elsewhere = [
        f"{path.relative_to(root)}:{node.name}"
        for path in root.rglob("*.py")
        if path.name != "exceptions.py" and "testing" not in path.relative_to(root).parts
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and node.name.endswith(("Error", "Exception"))
        and not node.name.startswith("_")
    ]
    assert elsewhere == []
    assert {"DapDataError", "DapSchemaError", "DapSchemaChangeError"} <= set(vars(exceptions))
