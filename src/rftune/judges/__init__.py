"""LLM judges: a protocol, an OpenAI-compatible client, an in-process model, a reply cache and score parsing.

Rewards get a judge with `make_judge(spec)` (memoised per spec); the trainer reads the judge counters with
``JUDGE_STATS.snapshot_and_reset()``. See `rftune.judges.factory` for the spec keys.
"""

from rftune.judges.base import JUDGE_STATS, Judge, JudgeStats
from rftune.judges.factory import clear_judges, make_judge, resolve_judge
from rftune.judges.parsing import parse_choice, parse_score

__all__ = ["JUDGE_STATS", "Judge", "JudgeStats", "clear_judges", "make_judge", "parse_choice", "parse_score",
           "resolve_judge"]
