"""Every 0.1 module path still imports, warns that it moved, and is the moved module itself."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

from airflow_provider_canvas._moved import _PACKAGE, MOVED


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_old_path_is_the_new_module_with_a_deprecation_warning(old: str, new: str) -> None:
    old_name, new_name = f"{_PACKAGE}.{old}", f"{_PACKAGE}.{new}"
    sys.modules.pop(old_name, None)  # a cached import would not warn again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old_module = importlib.import_module(old_name)
    moved = importlib.import_module(new_name)
    assert old_module is moved
    assert old_module.__spec__.name == new_name
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert f"{old_name} is deprecated: import {new_name}" in messages
    # The same class objects, so isinstance checks and serialised trigger paths agree.
    classes = {name for name, value in vars(moved).items() if isinstance(value, type)}
    assert all(getattr(old_module, name) is getattr(moved, name) for name in classes)


def test_from_import_of_an_old_path_gives_the_same_class() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from airflow_provider_canvas.hooks.canvas_data import CanvasDataHook as old_hook
        from airflow_provider_canvas.operators.brightspace import (
            BrightspaceDataSetsPullOperator as old_operator,
        )
    from airflow_provider_canvas.brightspace.operators.data_sets import BrightspaceDataSetsPullOperator
    from airflow_provider_canvas.canvas_data.hooks.canvas_data import CanvasDataHook

    assert (old_hook, old_operator) == (CanvasDataHook, BrightspaceDataSetsPullOperator)


def test_an_unknown_old_path_still_fails() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"{_PACKAGE}.hooks.no_such_module")
