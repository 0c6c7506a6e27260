"""The trainer's wiring, step by step on a tiny model: old log-probs reused over num_iterations, gradient
accumulation, dynamic sampling, masking truncated completions, and the learning-rate schedules."""

import dataclasses
import json
import math

import pytest
import torch

from rftune import GRPOTrainer, config_from_dict
from rftune.rollout.generation import sample_completions
from rftune.testing import FirstRowsStream
from rftune.train.trainer import _lr_lambda

PROMPTS = [{"prompt": f"Say {word}", "word": word, "flat": i % 2 == 0}
           for i, word in enumerate(["cat", "dog", "owl", "bee", "ant", "elk", "emu", "yak"])]


def length_unless_flat(prompt, completion, example):
    """Equal rewards for the 'flat' prompts (their groups teach nothing), varied for the others."""
    return 0.5 if example["flat"] else sum(map(ord, completion)) % 97 / 97


def _config(tiny_model_dir, tmp_path, train=None, generation=None, **algorithm):
    return config_from_dict({
        "model": {"name_or_path": tiny_model_dir}, "lora": {"r": 4, "alpha": 8},
        "generation": {"num_generations": 4, "max_new_tokens": 8, **(generation or {})},
        "algorithm": {"beta": 0.0, **algorithm},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 8, "device": "cpu",
                  "save_steps": 0, **(train or {})}})


def _fixed(truncated: bool = False):
    """A rollout function returning one batch, sampled at its first call (every row marked truncated if asked)."""
    fixed = []

    def rollout(model, tokenizer, samples, params):
        if not fixed:
            torch.manual_seed(0)
            batch = sample_completions(model, tokenizer, samples, dataclasses.replace(params, backend="hf"))
            if truncated:
                batch = dataclasses.replace(batch, truncated=torch.ones_like(batch.truncated))
            fixed.append(batch)
        return fixed[0]
    return rollout


def _grads_of_one_step(config, rollout, reward=length_unless_flat):
    trainer = GRPOTrainer(config, reward_funcs=[reward], dataset=PROMPTS[1::2], rollout_fn=rollout, progress=False)
    grads = {}

    def capture():
        grads.update({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
        trainer.optimizer.zero_grad(set_to_none=True)
        return 0.0

    trainer._optimizer_step = capture
    metrics = trainer.step(FirstRowsStream())
    return grads, metrics




@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "bnpo"])
def test_gradient_accumulation_one_and_two_give_the_same_gradient(tiny_model_dir, tmp_path, loss_type):
    rollout = _fixed()
    results = [_grads_of_one_step(_config(tiny_model_dir, tmp_path / str(accum), loss_type=loss_type,
                                          train={"gradient_accumulation_steps": accum}), rollout)
               for accum in (1, 2)]
    (one, m1), (two, m2) = results
    assert one and any(g.abs().max() > 0 for g in one.values())
    if loss_type == "bnpo":  # a token mean per micro-batch: the same only when the micro-batches hold equal tokens
        return
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-7, rtol=1e-5, msg=name)
    assert m2["loss"] == pytest.approx(m1["loss"], abs=1e-6)


def test_the_second_pass_over_a_batch_uses_the_first_pass_log_probs(tiny_model_dir, tmp_path):
    # With mu = 1 the ratio is exactly 1: nothing is clipped. With mu = 2 and a large step, the second pass sees
    # ratios away from 1 against the kept old log-probs, and a narrow clip range engages.
    once = GRPOTrainer(_config(tiny_model_dir, tmp_path / "once", epsilon_low=0.001, epsilon_high=0.001,
                               train={"learning_rate": 0.05}),
                       reward_funcs=[length_unless_flat], dataset=PROMPTS[1::2], progress=False).train()
    twice = GRPOTrainer(_config(tiny_model_dir, tmp_path / "twice", num_iterations=2, epsilon_low=0.001,
                                epsilon_high=0.001, train={"learning_rate": 0.05}),
                        reward_funcs=[length_unless_flat], dataset=PROMPTS[1::2], progress=False).train()
    assert once[0]["clip/region"] == 0.0
    assert twice[0]["clip/region"] > 0.0  # averaged over both passes: all of it from the second


def test_dynamic_sampling_keeps_the_informative_groups_and_tops_up_at_the_cap(tiny_model_dir, tmp_path):
    def words(run):
        lines = (run / "completions.jsonl").read_text().splitlines()
        return {json.loads(line)["prompt"][-1]["content"] for line in lines}

    flat = {f"Say {row['word']}" for row in PROMPTS if row["flat"]}
    enough = GRPOTrainer(_config(tiny_model_dir, tmp_path / "a", dynamic_sampling=True, max_resample_rounds=6),
                         reward_funcs=[length_unless_flat], dataset=PROMPTS, progress=False)
    metrics = enough.train()[0]
    assert not words(tmp_path / "a" / "run") & flat  # only groups whose rewards differ were kept
    assert metrics["frac_zero_std"] == 0.0
    capped = GRPOTrainer(_config(tiny_model_dir, tmp_path / "b", dynamic_sampling=True, max_resample_rounds=0),
                         reward_funcs=[length_unless_flat], dataset=PROMPTS, progress=False)
    metrics = capped.train()[0]
    seen = words(tmp_path / "b" / "run")
    assert len(seen) == 2 and metrics["dynamic_sampling/rounds"] == 0  # no extra round: the batch is kept whole
    assert metrics["frac_zero_std"] == len(seen & flat) / 2


def test_truncated_completions_can_be_kept_out_of_the_loss(tiny_model_dir, tmp_path):
    rollout = _fixed(truncated=True)
    config = _config(tiny_model_dir, tmp_path / "kept")
    grads, metrics = _grads_of_one_step(config, rollout)
    assert metrics["truncated_frac"] == 1.0 and any(g.abs().max() > 0 for g in grads.values())
    masked = _config(tiny_model_dir, tmp_path / "masked", mask_truncated_completions=True)
    grads, metrics = _grads_of_one_step(masked, rollout)
    assert metrics["loss"] == 0.0 and all(g.abs().max() == 0 for g in grads.values())


@pytest.mark.parametrize("kind, expected", [
    ("constant", [1 / 3, 2 / 3, 1.0, 1.0, 1.0]),
    ("linear", [1 / 3, 2 / 3, 1.0, 0.5, 0.0]),  # warm-up 2, then 1 - (step - 2) / 8
    ("cosine", [1 / 3, 2 / 3, 1.0, 0.5, 0.0]),  # 0.5 (1 + cos(pi (step - 2) / 8))
])
def test_learning_rate_schedules_by_hand(kind, expected):
    factor = _lr_lambda(kind, warmup=2, total=10)
    assert [factor(step) for step in (0, 1, 2, 6, 10)] == pytest.approx(expected, abs=1e-12)
    if kind == "cosine":
        assert factor(4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
