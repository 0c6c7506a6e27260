"""The sandbox and judges belong to whoever scores: `RewardResources` builds them and passes them to the rewards,
and `score_batch` returns the counts they made with the rewards (no counter is shared through a global)."""

from rftune import sandbox
from rftune.judges import make_judge
from rftune.rewards import as_reward_function, score_batch
from rftune.rewards.builtin import exact_answer
from rftune.rewards.code import code_passes, code_tests
from rftune.rewards.judge import judge_score, quiz
from rftune.rewards.resources import RewardResources
from rftune.runtime.counters import Counters, add_counts, counters_of

SPEC = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": None}
ADD = "```python\ndef add(a, b):\n    return a + b\n```"


class OneReplyJudge:
    """A judge of the user's (the `Judge` protocol, no counters of its own) that always says the same."""

    cache_identity = "one-reply"

    def __init__(self, reply):
        self.reply = reply

    def complete(self, messages):
        return self.reply

    def complete_many(self, batch):
        return [self.reply for _ in batch]


def test_one_sandbox_for_the_code_rewards_and_one_judge_per_spec():
    resources = RewardResources({"workers": 2, "timeout_s": 5.0})
    mine = OneReplyJudge("<score>3</score>")
    tests, passes, score, quizzed, other, exact, given = resources.bind([
        as_reward_function(code_tests), as_reward_function(code_passes),
        as_reward_function(judge_score, kwargs={"judge": SPEC}), as_reward_function(quiz, kwargs={"judge": SPEC}),
        as_reward_function(judge_score, kwargs={"judge": {**SPEC, "timeout": 5}}), as_reward_function(exact_answer),
        as_reward_function(judge_score, kwargs={"judge": mine})])
    assert tests.kwargs["sandbox"] is passes.kwargs["sandbox"] is resources.sandbox
    assert (resources.sandbox.limits, resources.sandbox.workers) == (sandbox.Limits(timeout_s=5.0), 2)
    assert score.kwargs["judge"] is quizzed.kwargs["judge"] is not other.kwargs["judge"]
    assert score.kwargs["judge"] is not make_judge(SPEC)  # the owner's own, not the process's memoised one
    assert exact.kwargs == {} and given.kwargs["judge"] is mine


def test_score_batch_returns_the_counts_made_while_scoring():
    resources = RewardResources({"workers": 1})
    functions = resources.bind([as_reward_function(code_tests), as_reward_function(code_passes)])
    rows = [{"tests": "assert add(1, 2) == 3\n"}]
    quiet = dict.fromkeys(sandbox.SANDBOX_KEYS, 0)
    first = score_batch(functions, ["p"], [ADD], rows)
    assert first.rewards_per_func.tolist() == [[1.0, 1.0]]
    assert first.stats == {**quiet, "sandbox/runs": 1, "sandbox/passed": 1, "sandbox/cache_hits": 1}  # 2nd: cache
    assert resources.sandbox.stats.snapshot() == quiet  # taken by scoring
    assert score_batch(functions, ["p"], [ADD], rows).stats == {**quiet, "sandbox/cache_hits": 2}


def test_a_users_judge_gets_counters_and_its_counts_come_back_with_the_rewards():
    judge = OneReplyJudge("I would rather not say.")
    functions = [as_reward_function(judge_score, kwargs={"judge": judge})]
    scores = score_batch(functions, ["Summarise."] * 3, ["a", "b", "c"], [{}] * 3)
    assert scores.rewards_per_func.isnan().all() and scores.stats["judge/parse_failures"] == 3
    assert judge.stats.snapshot()["judge/parse_failures"] == 0


def test_counters_add_up_and_attach_to_an_owner_once():
    owner = OneReplyJudge("x")
    stats = counters_of(owner, ("a", "b"))
    assert isinstance(stats, Counters) and counters_of(owner, ("a", "b")) is stats
    stats.add("a", 2)
    assert add_counts([stats.snapshot_and_reset(), {"a": 1, "c": 4}]) == {"a": 3, "b": 0, "c": 4}
