"""The Wordle task: the course's single-turn history mode, or multi-turn episodes against `WordleEnv`.

Options (``task.kwargs``):
    mode          ``history`` (default): one row per turn state of seeded reference games (solver and random
                  players, see `rftune.envs.wordle.datasets`), each prompt asking for the next guess given the
                  feedback so far — the course's training setup. ``episode``: one row per secret; the trainer plays
                  whole games with the policy (multi-turn rollouts, `rftune.rollout.episodes`).
    num_games     history mode: reference games to take turn states from (default 200)
    size          episode mode: number of secrets (default 500)
    seed          seed of the reference games / secret draw (default 0)
    solver_share  history mode: share of reference games continued by the solver rather than the random player
    max_openings  history mode: up to this many random opening words per reference game (default 2)

Held-out test secrets: `split_answers` splits the official answer list once, with a fixed seed, into training
secrets and ``TEST_SIZE`` test secrets. Training rows (history rows, SFT traces, episode secrets) never use a test
secret; `rftune eval` draws its games from the test secrets only.

Default rewards (the course's weights): wordle_format 1.0, wordle_feedback 1.0, wordle_guess_value 1.0; episode
mode adds wordle_win 1.0 and wordle_partial_credit 1.0 (each episode-mode reward is the mean over the turns).
"""

from __future__ import annotations

import functools
import random

from rftune.config import RewardSpec
from rftune.tasks.data import samples_from_rows
from rftune.errors import ConfigError
from rftune.tasks import Task, check_options

TEST_SIZE = 315  # answers held out for evaluation (2,315 answers: 2,000 for training, 315 for testing)
SPLIT_SEED = 20240601
KNOWN_OPTIONS = {"mode", "num_games", "size", "seed", "solver_share", "max_openings"}
HISTORY_REWARDS = ("wordle_format", "wordle_feedback", "wordle_guess_value")
EPISODE_REWARDS = HISTORY_REWARDS + ("wordle_win", "wordle_partial_credit")


@functools.lru_cache(maxsize=1)
def split_answers() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training secrets, test secrets): a fixed seeded split of the official answer list."""
    from rftune.envs.wordle.words import answer_words

    words = list(answer_words().words)
    test = set(random.Random(SPLIT_SEED).sample(words, TEST_SIZE))
    return tuple(w for w in words if w not in test), tuple(w for w in words if w in test)


def held_out_secrets(n: int, seed: int = 0) -> list[str]:
    """`n` held-out secrets, the same for every player given the same seed."""
    from rftune.envs.wordle import seeded_secrets

    pool = split_answers()[1]
    if not 0 < n <= len(pool):
        raise ConfigError(f"number of games must be between 1 and {len(pool)} (the held-out secrets), got {n}")
    return seeded_secrets(n, seed, answers=pool)


def build(options: dict, system_prompt: str | None, path: str | None, base_dir: str) -> Task:
    del base_dir
    check_options("wordle", options, KNOWN_OPTIONS, path)
    mode = options.get("mode", "history")
    seed = _int_option(options, "seed", 0, 0)
    if mode == "history":
        rows = history_training_rows(_int_option(options, "num_games", 200, 1), seed,
                                     float(options.get("solver_share", 0.5)), _int_option(options, "max_openings", 2, 0))
        return Task(samples=samples_from_rows(_located(rows), system_prompt), default_rewards=_specs(HISTORY_REWARDS))
    if mode == "episode":
        from rftune.envs.wordle import WordleEnv, wordle_messages

        train = split_answers()[0]
        size = _int_option(options, "size", 500, 1)
        secrets = random.Random(seed).sample(train, min(size, len(train)))
        rows = [{"secret": s.upper(), "prompt": wordle_messages([])} for s in secrets]
        return Task(samples=samples_from_rows(_located(rows), system_prompt), default_rewards=_specs(EPISODE_REWARDS),
                    make_env=lambda example: WordleEnv())
    raise ConfigError(f"task.kwargs.mode: must be 'history' or 'episode', got {mode!r}")


def history_training_rows(num_games: int, seed: int, solver_share: float = 0.5, max_openings: int = 2) -> list[dict]:
    """History-mode rows from seeded reference games, without the held-out test secrets."""
    from rftune.envs.wordle import history_rows

    if not 0.0 <= solver_share <= 1.0:
        raise ConfigError(f"task.kwargs.solver_share: must be between 0 and 1, got {solver_share}")
    test = set(split_answers()[1])
    return [row for row in history_rows(num_games, seed, solver_share, max_openings)
            if row["secret"].lower() not in test]


def sft_training_rows(num_games: int, seed: int = 0, max_openings: int = 2,
                      detour_share: float = 0.0) -> list[dict]:
    """Solver traces (``{"messages": [...]}``) from seeded games on training secrets only, without duplicates."""
    from rftune.envs.wordle import sft_traces

    return sft_traces(num_games, seed, max_openings, exclude_secrets=split_answers()[1],
                      detour_share=detour_share)


def _located(rows: list[dict]):
    return ((f"wordle row {i}", row) for i, row in enumerate(rows))


def _specs(names: tuple[str, ...]) -> list[RewardSpec]:
    return [RewardSpec(name=name, weight=1.0) for name in names]


def _int_option(options: dict, key: str, default: int, low: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"task.kwargs.{key}: must be an integer >= {low}, got {value!r}")
    return value
