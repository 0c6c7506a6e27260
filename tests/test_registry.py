"""Variant registries: a new variant is one decorated function or class, the config checks names against the
registry (suggesting the closest), and the README's table of variants is the registries' contents."""

import re
import typing
from importlib import import_module
from pathlib import Path

import pytest

from rftune.config import GenerationConfig, load_config
from rftune.errors import ConfigError
from rftune.registry import Registry
from rftune.rollout.generation import BACKENDS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_a_decorated_function_is_registered_under_its_name_once():
    registry = Registry("algorithm.loss_type")

    @registry.register("mean")
    def mean(values):
        return sum(values) / len(values)

    assert registry["mean"] is mean and mean([1, 3]) == 2  # the decorator gives the function back unchanged
    registry.register("mean")(mean)  # the same object again (a module imported twice) is fine
    with pytest.raises(ValueError, match="algorithm.loss_type: 'mean' is registered twice"):
        registry.register("mean")(lambda values: 0)


def test_an_unknown_name_lists_the_known_ones_and_suggests_the_closest():
    registry = Registry("algorithm.loss_type")
    for name in ("grpo", "dapo"):
        registry.register(name)(name.upper)
    registry.check("dapo")
    with pytest.raises(ConfigError, match=r"^algorithm.loss_type: must be one of 'grpo', 'dapo', got 'dapoo'; "
                                          r"did you mean 'dapo'\?$"):
        registry.check("dapoo")
    with pytest.raises(ConfigError, match=r"got 'ppo'$"):
        registry.check("ppo")


def test_the_config_suggests_the_closest_registered_name(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("algorithm:\n  scale_rewards: grop\n")
    with pytest.raises(ConfigError, match=r"algorithm.scale_rewards: .*got 'grop'; did you mean 'group'\?"):
        load_config(str(path))
    with pytest.raises(ConfigError, match=r"algorithm.loss_type: .*got 'dr-grpo'; did you mean 'dr_grpo'\?"):
        load_config(None, ["algorithm.loss_type=dr-grpo"])


def readme_variants() -> dict[str, tuple[str, list[str]]]:
    """The README's table of variants: setting -> (registry path, names)."""
    rows = re.findall(r"^\| `([\w.]+)` \| `([\w.]+)` \| ((?:`[\w-]+`(?:, )?)+) \|$", README.read_text(), re.M)
    return {setting: (registry, re.findall(r"`([\w-]+)`", names)) for setting, registry, names in rows}


def test_the_readme_table_of_variants_is_the_registries():
    table = readme_variants()
    assert set(table) == {"algorithm.loss_type", "algorithm.importance_sampling_level", "algorithm.scale_rewards",
                          "generation.backend"}
    for setting, (path, names) in table.items():
        module, _, attribute = path.rpartition(".")
        registry = getattr(import_module(module), attribute)
        assert registry.setting == setting
        assert names == list(registry), setting


def test_the_backend_setting_accepts_auto_and_the_registered_backends():
    hint = typing.get_type_hints(GenerationConfig)["backend"]
    assert typing.get_args(hint) == ("auto", *BACKENDS)
