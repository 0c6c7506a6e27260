"""rftune's `policy_loss` equals TRL 1.16.0's `GRPOTrainer` loss on the same inputs.

A real (tiny, random-init) TRL `GRPOTrainer` computes its loss through `compute_loss` (its Trainer hook, a thin
wrapper over `_compute_loss`) from a hand-built micro-batch: prompt/completion ids, a padded completion mask,
advantages of both signs, old log-probs that put some ratios outside [1 - eps_low, 1 + eps_high] on both sides,
and reference log-probs. TRL's own `_get_per_token_logps_and_entropies` is wrapped to record the exact log-prob
tensor its loss used; that tensor is fed to rftune's `policy_loss`. Loss values, their gradients with respect to
the log-probs, and the KL and clip metrics must agree for every loss type rftune shares with TRL (grpo, bnpo,
dr_grpo, dapo), with and without the KL term, at token and sequence (GSPO) importance-sampling level, with clip
higher, and over two gradient-accumulation micro-batches.

Differences from TRL found:
- TRL 1.16 defaults to `use_bias_correction_kl=True`: its KL term is beta * rho * k3 (the importance ratio times the
  k3 estimate, DeepSeek-V3.2), while rftune's default is the plain beta * k3 (DeepSeekMath). The parity tests
  therefore set `use_bias_correction_kl=False`, except for rftune's `kl_ratio_weighted=True`, which is compared with
  TRL's default. Between the two defaults the loss values agree only on-policy (rho = 1), and even then the
  gradients differ by exactly the gradient of beta * k3.detach() * logprobs (pinned down below).
- With importance_sampling_level="sequence", TRL's clip_ratio metrics are means over sequences; rftune's clip
  metrics are means over completion tokens (each sequence weighted by its length). Checked explicitly below.
- TRL's dapo divides by `num_items_in_batch` (active tokens across the generation batch and all processes) and
  rescales by gradient_accumulation_steps / steps_per_generation; rftune divides by BatchNorms.tokens, the active
  tokens of the rollout batch. They coincide when TRL's generation batch is rftune's rollout batch, as here.
"""

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig  # the dev extra pins trl==1.16.0
from trl import GRPOTrainer as TRLGRPOTrainer

from rftune.algo.losses import AGGREGATORS, BatchNorms, k3_kl, policy_loss

ROWS, PROMPT_LEN, COMPLETION_LEN = 4, 3, 6
MAX_COMPLETION_LENGTH = 8  # > COMPLETION_LEN, so dr_grpo's constant is told apart from the padded length
EPSILON = 0.2

# 1 = token the policy produced; rows end in padding of different lengths
MASK = torch.tensor([[1, 1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 0, 0],
                     [1, 1, 0, 0, 0, 0],
                     [1, 1, 1, 1, 1, 0]])
ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.7])
# log pi - log pi_old. Token level: 0.3 / 0.5 clip high (A > 0), -0.3 / -0.45 clip low (A < 0), 0.22 (ratio 1.246)
# is clipped only with eps_high = 0.2, and opposite-side ratios stay unclipped. Sequence level (masked row means):
# rows 0, 1 stay inside the range, row 2 (mean 0.225) clips high, row 3 (mean -0.24) clips low. Padding holds
# values that would change every result if the mask were ignored.
LOG_RATIO = torch.tensor([[0.3, -0.3, 0.22, 0.1, -0.1, 0.0],
                          [-0.3, 0.3, -0.1, 0.05, 0.9, -0.9],
                          [0.5, -0.05, 2.0, -2.0, 1.0, 1.0],
                          [-0.45, 0.15, -0.3, -0.4, -0.2, 1.5]])
# log pi_ref - log pi
REF_OFFSET = torch.tensor([[0.1, -0.2, 0.3, -0.05, 0.0, 0.4],
                           [-0.3, 0.25, 0.05, -0.1, 1.0, -1.0],
                           [0.2, 0.15, -1.0, 1.0, 0.5, 0.5],
                           [-0.1, 0.35, -0.25, 0.2, 0.1, 2.0]])

LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo"]

# raised inside transformers' TrainingArguments for every GRPOConfig, not by anything this file sets
pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")


def zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


def trl_trainer(model_dir, output_dir, *, rows=ROWS, accumulation=1, **overrides):
    """A TRL GRPOTrainer on the tiny model, set up as its training loop would be for `accumulation` micro-batches."""
    overrides.setdefault("use_bias_correction_kl", False)  # TRL's default True weights the KL by rho (see top)
    args = GRPOConfig(output_dir=str(output_dir), use_cpu=True, bf16=False, report_to="none",
                      per_device_train_batch_size=rows, gradient_accumulation_steps=accumulation, num_generations=2,
                      max_completion_length=MAX_COMPLETION_LENGTH, epsilon=EPSILON, **overrides)
    trainer = TRLGRPOTrainer(model=model_dir, reward_funcs=zero_reward, args=args,
                             train_dataset=Dataset.from_dict({"prompt": ["hi"] * ROWS}))
    trainer.model.train()  # TRL picks the "train" branch of its normalisers from model.training
    trainer.current_gradient_accumulation_steps = accumulation  # set by transformers' training loop
    return trainer


