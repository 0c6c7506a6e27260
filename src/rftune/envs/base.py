"""The environment interface for multi-turn rollouts.

An environment turns one dataset row into a conversation: `reset` gives the opening chat messages, then the
trainer alternates between generating the model's reply and calling `step` with it, appending the messages
the environment answers with, until `done`. Environments are plain objects that satisfy the `Env` protocol;
there is no base class to inherit from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class StepResult:
    """What an environment answers to one model reply.

    ``messages`` are appended to the conversation after the model's turn (e.g. a user turn with feedback); empty
    when the episode is over. ``info`` carries whatever rewards and metrics need to know about this turn.
    """

    messages: list[dict]
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Env(Protocol):
    """A multi-turn task: `reset` opens an episode for one example, `step` consumes each model reply."""

    max_turns: int

    def reset(self, example: dict) -> list[dict]:
        """Start an episode for `example`; return the initial chat messages."""
        ...

    def step(self, completion: str) -> StepResult:
        """Take the model's reply for the current turn; return the environment's answer."""
        ...
