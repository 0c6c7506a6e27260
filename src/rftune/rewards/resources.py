"""What reward functions work with besides their inputs: the sandbox that runs programs and the LLM judges.

Whoever scores owns them — the trainer for a run, `rftune eval` for an evaluation — and passes them down as keyword
arguments: a reward marked ``uses_sandbox`` (the code rewards) gets ``sandbox``, built once from the config's
``sandbox`` section when first needed; a reward marked ``uses_judge`` (``quiz``, ``judge_score``), or any reward
given a ``judge`` option, gets ``judge``: the judge built from that spec (a mapping, or none for the local
default), one per distinct spec. A judge object given in the options is passed as it is. Each sandbox and judge
counts its work in its ``stats``, which scoring returns with the rewards (`rftune.rewards.base.score_batch`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from rftune.rewards.base import RewardFunction


class RewardResources:
    """The sandbox and judges of one owner, built on first need; `bind` hands them to reward functions."""

    def __init__(self, sandbox_settings: dict[str, Any] | None = None) -> None:
        self.sandbox_settings = dict(sandbox_settings or {})
        self.sandbox = None
        self.judges: dict[str, Any] = {}  # judge spec as JSON -> judge

    def bind(self, functions: Sequence[RewardFunction]) -> list[RewardFunction]:
        """The functions, each with the sandbox or judge it uses among its keyword arguments."""
        return [dataclasses.replace(rf, kwargs=self._kwargs(rf)) for rf in functions]

    def _kwargs(self, rf: RewardFunction) -> dict[str, Any]:
        kwargs = dict(rf.kwargs)
        if getattr(rf.fn, "uses_sandbox", False):
            kwargs["sandbox"] = self._sandbox()
        if getattr(rf.fn, "uses_judge", False) or "judge" in kwargs:
            kwargs["judge"] = self._judge(kwargs.get("judge"))
        return kwargs

    def _sandbox(self):
        from rftune import sandbox

        if self.sandbox is None:  # says once what the sandbox isolates here; may refuse to run
            self.sandbox = sandbox.configure(**self.sandbox_settings)
        return self.sandbox

    def _judge(self, spec):
        from rftune.judges import build_judge

        if spec is not None and not isinstance(spec, dict):
            return spec  # a judge object (library use)
        key = json.dumps(spec or {}, sort_keys=True)
        if key not in self.judges:
            self.judges[key] = build_judge(spec)
        return self.judges[key]
