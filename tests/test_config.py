"""Config loading and validation: every mistake gets a message that says what and where."""

import pytest

from rftune.config import config_from_dict, load_config
from rftune.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    path = write(tmp_path, "train:\n  max_steps: 7\ngeneration:\n  num_generations: 4\n")
    config = load_config(path, ["algorithm.beta=0", "train.learning_rate=1e-5", "lora.target_modules=[q_proj]"])
    assert config.train.max_steps == 7 and config.generation.num_generations == 4
    assert config.algorithm.beta == 0.0 and config.train.learning_rate == 1e-5
    assert config.lora.target_modules == ["q_proj"]
    assert config.base_dir == str(tmp_path.resolve())


def test_override_text_with_colons_stays_text():
    prompt = "Example: Calculate 2 + 3. 2 + 3 = 5. <answer>5</answer>"
    config = load_config(None, [f"task.system_prompt={prompt}", "task.kwargs={size: 10}"])
    assert config.task.system_prompt == prompt
    assert config.task.kwargs == {"size": 10}  # written in braces: a mapping
    assert load_config(None, ["task.system_prompt=Note: a: b"]).task.system_prompt == "Note: a: b"  # YAML error
    with pytest.raises(ConfigError, match=r"override 'task.kwargs=\{size: \[1\}': cannot parse value"):
        load_config(None, ["task.kwargs={size: [1}"])


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_step'; did you mean 'train.max_steps'"):
        load_config(None, ["train.max_step=3"])
    with pytest.raises(ConfigError, match=r"'algorithim'.*did you mean 'algorithm'"):
        config_from_dict({"algorithim": {}})


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"train.max_steps: expected int, got str 'ten'"):
        load_config(None, ["train.max_steps=ten"])
    with pytest.raises(ConfigError, match=r"train.bf16: expected bool"):
        load_config(None, ["train.bf16=3"])


def test_choice_and_range_errors():
    with pytest.raises(ConfigError, match=r"algorithm.loss_type: must be one of 'grpo'"):
        load_config(None, ["algorithm.loss_type=ppo"])
    with pytest.raises(ConfigError, match=r"generation.top_p: must be between"):
        load_config(None, ["generation.top_p=1.5"])
    with pytest.raises(ConfigError, match=r"algorithm.epsilon_high must be >= algorithm.epsilon_low"):
        load_config(None, ["algorithm.epsilon_high=0.1"])


def test_batch_must_be_multiple_of_num_generations():
    with pytest.raises(ConfigError, match=r"train.batch_size=30 is not a multiple of generation.num_generations=8"):
        load_config(None, ["train.batch_size=30"])
    with pytest.raises(ConfigError, match=r"gradient_accumulation_steps"):
        load_config(None, ["train.batch_size=16", "train.gradient_accumulation_steps=3"])


def test_reward_specs_are_typed():
    config = config_from_dict({"rewards": {"functions": [{"name": "exact_answer", "weight": 2, "kwargs": {"a": 1}}]}})
    assert config.rewards.functions[0].weight == 2.0 and config.rewards.functions[0].kwargs == {"a": 1}
    with pytest.raises(ConfigError, match=r"rewards.functions\[0\].wieght"):
        config_from_dict({"rewards": {"functions": [{"name": "x", "wieght": 2}]}})


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["train.max_steps"])


def test_dataset_task_needs_a_path_unless_rows_are_passed_in_code():
    from rftune.tasks import task_from_config

    config = load_config(None, ["task.name=dataset"])  # the Python API may pass the rows (GRPOTrainer(dataset=...))
    with pytest.raises(ConfigError, match=r"task.name=dataset needs task.path .* or the rows passed in code"):
        task_from_config(config)


