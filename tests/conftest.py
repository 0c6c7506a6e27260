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


@pytest.fixture
def cpu_without(monkeypatch):
    """Call with feature names (e.g. ``"avx512"``) to make `rftune.cpu.features` report them absent, as
    ``RFTUNE_CPU_FEATURES_OFF`` does; the real answer is restored after the test."""
    from rftune.cpu.features import ENV_OFF, cpu_features

    def hide(*names: str):
        monkeypatch.setenv(ENV_OFF, ",".join(names))
        cpu_features.cache_clear()
        return cpu_features()

    yield hide
    monkeypatch.delenv(ENV_OFF, raising=False)
    cpu_features.cache_clear()


@pytest.fixture(params=["this CPU", "AVX2 only"])
def cpu_kind(request, cpu_without):
    """Runs a test twice: with this CPU's features, and as on an AVX2-only CPU (the plain paths)."""
    if request.param == "AVX2 only":
        cpu_without("avx512")
    return request.param


@pytest.fixture(autouse=True)
def model_repository(tmp_path, monkeypatch):
    """Every test (and the CLI subprocesses it starts) registers into ``<tmp_path>/repository``."""
    path = tmp_path / "repository"
    monkeypatch.setenv("RFTUNE_REPOSITORY", str(path))
    return path
