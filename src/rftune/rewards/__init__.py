"""Reward functions: the calling convention, the registry of built-ins, and scoring of a batch."""

from rftune.rewards.base import (
                                 RewardFunction,
                                 RewardLogs,
                                 Scores,
                                 TrainerState,
                                 as_reward_function,
                                 completion_texts,
                                 score_batch,
                                 score_completions,
                                 unique_names,
                                 weighted_total,
)
from rftune.rewards.registry import builtin_rewards, register_reward, resolve_reward, reward_functions

__all__ = ["RewardFunction", "RewardLogs", "Scores", "TrainerState", "as_reward_function", "builtin_rewards",
           "completion_texts", "register_reward", "resolve_reward", "reward_functions", "score_batch",
           "score_completions", "unique_names", "weighted_total"]
