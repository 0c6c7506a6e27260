"""Shared fixtures: a tiny random-init chat model saved once per test session."""

import pytest

from rftune.testing import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder holding a tiny random Llama with a char-level tokenizer and ChatML template (no download)."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))
