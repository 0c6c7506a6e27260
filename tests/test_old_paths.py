"""Modules that moved into packages keep their old import paths for one release: importing an old path warns
with a DeprecationWarning naming the new one, and gives the moved module itself."""

import importlib
import sys
import warnings

import pytest

from rftune._moved import MOVED


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_an_old_path_warns_and_is_the_moved_module(old, new):
    sys.modules.pop(f"rftune.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"rftune.{old} has moved to rftune.{new};"):
        module = importlib.import_module(f"rftune.{old}")
    assert module is importlib.import_module(f"rftune.{new}")
    assert module.__spec__.name == f"rftune.{new}"


def test_a_name_from_an_old_path_is_the_same_object_and_the_warning_points_at_the_importer():
    sys.modules.pop("rftune.trainer", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from rftune.trainer import GRPOTrainer
    from rftune.train.trainer import GRPOTrainer as moved

    assert GRPOTrainer is moved
    assert [(w.category, w.filename) for w in caught] == [(DeprecationWarning, __file__)]


def test_patching_through_an_old_path_patches_the_moved_module(monkeypatch):
    from rftune.train import logprobs

    monkeypatch.setattr("rftune.logprobs.GROUP_OVERHEAD_TOKENS", -1)
    assert logprobs.GROUP_OVERHEAD_TOKENS == -1


def test_an_unknown_module_is_still_not_found():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("rftune.no_such_module")
