"""Evaluation of models by playing Wordle (`rftune eval` on the Wordle task): models (base, base + adapters) and
reference players on the same held-out games.

Model games are played in batches: every unfinished game's next prompt (history mode — system message and one user
turn listing all feedback so far, as `rftune.envs.wordle.ModelPlayer` sends) is generated in one ``generate`` call per
turn, so N games take at most six batched calls. Decoding is greedy unless ``sampled`` (then the generation
settings apply, seeded). The games' secrets are the held-out test secrets of `rftune.tasks.wordle`, which no
training row uses. Each player gets a summary row (`rftune.envs.wordle.summarize_games`: solved, average guesses on
solved games, invalid-guess and format-error rates, mean rewards per turn) and, for every figure of it, the 95%
bootstrap interval and paired difference against the first player; the report holds rows, intervals, secrets and
every game's turns. Under a ``generation.constraint`` (``config``) every model decodes under it, and the report
names it (``constraint``); the reference players are not language models and play as they always do.

Intervals (`game_intervals`, with `rftune.evaluation.stats`): the unit of resampling is the game. Every player
plays the same secrets in the same order, so game i of one player is paired with game i of the first. The per-game
values are those of `rftune.envs.wordle.evaluate.summary_and_values` (kept in the report as ``game_values``), and each
interval is for the mean of those values, which is also the point estimate printed beside it:

- ``solved``: 1 or 0 per game, so the mean is the share solved (the row's k/N);
- ``avg_guesses``: the guesses a solved game used, over solved games only (the row's average); its difference
  is over the games both players solved, and is None (with a ``reason``) where fewer than 2 games are;
- ``invalid_rate``, ``format_error_rate`` and each reward: the game's share (mean) over its own turns, averaged
  over games: a per-game mean, in which every game weighs the same. The summary row's rates and reward means are
  over all turns of all games together (longer games weigh more), so the two differ when games differ in length;
  the interval tables of `report_table` say they are per-game means.
"""

from __future__ import annotations

import math
import sys
from typing import Callable, Sequence

import torch

from rftune.envs.wordle import (
    GameRecord,
    InfoGainSolver,
    RandomPlayer,
    format_table,
    play_game,
    wordle_messages,
)
from rftune.envs.wordle.evaluate import FIGURE_TITLES, FIGURES, REWARDS, TurnRecord, summary_and_values
from rftune.envs.wordle.game import MAX_GUESSES, WordleGame, extract_guess, history_records, render_feedback
from rftune.envs.wordle.prompts import invalid_guess_notice
from rftune.evaluation.stats import estimate, paired_difference
from rftune.rollout.constrained import constrained, constraint_description
from rftune.rollout.generation import SamplingParams, generate_replies

GenerateBatch = Callable[[list[list[dict]]], list[str]]


def play_games_batched(generate: GenerateBatch, secrets: Sequence[str], max_guesses: int = MAX_GUESSES,
                       on_turn: Callable[[int, int], None] | None = None,
                       prompt_style: str = "course") -> list[GameRecord]:
    """Play one game per secret; each turn, all unfinished games' prompts (in `prompt_style`) go to `generate`
    together.

    ``on_turn(turn, active_games)`` is called before each turn's generation (e.g. to show progress).
    """
    games = [WordleGame(secret, max_guesses=max_guesses) for secret in secrets]
    records = [GameRecord(secret=game.secret.upper()) for game in games]
    notices: list[str | None] = [None] * len(games)
    turn = 0
    while active := [i for i, game in enumerate(games) if not game.done]:
        turn += 1
        if on_turn is not None:
            on_turn(turn, len(active))
        texts = generate([wordle_messages(games[i].history, notices[i], prompt_style) for i in active])
        for i, text in zip(active, texts):
            notices[i] = play_turn(games[i], records[i], text)
    for game, record in zip(games, records):
        record.won, record.guesses_used = game.won, game.guesses_used
    return records


def play_turn(game: WordleGame, record: GameRecord, text: str) -> str | None:
    """Play the guess in `text`; record the turn; return the notice for the next prompt (None when valid)."""
    past = history_records(game.history)
    guess = extract_guess(text)
    outcome = game.play(guess)
    record.turns.append(TurnRecord(
        text=text, past_guess_history=past, guess=guess.strip().upper() if guess is not None else None,
        feedback=render_feedback(outcome.guess, outcome.pattern) if outcome.valid else None,
        valid=outcome.valid, won=outcome.won, error=outcome.error))
    return None if outcome.valid else invalid_guess_notice(outcome.error, game.guesses_left)


