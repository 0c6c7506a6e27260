"""Shared fixtures: a tiny random-init chat model saved once per test session, and a model repository of each
test's own (no test registers versions in the user's real repository).

Tests run torch on one thread: the tiny model gains nothing from more, and on a 2-core machine extra OpenMP
threads only fight with other processes. Slow tests that run the real model set their own thread count.
"""

import pytest
import torch

from rftune.testing import build_tiny_model

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder holding a tiny random Llama with a char-level tokenizer and ChatML template (no download)."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(autouse=True)
def model_repository(tmp_path, monkeypatch):
    """Every test (and the CLI subprocesses it starts) registers into ``<tmp_path>/repository``."""
    path = tmp_path / "repository"
    monkeypatch.setenv("RFTUNE_REPOSITORY", str(path))
    return path
