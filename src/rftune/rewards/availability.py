"""Never a silent 0: telling a step whose rewards are missing from one whose rewards are low.

A step's rewards are *unavailable* when a reward function had no value for any completion (it returned None, or
every call failed under ``rewards.on_error: skip`` or ran past ``rewards.timeout``), or when more than half of the
judgments asked of an LLM judge failed or could not be read. Such a step would otherwise log a mean of 0 and take
an update with zero (or misleading) advantages. `UnavailableSteps` applies ``rewards.on_unavailable``: ``stop``
skips the step's update and stops the run after ``rewards.max_unavailable_steps`` such steps in a row,
``skip_step`` skips its update, ``continue`` trains on it; every such step is announced.
"""

from __future__ import annotations

import sys
from typing import Sequence

from rftune.errors import RewardError


def unavailable_reasons(names: Sequence[str], values_per_function: Sequence[int], completions: int,
                        judgments: int, failed_judgments: int) -> list[str]:
    """Why a step's rewards are unavailable (empty: they are usable). ``values_per_function``: how many of the
    `completions` each function gave a value; ``failed_judgments`` of ``judgments``: failed or unreadable."""
    reasons = [f"reward function {name!r} had no value for any of the {completions} completions"
               for name, count in zip(names, values_per_function) if count == 0]
    if judgments and 2 * failed_judgments > judgments:
        reasons.append(f"{failed_judgments} of {judgments} judgments failed or could not be read")
    return reasons


class UnavailableSteps:
    """``rewards.on_unavailable`` over a run: counts unavailable steps in a row, says what happens to each."""

    def __init__(self, policy: str, limit: int):
        self.policy, self.limit = policy, limit
        self.streak = 0

    def skip_update(self, reasons: list[str]) -> bool:
        """Record a step's reasons (empty: available); whether its update is to be skipped."""
        self.streak = self.streak + 1 if reasons else 0
        return bool(reasons) and self.policy != "continue"

    def announce(self, step: int, reasons: list[str], speak: bool = True) -> None:
        """A warning line for an unavailable step, or under ``stop`` at the limit a `RewardError` ending the run."""
        what = "; ".join(reasons)
        if self.policy == "stop" and self.streak >= self.limit:
            raise RewardError(f"step {step}: rewards unavailable for {self.streak} steps in a row ({what}); stopping "
                              f"(rewards.on_unavailable=stop, rewards.max_unavailable_steps={self.limit}). The "
                              "checkpoints and metrics so far are kept.")
        action = ("trained on anyway (rewards.on_unavailable=continue)" if self.policy == "continue"
                  else f"its update skipped (rewards.on_unavailable={self.policy})")
        if speak:
            print(f"warning: step {step}: rewards unavailable: {what}; {action}", file=sys.stderr, flush=True)
