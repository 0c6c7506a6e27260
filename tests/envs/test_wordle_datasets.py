"""History-mode rows and SFT traces from seeded reference games."""

import json

import pytest

from rftune.envs.wordle.datasets import history_rows, reference_games, sft_traces, write_jsonl
from rftune.envs.wordle.game import feedback, parse_history
from rftune.envs.wordle.prompts import wordle_messages
from rftune.envs.wordle.rewards import wordle_feedback, wordle_format
from rftune.envs.wordle.solver import InfoGainSolver


@pytest.fixture(scope="module")
def rows():
    return history_rows(6, seed=11)


@pytest.fixture(scope="module")
def traces():
    return sft_traces(6, seed=5)


def test_history_rows_are_deterministic(rows):
    assert history_rows(6, seed=11) == rows
    assert history_rows(6, seed=12) != rows


def test_history_rows_are_consistent_turn_states(rows):
    assert len(rows) >= 6
    for row in rows:
        assert set(row) == {"secret", "past_guess_history", "prompt"}
        history = parse_history(row["past_guess_history"])
        assert all(feedback(guess, row["secret"]) == pattern for guess, pattern in history)
        assert all(pattern != "✓✓✓✓✓" for _, pattern in history)  # a row is a state before a guess
        assert row["prompt"] == wordle_messages(history)
    assert sum(1 for row in rows if not row["past_guess_history"]) == 6  # one opening state per game


def test_reference_games_mix_players_and_openings():
    games = reference_games(12, seed=1, solver_share=0.5, max_openings=2)
    assert {g.by_solver for g in games} == {True, False}
    assert {g.openings for g in games} <= {0, 1, 2} and len({g.openings for g in games}) > 1
    with pytest.raises(ValueError, match="solver_share"):
        reference_games(1, solver_share=1.5)


def test_sft_traces_are_well_formed_and_score_full_format(traces):
    assert traces and sft_traces(6, seed=5) == traces
    for row in traces:
        system, user, assistant = row["messages"]
        assert (system["role"], user["role"], assistant["role"]) == ("system", "user", "assistant")
        assert wordle_format(None, assistant["content"], {}) == 1.0
        assert "Words that fit: " in assistant["content"]
    keys = [json.dumps(row, ensure_ascii=False) for row in traces]
    assert len(set(keys)) == len(keys)


def test_sft_traces_use_every_piece_of_feedback(traces):
    # Hard-mode traces keep the ✓ letters, move the - letters and never reuse an x letter, so every letter of a
    # guess after the first scores at least +0.05 in the feedback reward (and the opening gets its 0.1).
    later = 0
    for row in traces:
        user, assistant = row["messages"][1]["content"], row["messages"][2]["content"]
        history = [line.split(": ", 1)[1].split(" → Feedback: ") for line in user.splitlines()
                   if line.startswith("Guess ")]  # [guess, tiles] pairs, as the reward reads them
        score = wordle_feedback(None, assistant, {"past_guess_history": history})
        assert score >= (0.25 if history else 0.1), (history, assistant)
        later += bool(history)
    assert later > len(traces) // 2


def test_sft_trace_reasoning_matches_its_position(traces):
    for row in traces:
        user, assistant = row["messages"][1]["content"], row["messages"][2]["content"]
        if "first 5-letter word guess" in user:
            assert "No feedback yet" in assistant and "(2315 in all)" in assistant
        else:
            assert "No feedback yet" not in assistant


def test_write_jsonl_round_trips(tmp_path, rows):
    chosen = [row for row in rows if row["past_guess_history"]][:3]
    path = write_jsonl(chosen, tmp_path / "sub" / "rows.jsonl")
    text = path.read_text(encoding="utf-8")
    assert [json.loads(line) for line in text.splitlines()] == chosen
    assert "✓" in text or "(-)" in text or "(x)" in text  # symbols written as is, not \u escapes
    assert "\\u" not in text