def test_algorithm_names_come_from_the_registries(monkeypatch):
    from rftune.algo import advantages, losses

    with pytest.raises(ConfigError, match=r"algorithm.loss_type: must be one of 'grpo', 'bnpo', 'dapo', 'dr_grpo', "
                                          r"got 'ppo'"):
        load_config(None, ["algorithm.loss_type=ppo"])
    with pytest.raises(ConfigError, match=r"algorithm.scale_rewards: must be one of 'group', 'batch', 'none'"):
        load_config(None, ["algorithm.scale_rewards=rank"])
    # A new variant is one function in one registry: the config accepts it with nothing else changed.
    monkeypatch.setitem(losses.AGGREGATORS, "seq_sum", lambda per_token, mask, norms: (per_token * mask).sum())
    monkeypatch.setitem(advantages.SCALERS, "rank", advantages.no_scale)
    config = load_config(None, ["algorithm.loss_type=seq_sum", "algorithm.scale_rewards=rank"])
    assert (config.algorithm.loss_type, config.algorithm.scale_rewards) == ("seq_sum", "rank")


def _choice_fields():
    """(section.key, value) for every value a string field documents: each Literal's choices (the shipped
    `train.cpu_kernels: off` among them) and the algorithm names from their registries."""
    import dataclasses
    import typing

    from rftune.algo.advantages import SCALERS
    from rftune.algo.losses import AGGREGATORS, RATIOS
    from rftune.config import Config

    pairs = []
    for section, section_type in typing.get_type_hints(Config).items():
        if not dataclasses.is_dataclass(section_type):
            continue
        for key, hint in typing.get_type_hints(section_type).items():
            options = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
            for option in options:
                if typing.get_origin(option) is typing.Literal:
                    pairs += [(f"{section}.{key}", choice) for choice in typing.get_args(option)]
    registries = {"loss_type": AGGREGATORS, "importance_sampling_level": RATIOS, "scale_rewards": SCALERS}
    pairs += [(f"algorithm.{key}", name) for key, registry in registries.items() for name in registry]
    return pairs


@pytest.mark.parametrize("key,value", _choice_fields())
def test_every_documented_choice_loads_from_yaml_and_override(tmp_path, key, value):
    section, name = key.split(".")
    from_yaml = load_config(write(tmp_path, f"{section}:\n  {name}: {value}\n"))  # unquoted, as a user writes it
    from_override = load_config(None, [f"{key}={value}"])
    assert getattr(getattr(from_yaml, section), name) == value
    assert getattr(getattr(from_override, section), name) == value


def test_yaml_1_1_boolean_words_are_kept_as_written(tmp_path):
    text = ("train:\n  cpu_kernels: off\n  bf16: on\n  resume: yes\nlora:\n  enabled: no\n"
            "task:\n  system_prompt: Yes\n  kwargs: {flag: off, nested: [on, x]}\n"
            "rewards:\n  functions:\n    - {name: exact_answer, kwargs: {require_tag: no}}\n")
    config = load_config(write(tmp_path, text))
    assert config.train.cpu_kernels == "off" and type(config.train.cpu_kernels) is str
    assert config.train.bf16 is True and config.train.resume is True and config.lora.enabled is False
    assert config.task.system_prompt == "Yes"  # a string field: the text
    assert config.task.kwargs == {"flag": False, "nested": [True, "x"]}  # untyped: YAML 1.1's boolean
    assert config.rewards.functions[0].kwargs == {"require_tag": False}
    overridden = load_config(None, ["train.cpu_kernels=off", "lora.enabled=no", "train.bf16=OFF",
                                    "task.system_prompt=on"])
    assert (overridden.train.cpu_kernels, overridden.lora.enabled) == ("off", False)
    assert overridden.train.bf16 is False and overridden.task.system_prompt == "on"
    with pytest.raises(ConfigError, match=r"train.max_steps: expected int, got str 'no'"):
        load_config(None, ["train.max_steps=no"])
    with pytest.raises(ConfigError, match=r"train.cpu_kernels: must be one of 'auto', 'off', got 'on'"):
        load_config(None, ["train.cpu_kernels=on"])
