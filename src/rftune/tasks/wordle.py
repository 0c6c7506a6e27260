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
    curriculum    history mode: ``late_first`` takes the rows from late-game positions (fewest answers left) to
                  openings (`rftune.envs.wordle.datasets.late_first`; needs ``train.shuffle: false``, and a run that
                  reaches the openings takes about as many prompts as there are rows); ``none`` (default): any order
    prompt_style  ``course`` (default): the user turn lists the feedback lines, as in the course. ``summary``: the
                  lines, then what they establish (placed letters as ``_ R _ _ E``, letters in the word not yet
                  placed, letters not in the word; `rftune.envs.wordle.prompts`). The style holds for every prompt
                  of the task: training rows, episodes, SFT traces and `rftune eval`.

SFT data (``sft.data: task``, the default for this task): solver traces, see `sft_training_rows`. Options
(``sft.kwargs``): ``num_games`` (seeded hard-mode solver games whose moves become traces, default 100),
``detour_share`` (chance a solver move is replaced by a mistake, to teach recovery; 0 to 0.9, default 0) and
``reasoning`` (what the trace's ``<think>`` holds: ``solver``, the solver's explanation with the words that still
fit, the default; ``known_letters``, only the facts the feedback establishes, which the model can write itself)
and ``spell_guess`` (``<guess>S P L I T</guess>``, one token per letter; the game reads it as SPLIT; default false).

Evaluation (`rftune eval`): every player plays the same held-out games, with the solver and the random player as
references (`rftune.envs.wordle.model_eval`). Options (``eval.kwargs``): ``num_games`` (default 50; ``--games``)
and ``sampled`` (sample replies with the generation settings instead of greedy decoding; ``--sampled``).

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
from rftune.errors import ConfigError
from rftune.tasks import DeferredSamples, Task, check_options
from rftune.tasks.data import samples_from_rows

TEST_SIZE = 315  # answers held out for evaluation (2,315 answers: 2,000 for training, 315 for testing)
SPLIT_SEED = 20240601
KNOWN_OPTIONS = {"mode", "num_games", "size", "seed", "solver_share", "max_openings", "prompt_style", "curriculum"}
CURRICULA = ("none", "late_first")
SFT_OPTIONS = {"num_games": 100, "detour_share": 0.0, "reasoning": "solver", "spell_guess": False}  # sft.kwargs
EVAL_OPTIONS = {"num_games": 50, "sampled": False}  # eval.kwargs and their defaults
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
    from rftune.envs.wordle.prompts import prompt_style_option

    style = prompt_style_option(options)
    curriculum = _curriculum_option(options)
    hooks = {"sft_traces": functools.partial(solver_traces, prompt_style=style),
             "evaluator": functools.partial(evaluate_games, prompt_style=style)}
    if mode == "history":
        num_games, max_openings = _int_option(options, "num_games", 200, 1), _int_option(options, "max_openings", 2, 0)
        solver_share = float(options.get("solver_share", 0.5))
        _check_share(solver_share)
        rows = functools.partial(history_training_rows, num_games, seed, solver_share, max_openings, style,
                                 curriculum)
        samples = DeferredSamples(lambda: samples_from_rows(_located(rows()), system_prompt))
        return Task(samples=samples, default_rewards=_specs(HISTORY_REWARDS), ordered=curriculum != "none", **hooks)
    if curriculum != "none":
        raise ConfigError(f"task.kwargs.curriculum: orders history-mode rows; mode {mode!r} has none to order")
    if mode == "episode":
        from rftune.envs.wordle import WordleEnv, wordle_messages

        train = split_answers()[0]
        size = _int_option(options, "size", 500, 1)
        secrets = random.Random(seed).sample(train, min(size, len(train)))
        rows = [{"secret": s.upper(), "prompt": wordle_messages([], style=style)} for s in secrets]
        return Task(samples=samples_from_rows(_located(rows), system_prompt), default_rewards=_specs(EPISODE_REWARDS),
                    make_env=lambda example: WordleEnv(prompt_style=style), **hooks)
    raise ConfigError(f"task.kwargs.mode: must be 'history' or 'episode', got {mode!r}")


def _curriculum_option(options: dict) -> str:
    value = options.get("curriculum", "none")
    value = "none" if value is False else value  # YAML reads `curriculum: off` / `no` as false
    if value not in CURRICULA:
        raise ConfigError(f"task.kwargs.curriculum: must be one of {', '.join(CURRICULA)}, got {value!r}")
    return value


