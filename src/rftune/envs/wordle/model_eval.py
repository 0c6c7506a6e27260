"""Evaluation of models by playing Wordle (`rftune eval` on the Wordle task): models (base, base + adapters) and
reference players on the same held-out games.

Model games are played in batches: every unfinished game's next prompt (history mode — system message and one user
turn listing all feedback so far, as `rftune.envs.wordle.ModelPlayer` sends) is generated in one ``generate`` call per
turn, so N games take at most six batched calls. Decoding is greedy unless ``sampled`` (then the generation
settings apply, seeded). The games' secrets are the held-out test secrets of `rftune.tasks.wordle`, which no
training row uses. Each player gets a summary row (`rftune.envs.wordle.summarize_games`: solved, average guesses on
solved games, invalid-guess and format-error rates, mean rewards per turn) and the share solved with its 95%
bootstrap interval and paired difference against the first player; the report holds rows, intervals, secrets and
every game's turns. Under a ``generation.constraint`` (``config``) every model decodes under it, and the report
names it (``constraint``); the reference players are not language models and play as they always do.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import torch

from rftune.envs.wordle import (
    GameRecord,
    InfoGainSolver,
    RandomPlayer,
    format_table,
    play_game,
    summarize_games,
    wordle_messages,
)
from rftune.envs.wordle.evaluate import TurnRecord
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
    "intervals": {player: {"solved": ..., "difference": ...}}}`` (see `solved_intervals`).
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
    report["intervals"] = solved_intervals(report, resamples, seed)
    return report


def solved_intervals(report: dict, resamples: int = 1000, seed: int = 0) -> dict:
    """Per player: the share of games solved with its 95% bootstrap interval and, after the first player, the
    paired difference against the first (the games are the same secrets in the same order)."""
    wins = {name: [float(game["won"]) for game in games] for name, games in report["games"].items()}
    first = report["rows"][0]["player"]
    return {name: {"solved": estimate(won, resamples, seed),
                   "difference": None if name == first else paired_difference(won, wins[first], resamples, seed)}
            for name, won in wins.items()}


def _add(report: dict, name: str, games: list[GameRecord]) -> None:
    report["rows"].append(summarize_games(name, games))
    report["games"][name] = [game.to_dict() for game in games]


def report_table(report: dict) -> str:
    """The game table, then each player's solved share with its interval and its difference to the first."""
    lines = [format_table(report["rows"]), "", "solved share, 95% bootstrap interval (difference: paired, against "
             f"{report['rows'][0]['player']}):"]
    if report.get("constraint"):
        lines.insert(0, f"every model constrained to {report['constraint']}")
    for name, figures in report.get("intervals", {}).items():
        solved, difference = figures["solved"], figures["difference"]
        line = f"  {name}: {solved['mean']:.3f} [{solved['low']:.3f}, {solved['high']:.3f}]"
        if difference is not None:
            line += f"  difference {difference['mean']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}]"
        lines.append(line)
    return "\n".join(lines)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)