def model_generator(model, tokenizer, max_new_tokens: int, sampled: bool = False,
                    params: SamplingParams | None = None, batch_size: int = 64) -> GenerateBatch:
    """A batched ``messages list -> reply texts`` function for `model` (greedy unless `sampled`)."""
    params = params or SamplingParams(num_generations=1, max_new_tokens=max_new_tokens)

    def generate(conversations: list[list[dict]]) -> list[str]:
        texts = []
        for first in range(0, len(conversations), batch_size):
            contexts = [tokenizer(tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                                  add_special_tokens=False)["input_ids"]
                        for m in conversations[first:first + batch_size]]
            replies = generate_replies(model, tokenizer, contexts, params, max_new_tokens, greedy=not sampled)
            texts += tokenizer.batch_decode(replies, skip_special_tokens=True)
        return texts

    return generate


def evaluate_models(model_specs: dict[str, tuple[str, str | None]], secrets: Sequence[str], *, max_new_tokens: int,
                    sampled: bool = False, params: SamplingParams | None = None, batch_size: int = 64,
                    seed: int = 0, dtype: str = "float32", reference_players: bool = True,
                    progress: bool = True, device: torch.device | str = "cpu", resamples: int = 1000,
                    config=None, prompt_style: str = "course") -> dict:
    """Play `secrets` with each model (name -> (model path, adapter or None), run on `device`) and the reference
    players. ``config``: the run's config, whose ``generation.constraint`` every model decodes under (None: none);
    ``prompt_style``: the prompts the models see (`rftune.envs.wordle.prompts.PROMPT_STYLES`).

    Returns ``{"secrets", "sampled", "rows": [summary per player], "games": {player: [game dicts]},
    "game_values": {player: {figure: [value per game]}}, "intervals": {player: {figure: {"estimate": ...,
    "difference": ...}}}}`` (see `game_intervals`).
    """
    from rftune.model.loading import load_model_and_tokenizer

    report = {"secrets": [s.upper() for s in secrets], "sampled": sampled, "rows": [], "games": {},
              "prompt_style": prompt_style,
              "constraint": constraint_description(config) if config is not None else None}
    params = params or SamplingParams(num_generations=1, max_new_tokens=max_new_tokens)
    for name, (model_path, adapter) in model_specs.items():
        _say(progress, f"eval: playing {len(secrets)} games with {name} ...")
        model, tokenizer = load_model_and_tokenizer(model_path, dtype=dtype, adapter=adapter)
        model.to(device)
        torch.manual_seed(seed)
        model_params = constrained(params, config, model, tokenizer) if config is not None else params
        generate = model_generator(model, tokenizer, max_new_tokens, sampled, model_params, batch_size)
        _add(report, name, play_games_batched(
            generate, secrets, on_turn=lambda turn, active: _say(progress, f"  turn {turn}: {active} games left"),
            prompt_style=prompt_style))
        del model
    if reference_players:
        _say(progress, "eval: playing the solver and the random player ...")
        _add(report, "solver", [play_game(InfoGainSolver(), s) for s in secrets])
        random_player = RandomPlayer(seed=seed)
        _add(report, "random", [play_game(random_player, s) for s in secrets])
    report["intervals"] = game_intervals(report, resamples, seed)
    return report


def game_intervals(report: dict, resamples: int = 1000, seed: int = 0) -> dict:
    """Per player and figure (`FIGURES`, from ``report["game_values"]``): ``{"estimate": {"mean", "low", "high",
    "n"}, "difference": {...} or None}``, the mean of the per-game values with its 95% bootstrap interval and, after
    the first player, the paired difference against the first over the games where both have a value (the games are
    the same secrets in the same order). ``estimate`` is None where the player has no value (``avg_guesses`` of a
    player that solved nothing). Where ``difference`` is None, ``reason`` says why: the first player is the
    baseline, or fewer than 2 games have a value for both players."""
    values = report["game_values"]
    first = report["rows"][0]["player"]
    return {name: {figure: _interval(figure, own[figure], values[first][figure], name, first, resamples, seed)
                   for figure in FIGURES if figure in own}
            for name, own in values.items()}


_BOTH = {"avg_guesses": "solved by both"}  # what a game with a value for both players is, where not "played"


