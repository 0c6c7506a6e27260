"""The information-gain solver: choices, explanations, and whole games."""

import math

import pytest

from rftune.envs.wordle.evaluate import play_game, seeded_secrets
from rftune.envs.wordle.game import has_required_format, parse_history
from rftune.envs.wordle.solver import InfoGainSolver, describe_feedback

TINY = ["crane", "crate", "crave", "grace", "trace"]


@pytest.fixture(scope="module")
def solver():
    return InfoGainSolver()


def test_opening_is_the_most_informative_word(solver):
    choice = solver.choose([])
    assert choice.guess == "soare"  # the known maximum-entropy opener over the official answers
    assert len(choice.candidates) == 2315 and 5.88 < choice.bits < 5.89


def test_small_lists_by_hand():
    # Groups over the 5 words, worked out with the feedback rules:
    #   crane {crate, crave} {grace, trace} {crane}     crave {crane, crate} {grace, trace} {crave}
    #   grace {crane, crate, crave} {trace} {grace}     crate {crane, crave} {grace} {trace} {crate}
    #   trace {crane, crave} {crate} {grace} {trace}
    # crate and trace tie at log2(5) - 2/5 bits; both could win, so list order picks crate.
    solver = InfoGainSolver(answers=TINY, allowed=TINY)
    choice = solver.choose([])
    assert choice.guess == "crate" and choice.groups == 4 and choice.largest_group == 2
    assert abs(choice.bits - (math.log2(5) - 0.4)) < 1e-12
    last = solver.choose([("crate", "-✓✓x✓")])
    assert last.guess == "grace" and last.candidates == ("grace",)
    assert "Only GRACE fits" in solver.next_guess([("crate", "-✓✓x✓")]).text


def test_two_candidates_guess_one_of_them():
    solver = InfoGainSolver(answers=TINY, allowed=TINY)
    choice = solver.choose([("crane", "✓✓✓x✓")])
    assert choice.candidates == ("crate", "crave") and choice.guess == "crate"
    assert "otherwise CRAVE is left" in solver.next_guess([("crane", "✓✓✓x✓")]).text


def test_solver_rejects_answers_outside_the_allowed_list():
    with pytest.raises(ValueError, match="missing from the allowed list: zesty"):
        InfoGainSolver(answers=["crane", "zesty"], allowed=["crane"])


def test_describe_feedback_lists_placed_misplaced_and_absent_letters():
    text = describe_feedback([("crane", "x✓-xx"), ("eerie", "xx-x✓")])
    assert "Placed letters: _R__E." in text
    assert "A is in the word but not 3rd." in text
    # EERIE's one R, marked - in the 3rd spot, is the R placed 2nd: no guess shows a second copy, so not listed
    assert "R is in the word" not in text
    assert "Not in the word: C, I, N." in text  # E is marked x but is also placed, so it is not listed


@pytest.mark.parametrize("secret", ["crane", "abbey", "sissy", "jazzy", "vivid"])
def test_solver_solves_known_secrets_within_six(solver, secret):
    record = play_game(solver, secret)
    assert record.won and record.guesses_used <= 6
    assert all(has_required_format(turn.text) for turn in record.turns)


def test_solver_solves_twenty_seeded_secrets(solver):
    records = [play_game(solver, secret) for secret in seeded_secrets(20, seed=2024)]
    assert all(record.won for record in records)
    average = sum(r.guesses_used for r in records) / len(records)
    print(f"\nsolver: 20/20 solved, average {average:.2f} guesses")
    assert average < 4.5


def test_hard_mode_only_plays_words_that_fit_the_feedback():
    full, hard = InfoGainSolver(), InfoGainSolver(hard_mode=True)
    full_outside = 0
    for secret in seeded_secrets(12, seed=7):
        record = play_game(hard, secret)
        assert record.won and record.guesses_used <= 6
        for history, turn in _states(record):
            assert turn.guess.lower() in hard.candidates(history)  # hard mode: every guess could be the answer
            assert turn.guess in turn.text.split("Words that fit: ", 1)[1].split("\n")[0]  # named among the candidates
        full_outside += sum(turn.guess.lower() not in full.candidates(history)
                            for history, turn in _states(play_game(full, secret)))
    assert full_outside > 0  # the full solver does play words that cannot be the answer: the option changes play


def test_hard_mode_names_its_guess_first():
    solver = InfoGainSolver(hard_mode=True)
    move = solver.next_guess([("beach", "x✓xxx")])
    assert f"Words that fit: {move.guess.upper()}," in move.text and f"{move.guess.upper()} fits" in move.text


def _states(record):
    """(history before the turn, turn) for each turn of a played game."""
    history = []
    for turn in record.turns:
        yield list(history), turn
        history += parse_history([[turn.guess, turn.feedback]])
