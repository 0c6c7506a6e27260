"""Wordle rewards with hand-derived values, in history mode and episode mode."""

import math

import pytest

from rftune.envs.wordle.env import WordleEnv
from rftune.envs.wordle.rewards import (
    wordle_feedback,
    wordle_format,
    wordle_guess_value,
    wordle_partial_credit,
    wordle_win,
)
from rftune.rewards.base import as_reward_function, score_completions
from rftune.rewards.registry import builtin_rewards

TINY = ["crane", "crate", "crave", "grace", "trace"]
THERE_AFTER_CRANE = {"secret": "there", "past_guess_history": [["CRANE", "C(x) R(-) A(x) N(x) E(✓)"]]}


def reply(word: str) -> str:
    return f"<think>some reasoning</think>\n<guess>{word}</guess>"


def test_rewards_are_registered_per_sample_builtins():
    known = builtin_rewards()
    for name in ("wordle_format", "wordle_feedback", "wordle_guess_value", "wordle_win", "wordle_partial_credit"):
        assert not as_reward_function(known[name]).batched
    assert known["wordle_format"] is wordle_format


@pytest.mark.parametrize("completion, expected", [
    (reply("CRANE"), 1.0),
    (reply("crane"), 1.0),
    (reply("CRAN"), 0.1),
    (reply("CR4NE"), 0.1),
    (reply("ZZZZZ"), 0.5),
    ("<guess>CRANE</guess>", 0.0),
    ("<think>a</think><guess>CRANE</guess> and more", 0.0),
    ("CRANE", 0.0),
])
def test_format_reward(completion, expected):
    assert wordle_format(None, completion, {"secret": "crane"}) == expected


def test_format_reward_options():
    assert wordle_format(None, reply("CRATE"), {}, allowed_words=["crane"]) == 0.5
    assert wordle_format(None, "hmm</think>\n<guess>CRANE</guess>", {}, prefilled_think=True) == 1.0


def test_feedback_reward_no_history_and_unparseable():
    assert wordle_feedback(None, reply("CRANE"), {"secret": "crane", "past_guess_history": []}) == 0.1
    assert wordle_feedback(None, reply("CRANE"), {"secret": "crane", "past_guess_history": "[]"}) == 0.1
    assert wordle_feedback(None, reply("CRAN"), THERE_AFTER_CRANE) == 0.0
    assert wordle_feedback(None, "no guess", THERE_AFTER_CRANE) == 0.0


def test_feedback_reward_mixing_all_rules():
    # CRORE after C(x) R(-) A(x) N(x) E(✓): C absent -0.5, R again at its "-" spot -0.2, O unknown +0.05,
    # R at a new spot +0.1, E kept at its ✓ spot +0.2  => -0.35
    assert wordle_feedback(None, reply("CRORE"), THERE_AFTER_CRANE) == pytest.approx(-0.35, abs=1e-12)
    # ROUTE: R new spot +0.1, O U T unknown 3 x 0.05, E ✓ +0.2 => 0.45
    assert wordle_feedback(None, reply("route"), THERE_AFTER_CRANE) == pytest.approx(0.45, abs=1e-12)


def test_feedback_reward_rule_order_with_repeated_letters():
    # EERIE against CRANE: E(x) E(x) R(-) I(x) E(✓). In THERE: T, H unknown +0.05 each; E at position 3 is
    # not its ✓ spot and E is not a "-" letter, but it was marked x => -0.5; R at a new spot +0.1; E ✓ +0.2.
    example = {"secret": "crane", "past_guess_history": "[['EERIE', 'E(x) E(x) R(-) I(x) E(✓)']]"}
    assert wordle_feedback(None, reply("THERE"), example) == pytest.approx(-0.1, abs=1e-12)


def test_guess_value_by_hand_on_a_tiny_list():
    empty = {"secret": "crate", "past_guess_history": []}
    # crane splits {crane, crate, crave, grace, trace} into groups of 1, 2, 2: (log2 5 - 0.8) / log2 5
    expected = (math.log2(5) - 0.8) / math.log2(5)
    assert wordle_guess_value(None, reply("CRANE"), empty, allowed_words=TINY) == pytest.approx(expected, abs=1e-12)
    after = {"secret": "crate", "past_guess_history": [["CRANE", "C(✓) R(✓) A(✓) N(x) E(✓)"]]}  # C = {crate, crave}
    assert wordle_guess_value(None, reply("TRACE"), after, allowed_words=TINY) == pytest.approx(1.0, abs=1e-12)
    assert wordle_guess_value(None, reply("GRACE"), after, allowed_words=TINY) == 0.0  # same feedback for both


def test_guess_value_zero_cases():
    tiny = {"secret": "crate", "past_guess_history": []}
    assert wordle_guess_value(None, reply("SLATE"), tiny, allowed_words=TINY) == 0.0  # not allowed here
    assert wordle_guess_value(None, "no guess", tiny, allowed_words=TINY) == 0.0
    solved = {"secret": "grace", "past_guess_history": [["TRACE", "T(x) R(✓) A(✓) C(✓) E(✓)"]]}  # C = {grace}
    assert wordle_guess_value(None, reply("GRACE"), solved, allowed_words=TINY) == 0.0