def test_sft_traces_leave_out_excluded_secrets():
    games = reference_games(6, 5, solver_share=1.0, max_openings=2, solver=InfoGainSolver(hard_mode=True))
    dropped = games[0].record.secret
    kept_turns = sum(len(g.record.turns) - g.openings for g in games if g.record.secret != dropped)
    traces = sft_traces(6, seed=5, exclude_secrets=[dropped.upper()])
    assert 0 < len(traces) <= kept_turns < sum(len(g.record.turns) - g.openings for g in games)
    assert len(traces) < len(sft_traces(6, seed=5))



def test_detour_traces_start_from_mistakes_but_answer_like_the_solver():
    detoured = sft_traces(12, seed=5, detour_share=0.5)
    assert detoured == sft_traces(12, seed=5, detour_share=0.5)  # seeded
    assert sft_traces(12, seed=5, detour_share=0.0) == sft_traces(12, seed=5)
    solver = InfoGainSolver(hard_mode=True)
    repeated = 0
    for row in detoured:
        user, reply = row["messages"][1]["content"], row["messages"][2]["content"]
        history = parse_history([line.split(": ", 1)[1].split(" → Feedback: ") for line in user.splitlines()
                                 if line.startswith("Guess ")])
        words = [word for word, _ in history]
        repeated += len(set(words)) < len(words)  # openings are distinct and the solver never repeats: a detour
        assert "detour" not in reply.lower()
        assert solver.next_guess(history).text == reply  # the target is always the solver's own reply
    assert repeated > 0


def test_known_letters_traces_think_only_what_the_summary_prompt_states():
    traces = sft_traces(12, seed=3, prompt_style="summary", reasoning="known_letters")
    solver = sft_traces(12, seed=3)
    assert len(traces) == len(solver)  # the same solver moves, only the texts differ
    for trace, reference in zip(traces, solver):
        user, reply = trace["messages"][1]["content"], trace["messages"][2]["content"]
        history = parse_history(extract_history(user))
        assert user == wordle_messages(history, style="summary")[1]["content"]
        think, guess = reply.split("</think>")
        assert guess.strip() == reference["messages"][2]["content"].split("</think>")[1].strip()
        if history:
            facts = think.removeprefix("<think>\n").strip()
            assert user.endswith("What you know so far:\n" + facts)  # every line of the thinking is in the prompt
        assert wordle_format(None, reply, {}) == 1.0


def extract_history(user_turn: str) -> list[list[str]]:
    return [line.split(": ", 1)[1].split(" → Feedback: ") for line in user_turn.splitlines()
            if line.startswith("Guess ")]


def test_an_unknown_reasoning_is_refused():
    with pytest.raises(ValueError, match="reasoning must be one of solver, known_letters; got 'words'"):
        sft_traces(2, reasoning="words")


def test_the_opening_trace_is_kept_once_per_twenty_games_and_every_other_position_once():
    traces = sft_traces(100, seed=5, max_openings=1)
    texts = [json.dumps(trace["messages"]) for trace in traces]
    openings = [t for t, trace in zip(texts, traces) if trace["messages"][1]["content"] == user_turn_first()]
    assert len(openings) == 100 // 20 and len(set(openings)) == 1
    others = [t for t in texts if t not in openings]
    assert len(others) == len(set(others))
    assert sum(1 for trace in sft_traces(10, seed=5) if trace["messages"][1]["content"] == user_turn_first()) == 1


def user_turn_first() -> str:
    return wordle_messages([])[1]["content"]


def test_spelled_traces_write_the_guess_letter_by_letter_and_nothing_else_changes():
    plain = sft_traces(8, seed=2, prompt_style="summary", reasoning="known_letters")
    spelled = sft_traces(8, seed=2, prompt_style="summary", reasoning="known_letters", spell_guess=True)
    solver_spelled = sft_traces(8, seed=2, spell_guess=True)
    assert len(plain) == len(spelled) == len(solver_spelled)
    for a, b, c in zip(plain, spelled, solver_spelled):
        word = a["messages"][2]["content"].split("<guess>")[1].removesuffix("</guess>")
        assert b["messages"][2]["content"] == a["messages"][2]["content"].replace(f"<guess>{word}</guess>",
                                                                                  f"<guess>{' '.join(word)}</guess>")
        assert c["messages"][2]["content"].endswith(f"<guess>{' '.join(word)}</guess>")
        assert wordle_format(None, b["messages"][2]["content"], {}) == 1.0
