"""Two GRPO steps with LoRA on a tiny random Llama built in the test: finite loss, adapters move, base does not."""

import json
import math

import pytest
import torch

from rftune import GRPOTrainer, config_from_dict
from rftune.cpu import attention, lora_fused, rms_norm
from rftune.errors import ConfigError, RewardError
from rftune.runtime.tracking import read_jsonl

PROMPTS = [{"prompt": f"Say {word}", "word": word} for word in ["cat", "dog", "owl", "bee", "ant", "elk"]]


def vowel_share(prompt, completion, example):
    """Varies across random completions, so groups have non-zero advantages."""
    return sum(c in "aeiou" for c in completion) / max(len(completion), 1)


def batched_len(prompts, completions, word, **kwargs):
    return [len(c) / 10 + (w in c) for c, w in zip(completions, word)]


def make_config(tiny_model_dir, output_dir, train=None, **algorithm):
    return config_from_dict({
        "model": {"name_or_path": tiny_model_dir},
        "lora": {"r": 4, "alpha": 8},
        "generation": {"num_generations": 4, "max_new_tokens": 10},
        "algorithm": {"beta": 0.1, **algorithm},
        "train": {"output_dir": str(output_dir), "max_steps": 2, "batch_size": 8, "gradient_accumulation_steps": 2,
                  "learning_rate": 5e-3, "save_steps": 1, **(train or {})},
    })


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_two_steps_update_lora_only(tiny_model_dir, tmp_path):
    trainer = GRPOTrainer(make_config(tiny_model_dir, tmp_path / "run"), reward_funcs=[vowel_share, batched_len],
                          dataset=PROMPTS, progress=False)
    before = snapshot(trainer.model)
    history = trainer.train()
    after = snapshot(trainer.model)
    assert [m["step"] for m in history] == [1, 2]
    for metrics in history:
        assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["kl"]) and metrics["kl"] >= 0
        for key in ("reward/mean", "rewards/vowel_share/mean", "rewards/batched_len/mean", "advantage/abs_mean",
                    "frac_zero_std", "clip/low", "clip/high", "entropy", "completion_len/mean", "completion_len/max",
                    "truncated_frac", "time/generation", "time/reward", "time/reference", "time/update", "time/train",
                    "time/step", "tokens_per_s"):
            assert key in metrics, key
    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and base
    assert any(not torch.equal(before[n], after[n]) for n in lora), "LoRA weights did not move"
    assert all(torch.equal(before[n], after[n]) for n in base), "base weights changed under LoRA"

    run = tmp_path / "run"
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    completions = read_jsonl(run / "completions.jsonl")
    assert len(completions) == 16
    row = completions[0]
    assert set(row) == {"step", "prompt", "completion", "rewards", "reward", "advantage"}
    assert row["reward"] == pytest.approx(row["rewards"]["vowel_share"] + row["rewards"]["batched_len"], abs=1e-5)
    group = [r["advantage"] for r in completions[:4]]
    assert sum(group) == pytest.approx(0.0, abs=1e-4)  # advantages are centred within each group
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "step-000002" / "state.pt").is_file()


def test_final_adapter_loads_with_peft(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer = GRPOTrainer(make_config(tiny_model_dir, tmp_path / "run"), reward_funcs=[vowel_share], dataset=PROMPTS,
                          progress=False)
    trainer.train()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "run" / "final"))
    trained = dict(trainer.model.named_parameters())
    for name, param in loaded.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(param, trained[name])


@pytest.mark.parametrize("algorithm", [
    {"loss_type": "dr_grpo", "scale_rewards": "none", "num_iterations": 2},
    {"loss_type": "dapo", "epsilon_high": 0.28, "importance_sampling_level": "sequence", "beta": 0.0},
    {"dynamic_sampling": True, "max_resample_rounds": 2, "mask_truncated_completions": True},
])
def test_algorithm_variants_run(tiny_model_dir, tmp_path, algorithm):
    trainer = GRPOTrainer(make_config(tiny_model_dir, tmp_path / "run", **algorithm), reward_funcs=[vowel_share],
                          dataset=PROMPTS, progress=False)
    history = trainer.train()
    assert all(math.isfinite(m["loss"]) for m in history)
    if algorithm.get("dynamic_sampling"):  # both shares: of the first sampling round, of the batch trained on
        assert "dynamic_sampling/rounds" in history[0]
        assert 0 <= history[0]["dynamic_sampling/frac_zero_std_sampled"] <= 1 and 0 <= history[0]["frac_zero_std"] <= 1


def test_full_finetuning_uses_a_frozen_reference(tiny_model_dir, tmp_path):
    config = make_config(tiny_model_dir, tmp_path / "run")
    config = config_from_dict({**json.loads(json.dumps(__import__("dataclasses").asdict(config))),
                               "lora": {"enabled": False}})
    trainer = GRPOTrainer(config, reward_funcs=[vowel_share], dataset=PROMPTS, progress=False)
    ref_before = snapshot(trainer.ref_model)
    before = snapshot(trainer.model)
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert all(torch.equal(ref_before[n], p) for n, p in trainer.ref_model.named_parameters())


def test_failing_reward_stops_with_its_name(tiny_model_dir, tmp_path):
    def broken(prompt, completion, example):
        raise ZeroDivisionError("oops")
    trainer = GRPOTrainer(make_config(tiny_model_dir, tmp_path / "run"), reward_funcs=[broken], dataset=PROMPTS,
                          progress=False)
    with pytest.raises(RewardError, match=r"reward function 'broken' failed on sample 0"):
        trainer.train()


def test_existing_run_is_not_overwritten(tiny_model_dir, tmp_path):
    GRPOTrainer(make_config(tiny_model_dir, tmp_path / "run"), reward_funcs=[vowel_share], dataset=PROMPTS,
                progress=False).train()
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        GRPOTrainer(make_config(tiny_model_dir, tmp_path / "run"), reward_funcs=[vowel_share], dataset=PROMPTS,
                    progress=False)


def test_bf16_run_stores_frozen_weights_once_and_trains_float32_adapters(tiny_model_dir, tmp_path, cpu_kind):
    config = make_config(tiny_model_dir, tmp_path / "run", train={"bf16": True})
    trainer = GRPOTrainer(config, reward_funcs=[vowel_share], dataset=PROMPTS, progress=False)
    params = dict(trainer.model.named_parameters())
    frozen_linear = [n for n in params if "base_layer.weight" in n]
    assert frozen_linear and all(params[n].dtype == torch.bfloat16 for n in frozen_linear)
    assert all(p.dtype == torch.float32 for n, p in params.items() if "lora_" in n)
    assert params["base_model.model.model.embed_tokens.weight"].dtype == torch.float32  # residual stream stays fp32
    inner = trainer.model.get_base_model()  # the faster training passes are switched on
    assert inner.config._attn_implementation == attention.NAME
    layer = inner.model.layers[0]
    assert layer.self_attn.q_proj.forward.__func__ is lora_fused._fused_forward
    assert layer.input_layernorm.forward.__func__ is rms_norm._fused_forward
    before = snapshot(trainer.model)
    history = trainer.train()
    assert all(math.isfinite(m["loss"]) and m["kl"] >= 0 for m in history)
    after = snapshot(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_" in n)
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_" not in n)