def test_guess_value_on_the_official_list_orders_guesses_sensibly():
    first = {"secret": "crane", "past_guess_history": []}
    good = wordle_guess_value(None, reply("SOARE"), first)
    poor = wordle_guess_value(None, reply("FUZZY"), first)
    assert 0.0 < poor < good < 1.0


def test_win_and_partial_credit():
    abbey = {"secret": "ABBEY", "past_guess_history": []}
    assert wordle_win(None, reply("abbey"), abbey) == 1.0
    assert wordle_win(None, reply("babes"), abbey) == 0.0
    assert wordle_partial_credit(None, reply("babes"), abbey) == pytest.approx(0.2 * 2 + 0.1 * 2, abs=1e-12)
    assert wordle_partial_credit(None, reply("abbey"), abbey) == pytest.approx(1.0, abs=1e-12)
    assert wordle_partial_credit(None, reply("zzzzz"), abbey) == 0.0
    with pytest.raises(ValueError, match="secret"):
        wordle_win(None, reply("abbey"), {"past_guess_history": []})


def play_episode(secret: str, replies: list[str]) -> dict:
    env = WordleEnv()
    env.reset({"secret": secret})
    turns = [{"completion": text, "info": env.step(text).info} for text in replies]
    return {"secret": secret, "episode": {"turns": turns}}


def test_episode_mode_averages_turns():
    # THERE: CRANE (feedback 0.1, partial C(x) R(-) A(x) N(x) E(✓) = 0.3), CRORE (feedback -0.35,
    # partial C(x) R(x) O(x) R(✓) E(✓) = 0.4), then an unparseable reply (format 0, everything 0).
    example = play_episode("there", [reply("CRANE"), reply("CRORE"), "I give up"])
    assert wordle_format(None, "", example) == pytest.approx(2 / 3, abs=1e-12)
    assert wordle_feedback(None, "", example) == pytest.approx((0.1 - 0.35) / 3, abs=1e-12)
    assert wordle_partial_credit(None, "", example) == pytest.approx(0.7 / 3, abs=1e-12)
    assert wordle_win(None, "", example) == 0.0
    history_mode = [wordle_guess_value(None, t["completion"], t["info"]) for t in example["episode"]["turns"]]
    assert wordle_guess_value(None, "", example) == pytest.approx(sum(history_mode) / 3, abs=1e-12)
    assert history_mode[0] > 0 and history_mode[2] == 0.0


def test_episode_mode_win_when_any_turn_won():
    example = play_episode("there", [reply("CRANE"), reply("THERE")])
    assert wordle_win(None, "", example) == 1.0
    assert wordle_partial_credit(None, "", example) == pytest.approx((0.3 + 1.0) / 2, abs=1e-12)


def test_empty_episode_is_an_error():
    with pytest.raises(ValueError, match="non-empty 'turns'"):
        wordle_format(None, "", {"episode": {"turns": []}})


def test_rewards_score_through_the_generic_scorer():
    functions = [as_reward_function(builtin_rewards()[n]) for n in ("wordle_format", "wordle_win")]
    rows = [{"secret": "crane", "past_guess_history": []}] * 2
    scores, failures = score_completions(functions, [None, None], [reply("CRANE"), reply("CRAN")], rows)
    assert scores.tolist() == [[1.0, 1.0], [pytest.approx(0.1), 0.0]]
    assert failures == {"wordle_format": 0, "wordle_win": 0}


def test_course_weights_pay_for_not_guessing_and_a_feedback_weight_of_0_3_does_not():
    # After CRANE → C(x) R(-) A(x) N(x) E(✓): a reply whose "guess" has 4 letters against the valid NACRE, which
    # reuses N, A, C (−0.5 each), moves R from 2nd to 4th (+0.1) and keeps E 5th (+0.2): feedback −1.2.
    # (The recipe's guess constraint makes the 4-letter reply unwritable instead: tests/test_constraints.py.)
    no_guess, reuse = reply("THRE"), reply("NACRE")
    parts = {name: (f(None, no_guess, THERE_AFTER_CRANE), f(None, reuse, THERE_AFTER_CRANE))
             for name, f in (("wordle_format", wordle_format), ("wordle_feedback", wordle_feedback),
                             ("wordle_guess_value", wordle_guess_value))}
    assert parts["wordle_format"] == (pytest.approx(0.1), 1.0)
    assert parts["wordle_feedback"][0] == 0.0 and parts["wordle_feedback"][1] == pytest.approx(-1.2)

    def total(weights: dict, which: int) -> float:
        return sum(weights[name] * values[which] for name, values in parts.items())

    course = {"wordle_format": 1.0, "wordle_feedback": 1.0, "wordle_guess_value": 1.0}
    assert total(course, 0) > total(course, 1)  # 0.1 > 1.0 − 1.2 + value (NACRE's value is small): stop guessing
    recipe = {**course, "wordle_feedback": 0.3}
    assert total(recipe, 1) > total(recipe, 0)  # every valid guess beats no guess
    assert recipe["wordle_format"] + recipe["wordle_feedback"] * -2.5 > 0.1  # even the worst valid guess
