"""The GRPO policy loss: ratios, clipped surrogate, k3 KL, and loss aggregation variants.

Shapes: R = rows in the micro-batch, T = completion positions (right-padded). ``completion_mask`` [R, T] is 1 for
tokens the policy produced (up to and including EOS; 0 for padding and for environment tokens in multi-turn
episodes).

    ratio      rho_{i,t} = exp(logprobs - old_logprobs)                          (token level)
               s_i       = exp(mean_t(logprobs - old_logprobs)), per sequence     (GSPO, "sequence" level)
    surrogate  L_{i,t} = -min(rho * A_i, clip(rho, 1 - eps_low, 1 + eps_high) * A_i)
    KL (k3)    KL_{i,t} = exp(ref - logprobs) - (ref - logprobs) - 1 >= 0, added as beta * KL
               (``kl_ratio_weighted``: beta * rho * KL, the ratio with its gradient — DeepSeek-V3.2's unbiased
               reverse-KL gradient, TRL 1.16's default ``use_bias_correction_kl``; it changes the gradient even
               on-policy, where rho = 1)

Aggregation (``loss_type``) — each aggregator returns this micro-batch's share of the *whole* rollout batch's
loss, so that summing gradients over micro-batches (gradient accumulation) gives exactly the formula:
    grpo     mean over sequences of (sum_t m*L / sum_t m)                     (DeepSeekMath)
    bnpo     sum m*L / sum m within the micro-batch (under torchrun: the micro-batch of every rank together),
             averaged over micro-batches
    dapo     sum m*L / (active tokens in the whole rollout batch)             (DAPO token mean)
    dr_grpo  sum m*L / (B * max_completion_length)                            (Dr. GRPO)
With a single micro-batch bnpo and dapo coincide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rftune.registry import Registry

RATIOS = Registry("algorithm.importance_sampling_level")  # name -> ratio: logprobs, old_logprobs, mask [R, T] -> [R, T]
AGGREGATORS = Registry("algorithm.loss_type")  # name -> loss: per_token, mask [R, T], BatchNorms -> []


@dataclass(frozen=True)
class BatchNorms:
    """Sizes of the whole rollout batch, needed to make micro-batch losses add up to the batch loss."""

    rows: int  # B: completions in the rollout batch
    tokens: int  # active completion tokens in the rollout batch
    micro_batches: int  # number of micro-batches the batch is split into
    max_completion_length: int  # the configured max_new_tokens (dr_grpo's constant)
    micro_batch_tokens: int | None = None  # active tokens of this micro-batch over all ranks (None: this one's)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where mask == 1 (over `dim`, or everything); empty rows give 0."""
    total = (values * mask).sum() if dim is None else (values * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1)


@RATIOS.register("token")
def token_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """rho_{i,t} = exp(logpi - logpi_old). [R, T] -> [R, T]"""
    del mask  # token-level ratios need no mask; the signature matches sequence_ratio
    return torch.exp(logprobs - old_logprobs)


@RATIOS.register("sequence")
def sequence_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO: s_i = exp(mean_t(logpi - logpi_old)) over the sequence's tokens, broadcast over tokens. [R, T] -> [R, T]"""
    log_ratio = masked_mean(logprobs - old_logprobs, mask, dim=1)  # [R]
    return torch.exp(log_ratio).unsqueeze(1).expand_as(logprobs)  # [R, T]


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, epsilon_low: float,
                      epsilon_high: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss -min(rho*A, clip(rho)*A) [R, T] and boolean clip masks (low/high/region) [R, T]."""
    adv = advantages.unsqueeze(1)  # [R, 1]
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)  # [R, T]
    per_token_loss = -torch.min(ratio * adv, clipped * adv)  # [R, T]
    low = (ratio < 1 - epsilon_low) & (adv < 0)  # [R, T] clipped from below (gradient zeroed)
    high = (ratio > 1 + epsilon_high) & (adv > 0)  # [R, T] clipped from above (gradient zeroed)
    return per_token_loss, {"low": low, "high": high, "region": low | high}


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Unbiased, non-negative KL estimate per token: exp(ref - logpi) - (ref - logpi) - 1. [R, T]"""
    delta = ref_logprobs - logprobs  # [R, T]
    return torch.exp(delta) - delta - 1


@AGGREGATORS.register("grpo")
def aggregate_grpo(per_token: torch.Tensor, mask: torch.Tensor, norms: BatchNorms) -> torch.Tensor:
    return masked_mean(per_token, mask, dim=1).sum() / norms.rows


@AGGREGATORS.register("bnpo")
def aggregate_bnpo(per_token: torch.Tensor, mask: torch.Tensor, norms: BatchNorms) -> torch.Tensor:
    if norms.micro_batch_tokens is None:
        return masked_mean(per_token, mask) / norms.micro_batches
    return (per_token * mask).sum() / max(norms.micro_batch_tokens, 1) / norms.micro_batches


@AGGREGATORS.register("dapo")
def aggregate_dapo(per_token: torch.Tensor, mask: torch.Tensor, norms: BatchNorms) -> torch.Tensor:
    return (per_token * mask).sum() / max(norms.tokens, 1)


@AGGREGATORS.register("dr_grpo")
def aggregate_dr_grpo(per_token: torch.Tensor, mask: torch.Tensor, norms: BatchNorms) -> torch.Tensor:
    return (per_token * mask).sum() / (norms.rows * norms.max_completion_length)


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor | None,
                advantages: torch.Tensor, completion_mask: torch.Tensor, norms: BatchNorms, *,
                loss_type: str = "grpo", importance_sampling_level: str = "token", epsilon_low: float = 0.2,
                epsilon_high: float = 0.2, beta: float = 0.0,
                kl_ratio_weighted: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO loss for one micro-batch (its share of the rollout batch's loss) and its metrics.

    logprobs, old_logprobs, ref_logprobs, completion_mask: [R, T]; advantages: [R]. ``ref_logprobs`` may be None
    only when beta == 0. Metrics are micro-batch token means, to be averaged by the caller.
    """
    mask = completion_mask.to(logprobs.dtype)  # [R, T]
    ratio = RATIOS[importance_sampling_level](logprobs, old_logprobs, mask)  # [R, T]
    per_token_loss, clips = clipped_surrogate(ratio, advantages, epsilon_low, epsilon_high)  # [R, T]
    metrics = {f"clip/{name}": masked_mean(flag.to(mask.dtype), mask).item() for name, flag in clips.items()}
    if beta != 0.0:
        kl = k3_kl(logprobs, ref_logprobs)  # [R, T]
        if kl_ratio_weighted:
            kl = kl * ratio
        per_token_loss = per_token_loss + beta * kl
        metrics["kl"] = masked_mean(kl.detach(), mask).item()
    loss = AGGREGATORS[loss_type](per_token_loss, mask, norms)
    return loss, metrics
