"""Evaluation by playing whole games: records of each game, per-player summaries, and a printable table.

`play_game` runs one game of a `Player` against a secret; `evaluate_players` plays every player on the same
secrets (see `seeded_secrets`) and summarises per player: games solved (and "k/N"), average guesses over solved
games (invalid turns count, as they use up a guess), the invalid-guess rate and format-error rate over all turns,
and the mean of each Wordle reward over all turns, each turn scored in history mode. `summary_and_values` also gives
the same figures one game at a time (the unit that intervals resample; see `rftune.envs.wordle.model_eval`).
Everything returned is plain JSON-serialisable data; `format_table` lays the summaries out as aligned text.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

from rftune.envs.wordle import rewards
from rftune.envs.wordle.game import MAX_GUESSES, WordleGame, has_required_format, history_records, render_feedback
from rftune.envs.wordle.players import Player
from rftune.envs.wordle.prompts import invalid_guess_notice
from rftune.envs.wordle.words import WordList, answer_words, word_list

REWARDS = {
    "wordle_format": rewards.wordle_format,
    "wordle_feedback": rewards.wordle_feedback,
    "wordle_guess_value": rewards.wordle_guess_value,
    "wordle_win": rewards.wordle_win,
    "wordle_partial_credit": rewards.wordle_partial_credit,
}
_TAKES_WORDS = ("wordle_format", "wordle_guess_value", "wordle_partial_credit")
TURN_FIGURES = ("invalid_rate", "format_error_rate", *REWARDS)  # the figures of a summary taken over turns
FIGURES = ("solved", "avg_guesses", *TURN_FIGURES)  # every figure of a summary row, as `summary_and_values` gives them


@dataclass
class TurnRecord:
    """One turn: the player's text, the valid history before it (course format) and what came of the guess."""

    text: str
    past_guess_history: list[list[str]]
    guess: str | None
    feedback: str | None
    valid: bool
    won: bool
    error: str | None = None

    def example(self, secret: str) -> dict:
        """This turn as a history-mode reward example."""
        return {"secret": secret, "past_guess_history": self.past_guess_history}


@dataclass
class GameRecord:
    """A finished game: the secret (uppercase), its turns, whether it was won and the turns it used."""

    secret: str
    turns: list[TurnRecord] = field(default_factory=list)
    won: bool = False
    guesses_used: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def play_game(player: Player, secret: str, allowed: WordList | Sequence[str] | None = None,
              max_guesses: int = MAX_GUESSES) -> GameRecord:
    """Let `player` play one game against `secret` until it wins or runs out of guesses."""
    game = WordleGame(secret, allowed=word_list(allowed), max_guesses=max_guesses)
    record = GameRecord(secret=game.secret.upper())
    notice = None
    while not game.done:
        past = list(game.history)
        move = player.next_guess(past, notice)
        outcome = game.play(move.guess)
        record.turns.append(TurnRecord(
            text=move.text, past_guess_history=history_records(past),
            guess=move.guess.strip().upper() if move.guess is not None else None,
            feedback=render_feedback(outcome.guess, outcome.pattern) if outcome.valid else None,
            valid=outcome.valid, won=outcome.won, error=outcome.error))
        notice = None if outcome.valid else invalid_guess_notice(outcome.error, game.guesses_left)
    record.won, record.guesses_used = game.won, game.guesses_used
    return record


def seeded_secrets(n: int, seed: int = 0, answers: WordList | Sequence[str] | None = None) -> list[str]:
    """`n` distinct answers picked deterministically from `seed`, so every player gets the same games."""
    pool = word_list(answers, default=answer_words())
    if not 0 < n <= len(pool):
        raise ValueError(f"number of secrets must be between 1 and {len(pool)}, got {n}")
    return random.Random(seed).sample(pool.words, n)


def evaluate_players(players: Mapping[str, Player], secrets: Sequence[str],
                     allowed: WordList | Sequence[str] | None = None) -> list[dict]:
    """Play each player on every secret; one summary row per player (see `summarize_games`)."""
    words = word_list(allowed)
    return [summarize_games(name, [play_game(player, s, allowed=words) for s in secrets], allowed=words)
            for name, player in players.items()]


