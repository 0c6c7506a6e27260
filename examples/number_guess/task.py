"""The number-guessing task, built by ``make_task`` (``task.name: examples.number_guess.task:make_task``).

It brings everything a task can: the training rows (one game per row, played against `NumberGuessEnv`), default
rewards (`examples.number_guess.rewards`), SFT traces of the bisecting player, and its own ``rftune eval``, which
plays held-out games with every player and the bisecting player as a reference.

Options (``task.kwargs``): ``high`` (secrets are 1..high, default 100), ``max_turns`` (guesses per game, default 7),
``size`` (training games, default 200), ``seed`` (default 0). A fixed seeded fifth of the numbers is held out: no
training row and no SFT trace uses them, and ``rftune eval`` plays only them.
SFT (``sft.kwargs``): ``num_games`` (traces, default 50). Evaluation (``eval.kwargs``): ``num_games`` (default 20,
``--games``), ``sampled`` (default false, ``--sampled``).
"""

from __future__ import annotations

import random

from examples.number_guess.env import NumberGuessEnv, opening, reply_to
from examples.number_guess.game import Range, answer, bisect_guess
from rftune.config import RewardSpec
from rftune.errors import ConfigError
from rftune.tasks import EvalOutcome, Task
from rftune.tasks.data import samples_from_rows

TASK_OPTIONS = {"high": 100, "max_turns": 7, "size": 200, "seed": 0}
SFT_OPTIONS = {"num_games": 50}
EVAL_OPTIONS = {"num_games": 20, "sampled": False}
SPLIT_SEED = 7  # which numbers are held out for evaluation
REWARDS = ("guess_won", "guess_format", "guess_consistent")


def make_task(options: dict, system_prompt: str | None, path: str | None, base_dir: str) -> Task:
    """The task for these ``task.kwargs`` (see the module docstring)."""
    if system_prompt or path:
        raise ConfigError("task.system_prompt and task.path: the number-guessing game writes its own prompt and rows")
    game = _options("task.kwargs", options, TASK_OPTIONS)
    high, turns = game["high"], game["max_turns"]
    training = split_numbers(high)[0]
    secrets = random.Random(game["seed"]).choices(training, k=game["size"])
    rows = ((f"number_guess game {i}", {"secret": s, "prompt": opening(high, turns)}) for i, s in enumerate(secrets))
    return Task(samples=samples_from_rows(rows), default_rewards=[
                    RewardSpec(f"examples.number_guess.rewards:{name}") for name in REWARDS],
                make_env=lambda example: NumberGuessEnv(high, turns),
                sft_traces=lambda sft_options, seed: bisect_traces(high, turns, sft_options, seed),
                evaluator=lambda request: evaluate(high, turns, request))


