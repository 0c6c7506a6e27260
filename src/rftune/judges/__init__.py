"""LLM judges: a protocol, an OpenAI-compatible client, an in-process model, a reply cache and score parsing.

Rewards get a judge with `make_judge(spec)` (memoised per spec) or, from the trainer, the judge it built for them
(`build_judge`); each judge counts its work in ``judge.stats``. See `rftune.judges.factory` for the spec keys.
"""

from rftune.judges.base import JUDGE_KEYS, Judge, JudgeStats, judge_counters
from rftune.judges.factory import build_judge, clear_judges, make_judge, resolve_judge
from rftune.judges.parsing import parse_choice, parse_score

__all__ = ["JUDGE_KEYS", "Judge", "JudgeStats", "build_judge", "clear_judges", "judge_counters", "make_judge",
           "parse_choice", "parse_score", "resolve_judge"]
