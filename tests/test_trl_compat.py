"""Coming from TRL: a TRL GRPO script runs with only its imports changed (`rftune.trl`), and TRL's key names are
read as aliases of rftune's in YAML files and overrides, each with a one-line notice."""

import json

import pytest

from rftune.config import load_config
from rftune.errors import ConfigError

pytest.importorskip("trl")

# A script as TRL's documentation writes one: its own dataset, TRL's reward functions, GRPOConfig, peft LoRA.
TRL_SCRIPT = '''
from datasets import Dataset
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer
from trl.rewards import get_soft_overlong_punishment, think_format_reward

dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Say {w}"}]} for w in ["cat", "dog"]])


def brevity(completions, **kwargs):
    return [-len(c[0]["content"]) / 10 for c in completions]


training_args = GRPOConfig(output_dir=OUTPUT_DIR, max_steps=2, per_device_train_batch_size=2,
                           gradient_accumulation_steps=2, num_generations=2, max_completion_length=6,
                           learning_rate=1e-4, beta=0.04, epsilon=0.3, logging_steps=1, save_steps=0, seed=1)
trainer = GRPOTrainer(model=MODEL, reward_funcs=[think_format_reward, get_soft_overlong_punishment(6, 2), brevity],
                      args=training_args, train_dataset=dataset,
                      peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
trainer.train()
'''


def test_a_trl_script_runs_with_only_its_imports_changed(tiny_model_dir, tmp_path):
    script = TRL_SCRIPT.replace("from trl import GRPOConfig, GRPOTrainer",
                                "from rftune.trl import GRPOConfig, GRPOTrainer")
    assert script.count("\n") == TRL_SCRIPT.count("\n") and script != TRL_SCRIPT
    scope = {"OUTPUT_DIR": str(tmp_path / "run"), "MODEL": tiny_model_dir}
    exec(compile(script, "train_grpo.py", "exec"), scope)
    config = scope["trainer"].config
    assert (config.train.batch_size, config.train.gradient_accumulation_steps) == (4, 2)  # 2 per micro-batch x 2
    assert (config.algorithm.epsilon_low, config.algorithm.epsilon_high, config.algorithm.beta) == (0.3, 0.3, 0.04)
    assert config.algorithm.loss_type == "dapo" and config.algorithm.kl_ratio_weighted  # TRL's defaults kept
    assert (config.lora.r, config.lora.alpha, config.lora.target_modules) == (4, 8, ["q_proj", "v_proj"])
    assert config.generation.max_new_tokens == 6 and config.train.learning_rate == 1e-4
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert {"rewards/think_format_reward/mean", "rewards/soft_overlong_punishment_reward/mean",
            "rewards/brevity/mean"} <= set(metrics[0])
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()


def test_trl_config_keys_rftune_cannot_honour_are_named():
    from rftune.trl import GRPOConfig, GRPOTrainer

    with pytest.raises(ConfigError, match=r"cannot honour 'gradient_checkpointing', 'vllm_mode'"):
        GRPOConfig(output_dir="x", gradient_checkpointing=True, vllm_mode="server")
    with pytest.raises(ConfigError, match=r"cannot honour eval_dataset"):
        GRPOTrainer(model="m", reward_funcs=len, args=GRPOConfig(), train_dataset=[{"prompt": "a"}],
                    eval_dataset=[{"prompt": "b"}])
    with pytest.raises(ConfigError, match=r"reward models .* are not supported"):
        GRPOTrainer(model="m", reward_funcs="some/reward-model", train_dataset=[{"prompt": "a"}])


def test_without_max_steps_the_run_lasts_trl_epochs(tiny_model_dir):
    from rftune.trl import GRPOConfig, _config

    args = GRPOConfig(output_dir="x", num_generations=2, per_device_train_batch_size=4, num_train_epochs=2)
    config = _config(args, tiny_model_dir, None, num_rows=5)
    assert config.train.max_steps == 5  # ceil(2 epochs x 5 rows / 2 prompts per step)
    assert config.lora.enabled is False  # no peft_config: TRL fine-tunes every weight
    assert config.train.learning_rate == 1e-6 and config.generation.max_new_tokens == 512  # TRL's defaults


def test_flat_trl_yaml_and_overrides_are_aliases_with_a_notice(tmp_path, capsys):
    path = tmp_path / "trl.yaml"
    path.write_text("model_name_or_path: some/model\nmax_completion_length: 64\nepsilon: 0.25\nepsilon_high: 0.28\n"
                    "per_device_train_batch_size: 4\ngradient_accumulation_steps: 2\nnum_generations: 4\n"
                    "lr_scheduler_type: constant_with_warmup\nreport_to: none\nlogging_steps: 5\nbf16: off\n"
                    "rewards:\n  functions: [{name: exact_answer}, {name: format_regex}]\nreward_weights: [1.0, 0.5]\n")
    config = load_config(path, ["beta=0.1", "generation.temperature=0.7", "algorithm.scale_rewards=none"])
    assert config.model.name_or_path == "some/model" and config.generation.max_new_tokens == 64
    assert (config.algorithm.epsilon_low, config.algorithm.epsilon_high) == (0.25, 0.28)
    assert (config.train.batch_size, config.train.gradient_accumulation_steps) == (8, 2)
    assert config.train.lr_scheduler == "constant" and config.train.report_to == ["jsonl"]
    assert config.train.bf16 is False and config.algorithm.beta == 0.1
    assert [f.weight for f in config.rewards.functions] == [1.0, 0.5]
    notices = capsys.readouterr().err.splitlines()
    assert "notice: TRL key 'max_completion_length' read as generation.max_new_tokens" in notices
    assert "notice: TRL key 'beta' read as algorithm.beta" in notices
    assert "notice: TRL key 'logging_steps' has no effect: rftune logs every step" in notices
    assert all(line.startswith("notice: TRL key ") for line in notices) and len(notices) == 13
    in_section = load_config(None, ["generation.max_completion_length=32", "algorithm.epsilon=0.1"])
    assert in_section.generation.max_new_tokens == 32 and in_section.algorithm.epsilon_high == 0.1


def test_shuffle_dataset_is_train_shuffle(tiny_model_dir, tmp_path):
    from rftune.trl import GRPOConfig, _config

    path = tmp_path / "trl.yaml"
    path.write_text("shuffle_dataset: no\n")
    assert load_config(path).train.shuffle is False
    assert load_config(None, ["shuffle_dataset=false"]).train.shuffle is False
    assert load_config(None).train.shuffle is True
    args = GRPOConfig(output_dir="x", num_generations=2, per_device_train_batch_size=2, shuffle_dataset=False)
    assert _config(args, tiny_model_dir, None, num_rows=4).train.shuffle is False


@pytest.mark.parametrize("overrides, message", [
    (["max_completion_length=8", "generation.max_new_tokens=9"], "'max_completion_length' and its rftune key "
                                                                 "'generation.max_new_tokens' are both given"),
    (["num_train_epochs=3"], "'num_train_epochs' have no rftune equivalent; docs/from_trl.md"),
    (["reward_weights=[1, 2]"], "reward_weights' weights rewards.functions in order"),
])
def test_trl_key_mistakes_are_clear(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
