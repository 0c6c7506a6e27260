"""WordleEnv: reset, step, the info of each turn, invalid replies and starting mid-game."""

import pytest

from rftune.envs.base import Env, StepResult
from rftune.envs.wordle.env import WordleEnv
from rftune.envs.wordle.prompts import SYSTEM_PROMPT


def reply(word: str) -> str:
    return f"<think>thinking</think>\n<guess>{word}</guess>"


def test_env_satisfies_the_protocol():
    env = WordleEnv()
    assert isinstance(env, Env) and env.max_turns == 6


def test_reset_gives_system_and_first_user_turn():
    messages = WordleEnv().reset({"secret": "crane"})
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    assert messages[1]["content"] == "Make your first 5-letter word guess."


def test_steps_give_feedback_and_info_until_won():
    env = WordleEnv()
    env.reset({"secret": "abbey"})
    first = env.step(reply("babes"))
    assert isinstance(first, StepResult) and not first.done
    assert first.info == {"secret": "ABBEY", "past_guess_history": [], "guess": "BABES",
                          "feedback": "B(-) A(-) B(✓) E(✓) S(x)", "valid": True, "won": False, "turn": 1,
                          "error": None}
    assert first.messages == [{"role": "user", "content": "Make a new 5-letter word guess.\n\nHere is the feedback "
                               "on your previous guesses:\nGuess 1: BABES → Feedback: B(-) A(-) B(✓) E(✓) S(x)"}]
    last = env.step(reply("Abbey"))
    assert last.done and last.messages == []
    assert last.info["won"] and last.info["turn"] == 2
    assert last.info["past_guess_history"] == [["BABES", "B(-) A(-) B(✓) E(✓) S(x)"]]
    with pytest.raises(ValueError, match="over"):
        env.step(reply("abbey"))


def test_invalid_replies_use_a_turn_and_the_next_turn_says_why():
    env = WordleEnv()
    env.reset({"secret": "crane"})
    result = env.step("no tags at all")
    assert result.info["guess"] is None and not result.info["valid"] and result.info["feedback"] is None
    assert "no guess found" in result.info["error"]
    assert result.messages[0]["content"].startswith("Your last reply was not a valid guess")
    assert "5 guesses left" in result.messages[0]["content"]
    result = env.step(reply("zzzzz"))
    assert result.info["guess"] == "ZZZZZ" and "not in the list" in result.info["error"]
    assert result.info["turn"] == 2


def test_episode_ends_after_six_guesses():
    env = WordleEnv()
    env.reset({"secret": "crane"})
    results = [env.step(reply("slate")) for _ in range(6)]
    assert [r.done for r in results] == [False] * 5 + [True]
    assert not results[-1].info["won"] and results[-1].messages == []
    assert len(results[-1].info["past_guess_history"]) == 5


def test_reset_can_start_from_a_history_mode_row():
    env = WordleEnv()
    messages = env.reset({"secret": "CRANE", "past_guess_history": '[["SLATE", "S(x) L(x) A(✓) T(x) E(✓)"]]'})
    assert "Guess 1: SLATE → Feedback: S(x) L(x) A(✓) T(x) E(✓)" in messages[1]["content"]
    result = env.step(reply("crane"))
    assert result.done and result.info["turn"] == 2 and result.info["won"]


def test_reset_rejects_bad_examples():
    env = WordleEnv()
    with pytest.raises(ValueError, match="needs a 'secret'"):
        env.reset({"answer": "crane"})
    with pytest.raises(ValueError, match="secret must be 5 letters.*'cranes'"):
        env.reset({"secret": "cranes"})
    with pytest.raises(ValueError, match="against secret CRANE it is S\\(x\\) L\\(x\\) A\\(✓\\) T\\(x\\) E\\(✓\\)"):
        env.reset({"secret": "crane", "past_guess_history": [["slate", "xxxxx"]]})
    with pytest.raises(ValueError, match="before reset"):
        WordleEnv().step(reply("crane"))


def test_custom_word_list_and_turn_limit():
    env = WordleEnv(allowed=["crane", "slate"], max_turns=2)
    env.reset({"secret": "slate"})
    assert not env.step(reply("trace")).info["valid"]  # allowed officially, but not in this list
    assert env.step(reply("crane")).done
