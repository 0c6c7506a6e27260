"""Rollout: prompts in, completions out (token ids, masks, sampling log-probs). One generation interface with its
backends (cpu-fast, hf, vllm) and multi-turn episodes over the `Env` protocol."""

from rftune.rollout import generation, vllm_backend  # noqa: F401  (importing them registers the backends)