def make_inputs(trainer):
    """The micro-batch dict TRL's _generate_and_score_completions would hand to compute_loss."""
    pad_id = trainer.processing_class.pad_token_id
    gen = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(10, 80, (ROWS, PROMPT_LEN), generator=gen)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[1, 0] = prompt_mask[3, :2] = 0  # left padding, as TRL pads prompts
    prompt_ids = prompt_ids.masked_fill(prompt_mask == 0, pad_id)
    completion_ids = torch.randint(10, 80, (ROWS, COMPLETION_LEN), generator=gen).masked_fill(MASK == 0, pad_id)
    with torch.no_grad():  # the current policy's log-probs, to place old and ref log-probs relative to them
        current, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, MASK], 1),
            COMPLETION_LEN)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": MASK, "advantages": ADVANTAGES, "old_per_token_logps": current - LOG_RATIO,
            "ref_per_token_logps": current + REF_OFFSET, "num_items_in_batch": MASK.sum()}


def record_logprobs(trainer, monkeypatch):
    """Keep every per-token log-prob tensor TRL's loss computes (with its graph), so rftune can use the same."""
    seen = []
    original = trainer._get_per_token_logps_and_entropies

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out[0])
        return out

    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", recording)
    return seen


def rows_of(inputs, rows):
    return {key: value[rows] if value.dim() else value for key, value in inputs.items()}


