"""Group-relative advantages.

A batch holds P prompts with G = ``num_generations`` completions each, laid out group by group
(rows p*G .. p*G+G-1 belong to prompt p). For rewards R:

    A_i = (R_i - mean_group(R)) / (std(R) + eps)

``scale_rewards`` picks the std: ``group`` (std within the prompt's group, as in DeepSeekMath), ``batch`` (std
over the whole batch, as in Dr. GRPO's appendix / TRL's "batch"), or ``none`` (no division — Dr. GRPO).
The std is the *population* std (divide by G, not G-1) — the paper's formula; TRL uses Bessel's correction,
which makes its advantages smaller by sqrt((G-1)/G). eps defaults to 1e-4.

A group whose rewards are all equal has zero advantages: it contributes no gradient. Its share is reported as
``frac_zero_std``; `zero_std_groups` tells dynamic sampling which groups to drop.
"""

from __future__ import annotations

import torch

from rftune.registry import Registry

SCALERS = Registry("algorithm.scale_rewards")  # name -> std of the advantages' denominator: [P, G], eps -> [P, 1] or []

def group_view(values: torch.Tensor, num_generations: int) -> torch.Tensor:
    """[B] -> [P, G]; raises when B is not a multiple of G."""
    if values.numel() % num_generations:
        raise ValueError(f"{values.numel()} rewards is not a multiple of num_generations={num_generations}")
    return values.view(-1, num_generations)


def zero_std_groups(rewards: torch.Tensor, num_generations: int, tol: float = 1e-6) -> torch.Tensor:
    """[B] -> [P] bool: True for groups whose rewards are all equal (within `tol`)."""
    groups = group_view(rewards, num_generations)  # [P, G]
    return (groups.max(dim=1).values - groups.min(dim=1).values) <= tol  # [P]


@SCALERS.register("group")
def scale_by_group(groups: torch.Tensor, eps: float) -> torch.Tensor:
    """Population std of each group, plus eps. [P, G] -> [P, 1]"""
    return groups.std(dim=1, keepdim=True, unbiased=False) + eps


@SCALERS.register("batch")
def scale_by_batch(groups: torch.Tensor, eps: float) -> torch.Tensor:
    """Population std over the whole batch, plus eps. [P, G] -> []"""
    return groups.std(unbiased=False) + eps


@SCALERS.register("none")
def no_scale(groups: torch.Tensor, eps: float) -> torch.Tensor:
    """Dr. GRPO: no division. [P, G] -> []"""
    return torch.ones((), device=groups.device)


def compute_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group",
                       eps: float = 1e-4) -> tuple[torch.Tensor, dict[str, float]]:
    """Advantages [B] for rewards [B]; returns (advantages, metrics)."""
    if scale_rewards not in SCALERS:
        raise ValueError(f"scale_rewards must be one of {tuple(SCALERS)}, got {scale_rewards!r}")
    groups = group_view(rewards.float(), num_generations)  # [P, G]
    centered = groups - groups.mean(dim=1, keepdim=True)  # [P, G]
    advantages = (centered / SCALERS[scale_rewards](groups, eps)).reshape(-1)  # [B]
    metrics = {
        "advantage/abs_mean": advantages.abs().mean().item(),
        "advantage/std": advantages.std(unbiased=False).item(),
        "frac_zero_std": zero_std_groups(rewards, num_generations).float().mean().item(),
    }
    return advantages, metrics