def _interval(figure: str, own: list, base: list, name: str, first: str, resamples: int, seed: int) -> dict:
    own_values, base_values = _not_applicable_nan(own), _not_applicable_nan(base)
    entry = {"estimate": estimate(own_values, resamples, seed), "difference": None}
    if name == first:
        entry["reason"] = "the baseline: differences are against this player"
        return entry
    pairs = sum(a is not None and b is not None for a, b in zip(own, base))
    if pairs < 2:
        entry["reason"] = (f"{pairs} game{'' if pairs == 1 else 's'} {_BOTH.get(figure, 'played by both')} "
                           f"{name} and {first}; a paired difference needs 2")
    else:
        entry["difference"] = paired_difference(own_values, base_values, resamples, seed)
    return entry


def _not_applicable_nan(values: list) -> list[float]:
    return [math.nan if value is None else float(value) for value in values]


def _add(report: dict, name: str, games: list[GameRecord]) -> None:
    row, values = summary_and_values(name, games)
    report["rows"].append(row)
    report.setdefault("game_values", {})[name] = values
    report["games"][name] = [game.to_dict() for game in games]


WIDTH = 159  # the widest line of an interval table; wider tables are split into blocks of columns


def report_table(report: dict) -> str:
    """The game table; then, for every figure, each player's per-game mean with its 95% bootstrap interval; then each
    later player's paired difference against the first (cells ``mean [low, high]``, 3 decimals)."""
    models = f"models see the {report.get('prompt_style', 'course')} prompts; "
    models += f"constrained to {report['constraint']}" if report.get("constraint") else "unconstrained"
    lines = [models, format_table(report["rows"])]
    intervals = report.get("intervals")
    if not intervals:
        return "\n".join(lines)
    first = report["rows"][0]["player"]
    figures = [f for f in FIGURES if any(f in by_figure for by_figure in intervals.values())]
    header = ["player", *(FIGURE_TITLES[f] for f in figures)]
    groups = [sum(f not in REWARDS for f in figures), sum(f in REWARDS for f in figures)]  # games, then rewards
    estimates = [[name, *(_interval_cell(by_figure.get(f, {}).get("estimate")) for f in figures)]
                 for name, by_figure in intervals.items()]
    lines += ["", "per-game means, 95% bootstrap intervals over games: solved = share of games, avg guesses = over "
              "solved games,", "invalid, format err and rewards = each game's mean over its turns, averaged over games",
              *_blocks(header, estimates, groups)]
    later = {name: by_figure for name, by_figure in intervals.items() if name != first}
    if later:
        differences = [[name, *(_interval_cell(by_figure.get(f, {}).get("difference"), signed=True) for f in figures)]
                       for name, by_figure in later.items()]
        notes = [f"  {FIGURE_TITLES[f]} of {name}: {by_figure[f]['reason']}" for name, by_figure in later.items()
                 for f in figures if f in by_figure and by_figure[f]["difference"] is None]
        lines += ["", f"paired differences against {first}, game by game (avg guesses: over games both solved), "
                  "95% bootstrap intervals", *_blocks([f"player - {first}", *header[1:]], differences, groups),
                  *(["no difference (-):", *notes] if notes else [])]
    return "\n".join(lines)


def _interval_cell(value: dict | None, signed: bool = False) -> str:
    """``mean [low, high]`` with 3 decimals (signed for differences); ``-`` where there is none."""
    if value is None:
        return "-"
    fmt = "+.3f" if signed else ".3f"
    return f"{value['mean']:{fmt}} [{value['low']:{fmt}}, {value['high']:{fmt}}]"


def _blocks(header: list[str], body: list[list[str]], groups: list[int], width: int = WIDTH) -> list[str]:
    """An aligned table (first column left, the others right). When a line would be wider than `width` its
    columns are split into blocks (each repeating the first column, separated by an empty line): one per group of
    `groups` (the number of columns in each), a group split further where it is itself too wide."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def fits(block: list[int], column: int) -> bool:
        return widths[0] + sum(2 + widths[c] for c in [*block, column]) <= width

    columns = list(range(1, len(header)))
    parts = [columns] if widths[0] + sum(2 + widths[c] for c in columns) <= width else [
        columns[sum(groups[:i]):sum(groups[:i + 1])] for i in range(len(groups))]
    blocks: list[list[int]] = []
    for part in parts:
        blocks.append([])
        for column in part:
            if blocks[-1] and not fits(blocks[-1], column):
                blocks.append([])
            blocks[-1].append(column)
    lines: list[str] = []
    for block in blocks:
        columns = [0, *block]
        lines += [""] if lines else []
        for row in [header, ["-" * widths[c] for c in range(len(header))], *body]:
            lines.append("  ".join(row[c].ljust(widths[c]) if c == 0 else row[c].rjust(widths[c])
                                   for c in columns).rstrip())
    return lines


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)