def assert_same_loss_and_gradient(trl_loss, ours, logprobs):
    torch.testing.assert_close(ours, trl_loss, rtol=1e-6, atol=1e-7)
    (trl_grad,) = torch.autograd.grad(trl_loss, logprobs, retain_graph=True)
    (our_grad,) = torch.autograd.grad(ours, logprobs, retain_graph=True)
    torch.testing.assert_close(our_grad, trl_grad, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.04, 0.0])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_and_metrics_match_trl(tiny_model_dir, tmp_path, monkeypatch, loss_type, beta, level):
    trainer = trl_trainer(tiny_model_dir, tmp_path, loss_type=loss_type, beta=beta, importance_sampling_level=level)
    inputs = make_inputs(trainer)
    seen = record_logprobs(trainer, monkeypatch)
    trl_loss = trainer.compute_loss(trainer.model, inputs)
    (logprobs,) = seen
    norms = BatchNorms(rows=ROWS, tokens=int(MASK.sum()), micro_batches=1,
                       max_completion_length=MAX_COMPLETION_LENGTH)
    ref = inputs["ref_per_token_logps"] if beta else None
    ours, metrics = policy_loss(logprobs, inputs["old_per_token_logps"], ref, ADVANTAGES, MASK, norms,
                                loss_type=loss_type, importance_sampling_level=level, epsilon_low=EPSILON,
                                epsilon_high=EPSILON, beta=beta)
    assert_same_loss_and_gradient(trl_loss, ours, logprobs)

    trl_metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    if beta:
        assert metrics["kl"] == pytest.approx(trl_metrics["kl"], rel=1e-6)
    else:
        assert "kl" not in metrics and "kl" not in trl_metrics
    assert metrics["clip/low"] > 0 and metrics["clip/high"] > 0  # the inputs exercise both sides of the clip
    if level == "token":
        for side in ("low", "high", "region"):
            assert metrics[f"clip/{side}"] == pytest.approx(trl_metrics[f"clip_ratio/{side}_mean"], rel=1e-6)
    else:  # row 2 clips high and row 3 low; TRL counts sequences, rftune counts their tokens
        lengths = MASK.sum(1).float()
        for side, row in (("low", 3), ("high", 2)):
            assert trl_metrics[f"clip_ratio/{side}_mean"] == pytest.approx(1 / ROWS)
            assert metrics[f"clip/{side}"] == pytest.approx((lengths[row] / lengths.sum()).item())


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_clip_higher_matches_trl(tiny_model_dir, tmp_path, monkeypatch, loss_type):
    trainer = trl_trainer(tiny_model_dir, tmp_path, loss_type=loss_type, beta=0.04, epsilon_high=0.28)
    inputs = make_inputs(trainer)
    seen = record_logprobs(trainer, monkeypatch)
    trl_loss = trainer.compute_loss(trainer.model, inputs)
    norms = BatchNorms(rows=ROWS, tokens=int(MASK.sum()), micro_batches=1,
                       max_completion_length=MAX_COMPLETION_LENGTH)
    ours, metrics = policy_loss(seen[0], inputs["old_per_token_logps"], inputs["ref_per_token_logps"], ADVANTAGES,
                                MASK, norms, loss_type=loss_type, epsilon_low=EPSILON, epsilon_high=0.28, beta=0.04)
    assert_same_loss_and_gradient(trl_loss, ours, seen[0])
    high = trainer._metrics["train"]["clip_ratio/high_mean"][-1]
    assert metrics["clip/high"] == pytest.approx(high, rel=1e-6)
    assert high == pytest.approx(2 / int(MASK.sum()))  # 1.35 and 1.65 clip; 1.246 no longer does


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradient_accumulation_micro_batches_match_trl(tiny_model_dir, tmp_path, monkeypatch, loss_type):
    """Two micro-batches of 2 rows with 10 and 7 active tokens: each one's share of the batch loss agrees."""
    trainer = trl_trainer(tiny_model_dir, tmp_path, rows=2, accumulation=2, loss_type=loss_type, beta=0.04)
    assert trainer.args.steps_per_generation == 2  # one generation batch (all 4 rows) per optimizer step
    inputs = make_inputs(trainer)  # num_items_in_batch spans the generation batch, as in TRL
    seen = record_logprobs(trainer, monkeypatch)
    norms = BatchNorms(rows=ROWS, tokens=int(MASK.sum()), micro_batches=2,
                       max_completion_length=MAX_COMPLETION_LENGTH)
    for rows in (slice(0, 2), slice(2, 4)):
        micro = rows_of(inputs, rows)
        trl_loss = trainer.compute_loss(trainer.model, micro)
        ours, _ = policy_loss(seen[-1], micro["old_per_token_logps"], micro["ref_per_token_logps"],
                              micro["advantages"], micro["completion_mask"], norms, loss_type=loss_type,
                              epsilon_low=EPSILON, epsilon_high=EPSILON, beta=0.04)
        assert_same_loss_and_gradient(trl_loss, ours, seen[-1])


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_ratio_weighted_kl_matches_trl_default_bias_correction(tiny_model_dir, tmp_path, monkeypatch, loss_type,
                                                               level):
    trainer = trl_trainer(tiny_model_dir, tmp_path, loss_type=loss_type, beta=0.04, importance_sampling_level=level,
                          use_bias_correction_kl=True)
    inputs = make_inputs(trainer)  # off-policy: ratios far from 1, so the weighting changes the value too
    seen = record_logprobs(trainer, monkeypatch)
    trl_loss = trainer.compute_loss(trainer.model, inputs)
    norms = BatchNorms(rows=ROWS, tokens=int(MASK.sum()), micro_batches=1,
                       max_completion_length=MAX_COMPLETION_LENGTH)
    ours, metrics = policy_loss(seen[0], inputs["old_per_token_logps"], inputs["ref_per_token_logps"], ADVANTAGES,
                                MASK, norms, loss_type=loss_type, importance_sampling_level=level,
                                epsilon_low=EPSILON, epsilon_high=EPSILON, beta=0.04, kl_ratio_weighted=True)
    assert_same_loss_and_gradient(trl_loss, ours, seen[0])
    assert metrics["kl"] == pytest.approx(trainer._metrics["train"]["kl"][-1], rel=1e-6)
    _, plain = policy_loss(seen[0], inputs["old_per_token_logps"], inputs["ref_per_token_logps"], ADVANTAGES, MASK,
                           norms, loss_type=loss_type, importance_sampling_level=level, epsilon_low=EPSILON,
                           epsilon_high=EPSILON, beta=0.04)
    assert abs(plain["kl"] - metrics["kl"]) > 1e-4  # the weighting is not a no-op on these inputs


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_trl_default_bias_corrected_kl_differs_only_in_gradient_on_policy(tiny_model_dir, tmp_path, monkeypatch,
                                                                          loss_type):
    """TRL's default KL is rho * k3. On-policy (no old log-probs, rho = 1) the loss values still agree, but d(rho)
    adds k3 * d(logprobs): TRL's gradient is rftune's plus that of beta * k3.detach() * logprobs."""
    trainer = trl_trainer(tiny_model_dir, tmp_path, loss_type=loss_type, beta=0.04, use_bias_correction_kl=True)
    inputs = make_inputs(trainer)
    del inputs["old_per_token_logps"]  # TRL then uses the current log-probs, detached
    seen = record_logprobs(trainer, monkeypatch)
    trl_loss = trainer.compute_loss(trainer.model, inputs)
    logprobs = seen[0]
    norms = BatchNorms(rows=ROWS, tokens=int(MASK.sum()), micro_batches=1,
                       max_completion_length=MAX_COMPLETION_LENGTH)
    ours, _ = policy_loss(logprobs, logprobs.detach(), inputs["ref_per_token_logps"], ADVANTAGES, MASK, norms,
                          loss_type=loss_type, epsilon_low=EPSILON, epsilon_high=EPSILON, beta=0.04)
    torch.testing.assert_close(ours, trl_loss, rtol=1e-6, atol=1e-7)
    extra = AGGREGATORS[loss_type](0.04 * k3_kl(logprobs, inputs["ref_per_token_logps"]).detach() * logprobs,
                                   MASK.float(), norms)
    (trl_grad,) = torch.autograd.grad(trl_loss, logprobs, retain_graph=True)
    (our_grad,) = torch.autograd.grad(ours + extra, logprobs)
    torch.testing.assert_close(our_grad, trl_grad, rtol=1e-6, atol=1e-7)
