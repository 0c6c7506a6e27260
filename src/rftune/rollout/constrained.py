"""Sampling settings under a config's ``generation.constraint``, for every caller that generates for a model it
loaded itself (evaluation players, Wordle games): the constraint compiled for that model's tokenizer."""

from __future__ import annotations

import dataclasses

from rftune.config import Config
from rftune.constraints import compile_constraint, constraint_lark
from rftune.rollout.generation import SamplingParams, eos_token_ids


def constrained(params: SamplingParams, config: Config, model, tokenizer) -> SamplingParams:
    """`params` under the config's ``generation.constraint`` compiled for this model's tokenizer (None: as is)."""
    constraint = compile_constraint(config.generation.constraint, tokenizer, eos_token_ids(tokenizer, model),
                                    config.base_dir)
    return dataclasses.replace(params, constraint=constraint)


def constraint_description(config: Config) -> str | None:
    """What the replies were constrained to, for reports (None: unconstrained)."""
    spec = config.generation.constraint
    return None if spec is None else constraint_lark(spec, config.base_dir)[1]
