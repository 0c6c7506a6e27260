"""Training data from reference games: history-mode prompt rows for GRPO and solver traces for SFT.

Reference games are seeded: each game draws a secret from the answers, zero to `max_openings` random opening
words (answers, so openings look natural), and a continuation player: the information-gain solver with
probability `solver_share`, else the random consistent player. The random openings spread the games over many
different positions instead of the solver's single opening line.

- `history_rows`: one row per turn state (`history_row`), ``{"secret", "past_guess_history", "prompt"}``, where the
  prompt is the history-mode chat prompt for that state; the rows are exactly what the Wordle rewards read in
  history mode.
  `late_first` orders them as a curriculum: the positions with the fewest answers left first, the openings last.
- `sft_traces`: ``{"messages": [system, user, assistant]}`` for every move the solver chose itself (not the fixed
  openings), the assistant reply being the solver's ``<think>`` explanation and ``<guess>``. Identical conversations
  (the same position reached in several games) are kept once, except the opening, the one position every game
  without fixed openings passes through: it is kept once per ``OPENING_EVERY`` games (at least once), since a model
  shown its first move once in a thousand traces does not learn it and then loses every game from turn 1 (the SFT
  model of the first known-letters run wrote ``<think><b><i><u>...`` there). By default the solver plays hard mode
  (only words that fit all the feedback, the guess named first among the remaining candidates it lists): these are
  the moves the feedback reward scores highest and the easiest for a small model to imitate; the full solver's best
  guesses are often rare words that fit nothing (``RYNDS``), which a 135M model learns to copy as "any letters".
- Detours (``detour_share``): a small model's own games soon leave the solver's line — it repeats an earlier guess
  or plays a word that ignores the feedback — and it was never shown what to do from there (imitation learning's
  compounding error). With detours, some of the solver's moves are replaced by such a mistake (a repeat of an
  earlier guess, or a random answer word), and the solver's replies from the positions that follow become traces
  too: DAgger-style data for the states the model itself reaches. The detour moves are never traces.

The same arguments always give the same rows.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rftune.envs.wordle.evaluate import GameRecord, play_game
from rftune.envs.wordle.game import History, parse_history
from rftune.envs.wordle.patterns import consistent_mask
from rftune.envs.wordle.players import Move, OpeningPlayer, Player, RandomPlayer, reply_text
from rftune.envs.wordle.prompts import known_letters, wordle_messages
from rftune.envs.wordle.solver import InfoGainSolver
from rftune.envs.wordle.words import answer_words


@dataclass(frozen=True)
class ReferenceGame:
    """A played reference game, how many fixed opening moves it began with, and who played the rest."""

    record: GameRecord
    openings: int
    by_solver: bool


def reference_games(num_games: int, seed: int = 0, solver_share: float = 0.5, max_openings: int = 2,
                    solver: Player | None = None) -> list[ReferenceGame]:
    """Seeded reference games (see the module docstring); `solver` replaces the information-gain solver."""
    if num_games < 0 or not 0.0 <= solver_share <= 1.0 or max_openings < 0:
        raise ValueError(f"need num_games >= 0, 0 <= solver_share <= 1, max_openings >= 0; got {num_games}, "
                         f"{solver_share}, {max_openings}")
    rng = random.Random(seed)
    solver = solver or InfoGainSolver()
    answers = answer_words().words
    games = []
    for _ in range(num_games):
        secret = rng.choice(answers)
        openings = rng.sample(answers, rng.randint(0, max_openings))
        use_solver = rng.random() < solver_share
        follower = solver if use_solver else RandomPlayer(seed=rng.randrange(2**31))
        record = play_game(OpeningPlayer(follower, openings), secret)
        games.append(ReferenceGame(record=record, openings=len(openings), by_solver=use_solver))
    return games


def history_rows(num_games: int, seed: int = 0, solver_share: float = 0.5, max_openings: int = 2,
                 prompt_style: str = "course") -> list[dict]:
    """History-mode rows, one per turn state of each reference game, prompts in `prompt_style`."""
    return [history_row(game.record.secret, turn.past_guess_history, prompt_style)
            for game in reference_games(num_games, seed, solver_share, max_openings) for turn in game.record.turns]


def history_row(secret: str, past_guess_history: list, prompt_style: str = "course") -> dict:
    """The history-mode row of one turn state: what the Wordle rewards read, and the prompt for that state."""
    return {"secret": secret, "past_guess_history": past_guess_history,
            "prompt": wordle_messages(parse_history(past_guess_history), style=prompt_style)}


def late_first(rows: list[dict], seed: int = 0) -> list[dict]:
    """`rows` (history rows) ordered from late-game positions to openings: by the number of answers still consistent
    with their feedback, fewest first; rows with the same number in a seeded shuffled order, so that one game's
    turns do not come together."""
    rng = random.Random(seed)
    answers = answer_words()
    keys = [(int(consistent_mask(answers, parse_history(row["past_guess_history"])).sum()), rng.random())
            for row in rows]
    return [row for _, row in sorted(zip(keys, rows), key=lambda pair: pair[0])]


DETOUR_REASONING = "A detour from the solver's line (never a trace)."


class DetourPlayer:
    """Plays `player`'s moves, but after the first guess replaces each by a mistake with probability `share`.

    A mistake repeats one of the earlier guesses or plays a random answer word (which usually ignores the
    feedback); its reply text is `DETOUR_REASONING`, so traces can leave it out.
    """

    def __init__(self, player: Player, share: float, rng: random.Random):
        self.player, self.share, self.rng = player, share, rng

    def next_guess(self, history: History, notice: str | None = None) -> Move:
        if not history or notice is not None or self.rng.random() >= self.share:
            return self.player.next_guess(history, notice)
        if self.rng.random() < 0.5:
            guess = self.rng.choice([word for word, _ in history])
        else:
            guess = self.rng.choice(answer_words().words)
        return Move(guess, reply_text(DETOUR_REASONING, guess))


def sft_traces(num_games: int, seed: int = 0, max_openings: int = 2, exclude_secrets: Iterable[str] = (),
               hard_mode: bool = True, detour_share: float = 0.0, prompt_style: str = "course",
               reasoning: str = "solver", spell_guess: bool = False) -> list[dict]:
    """Chat rows (system, user, assistant) for the solver's own moves in seeded games, without duplicates.

    Games whose secret is in ``exclude_secrets`` (e.g. held-out test secrets) are left out; ``hard_mode`` picks
    the solver and ``detour_share`` the probability of a mistake in place of a solver move (module docstring).
    The user turns are in `prompt_style`; ``reasoning`` (``REASONING``) is what the ``<think>`` holds (`reply`);
    ``spell_guess`` writes the guess letter by letter (``<guess>S P L I T</guess>``).
    """
    if not 0.0 <= detour_share < 1.0:
        raise ValueError(f"detour_share must be in [0, 1), got {detour_share}")
    if reasoning not in REASONING:
        raise ValueError(f"reasoning must be one of {', '.join(REASONING)}; got {reasoning!r}")
    excluded = {word.lower() for word in exclude_secrets}
    rows, seen = [], set()
    openings_left = max(1, num_games // OPENING_EVERY)
    player = InfoGainSolver(hard_mode=hard_mode)
    if detour_share:
        player = DetourPlayer(player, detour_share, random.Random(seed + 1))
    for game in reference_games(num_games, seed, solver_share=1.0, max_openings=max_openings, solver=player):
        if game.record.secret.lower() in excluded:
            continue
        for turn in game.record.turns[game.openings:]:
            if DETOUR_REASONING in turn.text:
                continue
            history = parse_history(turn.past_guess_history)
            messages = wordle_messages(history, style=prompt_style)
            messages.append({"role": "assistant", "content": reply(turn, history, reasoning, spell_guess)})
            key = json.dumps(messages, ensure_ascii=False)
            opening = not history and openings_left > 0
            if key not in seen or opening:
                seen.add(key)
                openings_left -= opening
                rows.append({"messages": messages})
    return rows


OPENING_EVERY = 20  # games per kept copy of the opening trace (see the module docstring)
REASONING = ("solver", "known_letters")
OPENING_REASONING = "No feedback yet, so I open with a word of common letters."


def reply(turn, history: History, reasoning: str, spell_guess: bool = False) -> str:
    """The trace's assistant reply for a solver move: ``solver``, the solver's own explanation (what the feedback
    says, the words that still fit and why this guess); ``known_letters``, only what the feedback establishes
    (`rftune.envs.wordle.prompts.known_letters`), then the guess. A small model can write the second kind itself:
    every fact in it is read off the feedback, where the first asks it to name fitting words it has to invent.
    ``spell_guess``: the guess letter by letter, each letter its own token, as the placed-letters pattern is."""
    if reasoning == "solver":
        thinking = turn.text.split("</think>")[0].removeprefix("<think>")
    else:
        thinking = "\n".join(known_letters(history)) or OPENING_REASONING
    return reply_text(thinking, turn.guess, spell_guess)


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    """Write one JSON object per line (UTF-8, symbols kept as is); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