def split_numbers(high: int) -> tuple[list[int], list[int]]:
    """(training numbers, held-out numbers): a fixed seeded fifth of 1..high held out."""
    numbers = list(range(1, high + 1))
    held_out = set(random.Random(SPLIT_SEED).sample(numbers, max(1, high // 5)))
    return [n for n in numbers if n not in held_out], sorted(held_out)


def bisect_game(secret: int, high: int, max_turns: int) -> list[dict]:
    """The bisecting player's game against `secret` as chat messages after the opening, ending with its last
    reply."""
    messages, open_range = [], Range(1, high)
    for turn in range(1, max_turns + 1):
        guess = bisect_guess(open_range)
        said = answer(guess, secret)
        messages.append({"role": "assistant", "content": f"<guess>{guess}</guess>"})
        if said == "correct" or turn == max_turns:
            break
        messages.append({"role": "user", "content": reply_to(said, max_turns - turn, high)})
        open_range = open_range.narrowed(guess, said)
    return messages


def bisect_traces(high: int, max_turns: int, options: dict, seed: int) -> list[list[dict]]:
    """SFT data: ``num_games`` games of the bisecting player on seeded training numbers."""
    count = _options("sft.kwargs", options, SFT_OPTIONS)["num_games"]
    secrets = random.Random(seed).choices(split_numbers(high)[0], k=count)
    return [opening(high, max_turns) + bisect_game(secret, high, max_turns) for secret in secrets]


def evaluate(high: int, max_turns: int, request) -> EvalOutcome:
    """``rftune eval``: every player, and the bisecting player, on the same held-out numbers."""
    options = _options("eval.kwargs", request.options, EVAL_OPTIONS)
    held_out = split_numbers(high)[1]
    if options["num_games"] > len(held_out):
        raise ConfigError(f"eval.kwargs.num_games: at most {len(held_out)} (the held-out numbers), "
                          f"got {options['num_games']}")
    if not isinstance(options["sampled"], bool):
        raise ConfigError(f"eval.kwargs.sampled: must be true or false, got {options['sampled']!r}")
    secrets = random.Random(request.seed).sample(held_out, options["num_games"])
    games = {name: play_model(model, adapter, secrets, high, max_turns, options["sampled"], request)
             for name, (model, adapter) in request.players.items()}
    games["bisect"] = [play_bisect(secret, high, max_turns) for secret in secrets]
    rows = [summary_row(name, played) for name, played in games.items()]
    report = {"task": "number_guess", "secrets": secrets, "sampled": options["sampled"], "rows": rows,
              "games": games}
    return EvalOutcome(report, format_table(rows), {row["player"]: row for row in rows}, options["sampled"])


def play_model(model_name: str, adapter: str | None, secrets: list[int], high: int, max_turns: int, sampled: bool,
               request) -> list[list[dict]]:
    """Each game's per-turn infos, the model replying (greedy unless `sampled`) through the environment."""
    import torch

    from rftune.model.loading import load_model_and_tokenizer
    from rftune.rollout.episodes import env_rollout

    model, tokenizer = load_model_and_tokenizer(model_name, dtype=request.dtype, adapter=adapter)
    model.to(request.device)
    torch.manual_seed(request.seed)
    samples = samples_from_rows((f"held-out game {i}", {"secret": s, "prompt": opening(high, max_turns)})
                                for i, s in enumerate(secrets))
    games = []
    for first in range(0, len(samples), request.batch_size):
        batch = env_rollout(model, tokenizer, samples[first:first + request.batch_size], request.params,
                            lambda example: NumberGuessEnv(high, max_turns), greedy=not sampled)
        games += [[turn["info"] for turn in episode["turns"]] for episode in batch.episodes]
    return games


def play_bisect(secret: int, high: int, max_turns: int) -> list[dict]:
    """The bisecting player's game through the environment: its per-turn infos."""
    env = NumberGuessEnv(high, max_turns)
    env.reset({"secret": secret})
    infos = []
    for message in bisect_game(secret, high, max_turns)[::2]:
        infos.append(env.step(message["content"]).info)
    return infos


def summary_row(player: str, games: list[list[dict]]) -> dict:
    """A player's games: share won, mean guesses on won games (None when none was won), share of invalid replies."""
    won = [game for game in games if game[-1]["won"]]
    replies = [info for game in games for info in game]
    return {"player": player, "games": len(games), "won": len(won) / len(games),
            "guesses": sum(len(game) for game in won) / len(won) if won else None,
            "invalid": sum(not info["valid"] for info in replies) / len(replies)}


def format_table(rows: list[dict]) -> str:
    lines = [f"{'player':<12} {'games':>5} {'won':>6} {'guesses':>8} {'invalid':>8}"]
    for row in rows:
        guesses = "-" if row["guesses"] is None else f"{row['guesses']:.2f}"
        lines.append(f"{row['player']:<12} {row['games']:>5} {row['won']:>6.2f} {guesses:>8} {row['invalid']:>8.2f}")
    return "\n".join(lines)


def _options(section: str, options: dict, defaults: dict) -> dict:
    """`options` over `defaults`; unknown keys and non-positive integers are errors naming the key."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(f"{section}: the number-guessing task takes {sorted(defaults)}; got {unknown}")
    merged = {**defaults, **options}
    for key, value in merged.items():
        if isinstance(defaults[key], int) and not isinstance(defaults[key], bool) and (
                isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1)):
            raise ConfigError(f"{section}.{key}: must be a whole number >= {0 if key == 'seed' else 1}, got {value!r}")
    return merged
