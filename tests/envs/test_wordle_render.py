"""Terminal board and the human play loop, driven by scripted input."""

from rftune.envs.wordle.render import play_human, render_board, render_tile

GREEN, YELLOW, GREY, RESET = "\x1b[1;97;42m", "\x1b[1;30;43m", "\x1b[1;97;100m", "\x1b[0m"


def test_plain_board_is_tile_text():
    board = render_board([("babes", "--✓✓x"), ("abbey", "✓✓✓✓✓")], color=False)
    assert board == "B(-) A(-) B(✓) E(✓) S(x)\nA(✓) B(✓) B(✓) E(✓) Y(✓)"


def test_coloured_tiles():
    assert render_tile("c", "✓") == f"{GREEN} C {RESET}"
    assert render_tile("c", "-") == f"{YELLOW} C {RESET}"
    assert render_tile("c", "x") == f"{GREY} C {RESET}"
    row = render_board([("babes", "--✓✓x")])
    assert row == "".join([f"{YELLOW} B {RESET}", f"{YELLOW} A {RESET}", f"{GREEN} B {RESET}",
                           f"{GREEN} E {RESET}", f"{GREY} S {RESET}"])


def scripted(lines):
    feed = iter(lines)

    def input_fn(prompt):
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    return input_fn


def test_play_human_reasks_on_invalid_input_and_wins():
    out = []
    record = play_human("abbey", input_fn=scripted(["hi", "zzzzz", "babes", "ABBEY"]), print_fn=out.append,
                        color=False)
    assert record.won and record.guesses_used == 2
    assert [t.guess for t in record.turns] == ["BABES", "ABBEY"]
    assert "'hi' is not a 5-letter word; try again." in out
    assert "ZZZZZ is not in the word list; try again." in out
    assert "B(-) A(-) B(✓) E(✓) S(x)" in out
    assert out[-1] == "Solved in 2!"


def test_play_human_gives_up_on_end_of_input_and_reveals_the_word():
    out = []
    record = play_human("abbey", input_fn=scripted(["crane"]), print_fn=out.append, color=False)
    assert not record.won and record.guesses_used == 1 and out[-1] == "The word was ABBEY."


def test_play_human_loses_after_six_guesses():
    out = []
    record = play_human("abbey", input_fn=scripted(["crane"] * 6), print_fn=out.append, color=False)
    assert not record.won and record.guesses_used == 6 and out[-1] == "The word was ABBEY."


def test_play_human_draws_a_seeded_secret():
    first = play_human(input_fn=scripted([]), print_fn=lambda _: None, seed=3)
    again = play_human(input_fn=scripted([]), print_fn=lambda _: None, seed=3)
    assert first.secret == again.secret and len(first.secret) == 5
