"""Environments for multi-turn rollouts: the `Env` protocol and its implementations (see `rftune.envs.wordle`)."""

from rftune.envs.base import Env, StepResult

__all__ = ["Env", "StepResult"]