def summarize_games(name: str, games: Sequence[GameRecord], allowed: WordList | Sequence[str] | None = None) -> dict:
    """Summary row for one player's games: solved counts, average guesses, error rates, reward means (the rates and
    reward means over all turns of all games together)."""
    return _summary_row(name, games, _turn_figures(games, word_list(allowed)))


def _summary_row(name: str, games: Sequence[GameRecord], per_game: list[dict[str, list[float]]]) -> dict:
    turns = {key: [value for game in per_game for value in game[key]] for key in TURN_FIGURES}
    solved = [game for game in games if game.won]
    row = {
        "player": name,
        "games": len(games),
        "solved": len(solved),
        "solved_of": f"{len(solved)}/{len(games)}",
        "avg_guesses": sum(g.guesses_used for g in solved) / len(solved) if solved else None,
    }
    row.update({key: _mean(turns[key]) for key in TURN_FIGURES})
    return row


def _game_values(games: Sequence[GameRecord], per_game: list[dict[str, list[float]]]) -> dict[str, list]:
    values: dict[str, list] = {"solved": [float(game.won) for game in games],
                               "avg_guesses": [float(game.guesses_used) if game.won else None for game in games]}
    values.update({key: [_mean(game[key]) for game in per_game] for key in TURN_FIGURES})
    return values


def summary_and_values(name: str, games: Sequence[GameRecord],
                       allowed: WordList | Sequence[str] | None = None) -> tuple[dict, dict[str, list]]:
    """The summary row of `summarize_games`, and each of its figures (`FIGURES`) one value per game in order, each
    game's own: ``solved`` 1.0 or 0.0, ``avg_guesses`` the guesses it used (None when it was lost), ``invalid_rate``
    and ``format_error_rate`` the share of its turns, each reward the mean over its turns (None for a game without
    turns). Each turn is scored once for both.

    The mean of ``solved`` and of ``avg_guesses`` (over the games that have one) are the summary row's; the others
    are means over games, which differ from the row's means over all turns when games differ in length.
    """
    per_game = _turn_figures(games, word_list(allowed))
    return _summary_row(name, games, per_game), _game_values(games, per_game)


def _turn_figures(games: Sequence[GameRecord], words: WordList) -> list[dict[str, list[float]]]:
    """Per game: each per-turn figure on each of its turns (invalid 1/0, format error 1/0, every reward in history
    mode)."""
    per_game = []
    for game in games:
        figures = {"invalid_rate": [float(not turn.valid) for turn in game.turns],
                   "format_error_rate": [float(not has_required_format(turn.text)) for turn in game.turns]}
        for reward_name, fn in REWARDS.items():
            options = {"allowed_words": words} if reward_name in _TAKES_WORDS else {}
            figures[reward_name] = [fn(None, turn.text, turn.example(game.secret), **options) for turn in game.turns]
        per_game.append(figures)
    return per_game


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values)) / len(values) if values else None


_COLUMNS = (("player", "player", "{}"), ("solved", "solved_of", "{}"), ("avg guesses", "avg_guesses", "{:.2f}"),
            ("invalid", "invalid_rate", "{:.1%}"), ("format err", "format_error_rate", "{:.1%}"),
            ("format", "wordle_format", "{:.3f}"), ("feedback", "wordle_feedback", "{:.3f}"),
            ("guess value", "wordle_guess_value", "{:.3f}"), ("win", "wordle_win", "{:.3f}"),
            ("partial", "wordle_partial_credit", "{:.3f}"))
FIGURE_TITLES = {"solved": "solved", **{key: title for title, key, _ in _COLUMNS[2:]}}  # figure -> column title


def format_table(rows: Sequence[dict]) -> str:
    """Summary rows as an aligned text table (missing values shown as '-')."""
    header = [title for title, _, _ in _COLUMNS]
    body = [[_cell(row.get(key), fmt) for _, key, fmt in _COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *body]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(line, widths))).rstrip() for line in lines)


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