def history_training_rows(num_games: int, seed: int, solver_share: float = 0.5, max_openings: int = 2,
                          prompt_style: str = "course", curriculum: str = "none") -> list[dict]:
    """History-mode rows from seeded reference games, without the held-out test secrets, in curriculum order if
    one is given."""
    from rftune.envs.wordle import history_rows
    from rftune.envs.wordle.datasets import late_first

    _check_share(solver_share)
    test = set(split_answers()[1])
    rows = [row for row in history_rows(num_games, seed, solver_share, max_openings, prompt_style)
            if row["secret"].lower() not in test]
    return late_first(rows, seed) if curriculum == "late_first" else rows


def _check_share(solver_share: float) -> None:
    if not 0.0 <= solver_share <= 1.0:
        raise ConfigError(f"task.kwargs.solver_share: must be between 0 and 1, got {solver_share}")


def sft_training_rows(num_games: int, seed: int = 0, max_openings: int = 2, detour_share: float = 0.0,
                      prompt_style: str = "course", reasoning: str = "solver", spell_guess: bool = False) -> list[dict]:
    """Solver traces (``{"messages": [...]}``) from seeded games on training secrets only, without duplicates."""
    from rftune.envs.wordle import sft_traces

    return sft_traces(num_games, seed, max_openings, exclude_secrets=split_answers()[1],
                      detour_share=detour_share, prompt_style=prompt_style, reasoning=reasoning,
                      spell_guess=spell_guess)


def solver_traces(options: dict, seed: int, prompt_style: str = "course") -> list[list[dict]]:
    """The task's SFT data: solver traces with the ``sft.kwargs`` options (see the module docstring)."""
    from rftune.envs.wordle.datasets import REASONING

    options = _checked("sft.kwargs", options, SFT_OPTIONS)
    num_games = _int_option(options, "num_games", 100, 1, "sft.kwargs")
    detour_share = options["detour_share"]
    if isinstance(detour_share, bool) or not isinstance(detour_share, (int, float)) or not 0 <= detour_share <= 0.9:
        raise ConfigError(f"sft.kwargs.detour_share: must be a number between 0 and 0.9, got {detour_share!r}")
    if options["reasoning"] not in REASONING:
        raise ConfigError(f"sft.kwargs.reasoning: must be one of {', '.join(REASONING)}, got {options['reasoning']!r}")
    if not isinstance(options["spell_guess"], bool):
        raise ConfigError(f"sft.kwargs.spell_guess: must be true or false, got {options['spell_guess']!r}")
    rows = sft_training_rows(num_games, seed, detour_share=float(detour_share), prompt_style=prompt_style,
                             reasoning=options["reasoning"], spell_guess=options["spell_guess"])
    return [row["messages"] for row in rows]


def evaluate_games(request, prompt_style: str = "course"):
    """`rftune eval` for Wordle: each player plays the same held-out games, solver and random player alongside."""
    from rftune.envs.wordle.model_eval import evaluate_models, report_table
    from rftune.tasks import EvalOutcome

    options = _checked("eval.kwargs", request.options, EVAL_OPTIONS)
    num_games, sampled = options["num_games"], options["sampled"]
    if isinstance(num_games, bool) or not isinstance(num_games, int):
        raise ConfigError(f"eval.kwargs.num_games: must be an integer, got {num_games!r}")
    if not isinstance(sampled, bool):
        raise ConfigError(f"eval.kwargs.sampled: must be true or false, got {sampled!r}")
    secrets = held_out_secrets(num_games, request.seed)
    params = request.params
    report = evaluate_models(request.players, secrets, max_new_tokens=params.max_new_tokens, sampled=sampled,
                             params=params, batch_size=request.batch_size,
                             seed=request.seed, dtype=request.dtype, device=request.device,
                             resamples=request.bootstrap, config=request.config, prompt_style=prompt_style)
    rows = {row["player"]: row for row in report["rows"]}
    return EvalOutcome(report, report_table(report), rows, sampled)


def _checked(section: str, options: dict, known: dict) -> dict:
    """`options` over the defaults in `known`; an unknown key is an error naming the section."""
    unknown = set(options) - set(known)
    if unknown:
        raise ConfigError(f"{section}: task 'wordle' takes {sorted(known)}; got {sorted(unknown)}")
    return {**known, **options}


def _located(rows: list[dict]):
    return ((f"wordle row {i}", row) for i, row in enumerate(rows))


def _specs(names: tuple[str, ...]) -> list[RewardSpec]:
    import rftune.envs.wordle.rewards  # noqa: F401  (registers the wordle_* rewards under their names)

    return [RewardSpec(name=name, weight=1.0) for name in names]


def _int_option(options: dict, key: str, default: int, low: int, section: str = "task.kwargs") -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{section}.{key}: must be an integer >= {low}, got {value!r}")
    return value
