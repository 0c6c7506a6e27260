"""Held-out evaluation of every (single-turn) task: players on the same rows with the same seeds, with intervals.

A *player* is a model, an optional adapter and the config it runs with (so a player may differ from the others by
overrides, e.g. ``task.system_prompt``). Every player answers the same held-out rows (`rftune.tasks.task_from_config`,
a seeded subset of ``eval.num_rows``); a player whose overrides change which rows are held out is refused, since
its figures could not be paired.

Per row and player: one greedy completion scored by every reward function (``rewards/<name>``) and the weighted
total (``reward``), its length in tokens (``length``), and for verifiable tasks (a task's ``correct_reward``, or
``eval.correct_reward``) ``accuracy`` = the greedy completion is correct (that reward >= 1). With
``eval.num_samples`` = n > 0, n completions are also sampled per row (seeded per batch, the same seeds for every
player): ``mean@n`` = the share correct, ``pass@k`` for k = 1, 2, 4, ... up to n (the unbiased estimator,
`rftune.evaluation.stats.pass_at_k`), and ``reward@n`` = the mean total reward of the samples.

Every player decodes under the same ``generation.constraint`` (compiled for its own tokenizer; players whose
constraints differ are refused), and the report names it (``constraint``).

Each figure is the mean over rows with a 95% bootstrap interval; every player after the first also gets the paired
difference against the first (its per-row differences, bootstrapped). `evaluate` returns the report (JSON-ready),
`format_table` prints it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rftune.config import Config
from rftune.errors import ConfigError
from rftune.evaluation.stats import estimate, paired_difference, pass_at_k
from rftune.rewards import reward_functions, score_completions, weighted_total
from rftune.rewards.resources import RewardResources
from rftune.rollout.constrained import constrained, constraint_description
from rftune.rollout.generation import (
    SamplingParams,
    encode_prompts,
    eos_token_ids,
    fit_prompts,
    generate_ids,
    in_process_backend,
    rollout_batch,
)
from rftune.runtime.atomic_io import write_text_atomic
from rftune.tasks import Task, task_from_config
from rftune.types import RolloutBatch, Sample


@dataclass(frozen=True)
class Player:
    """Who answers: a model, an optional adapter, and the config (with the player's overrides) it runs with."""

    name: str
    model: str
    adapter: str | None
    config: Config
    variant: str | None = None  # the override this player runs under (``--variant``), if any


@dataclass(frozen=True)
class Setup:
    """What a player's rows are scored with (built from its config)."""

    samples: list[Sample]
    reward_functions: list
    correct_reward: str | None
    reward_timeout: float | None = None  # rewards.timeout: seconds one reward call may take


def held_out_rows(task: Task, config: Config) -> list[Sample]:
    """The seeded subset of ``eval.num_rows`` of the task's held-out samples (all of them with 0)."""
    rows = task.eval_samples
    if not rows:
        raise ConfigError(f"task {config.task.name!r} has no held-out rows: set task.eval_path (a file of rows) or "
                          "eval.split (a share of the rows held out by a hash of their content)")
    count = config.eval.num_rows
    if count and count < len(rows):
        rows = [rows[i] for i in sorted(random.Random(config.eval.seed).sample(range(len(rows)), count))]
    return rows


def player_setup(config: Config, resources: RewardResources | None = None) -> tuple[Setup, list[str]]:
    """(the player's rows and rewards, the rows' content keys). The rewards get their sandbox and judges from
    `resources` (shared by the players of one evaluation), else from new ones built from the config."""
    task = task_from_config(config)
    samples = held_out_rows(task, config)
    resources = resources or RewardResources(dataclasses.asdict(config.sandbox))
    functions = resources.bind(reward_functions(config.rewards.functions or task.default_rewards, config.base_dir))
    if not functions:
        raise ConfigError("no reward functions to evaluate with: set rewards.functions")
    correct = config.eval.correct_reward or task.correct_reward
    if correct is not None and correct not in [f.name for f in functions]:
        raise ConfigError(f"eval.correct_reward: {correct!r} is not one of the reward functions "
                          f"({', '.join(f.name for f in functions)})")
    return Setup(samples, functions, correct, config.rewards.timeout), [task.content_key(s.example) for s in samples]


def evaluate(players: Sequence[Player], device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """Evaluate every player on the same held-out rows; the report (see the module docstring)."""
    if len({repr(p.config.generation.constraint) for p in players}) > 1:
        raise ConfigError("the players' generation.constraint settings differ; every player of an evaluation "
                          "decodes under the same constraint, so that the comparison is fair (evaluate them apart)")
    setups, first_keys = [], None
    resources = RewardResources(dataclasses.asdict(players[0].config.sandbox)) if players else None
    for player in players:
        setup, keys = player_setup(player.config, resources)
        if first_keys is not None and keys != first_keys:
            raise ConfigError(f"player {player.name!r}: its overrides change the held-out rows, so it cannot be "
                              "compared row by row with the others; override prompts or generation settings only")
        first_keys = keys
        setups.append(setup)
    per_row = {p.name: _player_rows(p, s, device, progress) for p, s in zip(players, setups)}
    return build_report(players, per_row, first_keys, players[0].config.eval)


def build_report(players: Sequence[Player], per_row: dict[str, dict], row_keys: list[str], cfg) -> dict:
    """Estimates per player and metric, and paired differences against the first player."""
    first = players[0].name
    summaries = []
    for index, player in enumerate(players):
        values = per_row[player.name]["metrics"]
        entry = {"player": player.name, "model": player.model, "adapter": player.adapter, "variant": player.variant,
                 "metrics": {m: estimate(v, cfg.bootstrap, cfg.seed) for m, v in values.items()}}
        if index:
            base = per_row[first]["metrics"]
            entry["difference"] = {m: paired_difference(v, base[m], cfg.bootstrap, cfg.seed)
                                   for m, v in values.items() if m in base}
        summaries.append(entry)
    return {"task": players[0].config.task.name, "rows": len(row_keys), "row_keys": row_keys,
            "constraint": constraint_description(players[0].config),
            "num_samples": cfg.num_samples, "seed": cfg.seed, "baseline": first, "players": summaries,
            "per_row": per_row}


def _player_rows(player: Player, setup: Setup, device, progress: bool) -> dict:
    """Per-row metric values and the greedy completions of one player."""
    from rftune.model.loading import load_model_and_tokenizer

    config = player.config
    model, tokenizer = load_model_and_tokenizer(player.model, dtype=config.model.dtype, adapter=player.adapter)
    model.to(device).eval()
    params = constrained(sampling_params(config, device), config, model, tokenizer)
    setup = _fit_rows(setup, tokenizer, model, params.max_new_tokens, config.task)
    try:
        return score_player(model, tokenizer, setup, params, config.eval, config.rewards.on_error,
                            desc=player.name, progress=progress)
    finally:
        del model


def _fit_rows(setup: Setup, tokenizer, model, max_new_tokens: int, task) -> Setup:
    """The setup with every held-out prompt fitted to the model's context by ``task.on_long_prompt`` (see
    `rftune.rollout.generation.fit_prompts`); every player keeps every row, so ``drop`` is an error here."""
    policy = "error" if task.on_long_prompt == "drop" else task.on_long_prompt
    context = getattr(model.config, "max_position_embeddings", None)
    fitted, _, _ = fit_prompts(setup.samples, tokenizer, context, max_new_tokens, task.max_prompt_tokens, policy)
    return dataclasses.replace(setup, samples=fitted)


def sampling_params(config: Config, device) -> SamplingParams:
    """Sampling settings of evaluation: the generation section's, ``eval.max_new_tokens``, in-process backend."""
    from rftune.runtime.device import bf16_enabled, cpu_kernels_enabled

    gen = config.generation
    backend = in_process_backend(gen.backend, cpu_kernels_enabled(config.train.cpu_kernels, torch.device(device)))
    return SamplingParams(1, config.eval.max_new_tokens or gen.max_new_tokens, gen.temperature, gen.top_p,
                          gen.top_k, bf16=bf16_enabled(config.train.bf16, device), backend=backend)


def score_player(model, tokenizer, setup: Setup, params: SamplingParams, cfg, on_error: str = "raise",
                 desc: str = "eval", progress: bool = True) -> dict:
    """Greedy (and, with ``cfg.num_samples``, sampled) completions of `model` for every row, scored.

    Returns ``{"metrics": {metric: [value per row]}, "completions": [greedy text per row]}`` (NaN = not
    applicable). Sampling is seeded per batch from ``cfg.seed``, so every model gets the same seeds.
    """
    from tqdm import tqdm

    batches = [setup.samples[i:i + cfg.batch_size] for i in range(0, len(setup.samples), cfg.batch_size)]
    metrics: dict[str, list[float]] = {}
    completions: list[str] = []
    with tqdm(total=len(setup.samples) * (2 if cfg.num_samples else 1), desc=desc, unit="row", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        for number, batch in enumerate(batches):
            greedy = _complete(model, tokenizer, batch, params, 1, greedy=True)
            completions += greedy.completions
            _extend(metrics, _greedy_metrics(greedy, setup, on_error))
            bar.update(len(batch))
            if cfg.num_samples:
                torch.manual_seed(cfg.seed * 1_000_003 + number)
                sampled = _complete(model, tokenizer, batch, params, cfg.num_samples, greedy=False)
                _extend(metrics, _sampled_metrics(sampled, setup, cfg.num_samples, on_error))
                bar.update(len(batch))
    return {"metrics": metrics, "completions": completions}


def _complete(model, tokenizer, samples: list[Sample], params: SamplingParams, count: int,
              greedy: bool) -> RolloutBatch:
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [s.prompt for s in samples])
    eos_ids = eos_token_ids(tokenizer, model)
    params = dataclasses.replace(params, num_generations=count)
    completion_ids = generate_ids(model, tokenizer, prompt_ids, prompt_mask, params, params.max_new_tokens, eos_ids,
                                  greedy=greedy)  # [P*count, Tc]
    return rollout_batch(tokenizer, samples, prompt_ids, prompt_mask, completion_ids, eos_ids, count,
                         params.max_new_tokens)


def _score(batch: RolloutBatch, setup: Setup, on_error: str) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, K] per-function rewards, NaN = not applicable; [B] weighted totals)."""
    per_func, _ = score_completions(setup.reward_functions, [s.prompt for s in batch.samples], batch.completions,
                                    [s.example for s in batch.samples], on_error, setup.reward_timeout,
                                    completion_ids=batch.generated_ids())
    return per_func, weighted_total(per_func, [f.weight for f in setup.reward_functions])


def _correct(per_func: torch.Tensor, setup: Setup) -> torch.Tensor:
    """[B] 1.0 where the correctness reward is >= 1 (0.0 also where it is not applicable)."""
    column = per_func[:, [f.name for f in setup.reward_functions].index(setup.correct_reward)]  # [B]
    return (column >= 1.0).float()


def _greedy_metrics(batch: RolloutBatch, setup: Setup, on_error: str) -> dict[str, list[float]]:
    per_func, total = _score(batch, setup, on_error)
    metrics = {"reward": total.tolist()}
    for k, rf in enumerate(setup.reward_functions):
        metrics[f"rewards/{rf.name}"] = per_func[:, k].tolist()
    if setup.correct_reward is not None:
        metrics["accuracy"] = _correct(per_func, setup).tolist()
    metrics["length"] = batch.completion_mask.sum(dim=1).float().tolist()
    return metrics


def _sampled_metrics(batch: RolloutBatch, setup: Setup, n: int, on_error: str) -> dict[str, list[float]]:
    per_func, total = _score(batch, setup, on_error)
    metrics = {f"reward@{n}": total.view(-1, n).mean(dim=1).tolist()}  # [P]
    if setup.correct_reward is not None:
        correct = _correct(per_func, setup).view(-1, n).sum(dim=1).long().tolist()  # [P] correct samples per row
        metrics[f"mean@{n}"] = [c / n for c in correct]
        for k in pass_ks(n):
            metrics[f"pass@{k}"] = [pass_at_k(n, c, k) for c in correct]
    return metrics


def pass_ks(n: int) -> list[int]:
    """The k of pass@k reported for n samples: 1, 2, 4, ... and n."""
    ks = [2 ** i for i in range(n.bit_length()) if 2 ** i < n]
    return ks + [n]


def _extend(into: dict[str, list[float]], values: dict[str, list[float]]) -> None:
    for key, column in values.items():
        into.setdefault(key, []).extend(column)


def metric_order(names) -> list[str]:
    """Metrics in reading order: accuracy, pass@k, mean@n, rewards, length."""
    def rank(name: str):
        for position, prefix in enumerate(("accuracy", "pass@", "mean@", "reward@", "reward", "rewards/", "length")):
            if name.startswith(prefix):
                return position, int(name[5:]) if prefix == "pass@" else 0, name
        return 99, 0, name
    return sorted(names, key=rank)


def format_table(report: dict) -> str:
    """Metrics x players as ``mean [low, high]``, each later player followed by its paired difference against the
    first (``name - base``)."""
    header, body = comparison_table(report, format_interval)
    constraint = f"; every player constrained to {report['constraint']}" if report.get("constraint") else ""
    return (f"{report['task']}: {report['rows']} held-out rows, 95% bootstrap intervals{constraint}\n"
            + _table(header, body))


def comparison_table(report: dict, cell: Callable[..., str], minus: str = "-") -> tuple[list[str], list[list[str]]]:
    """Header and rows of metrics x players, each later player followed by its paired difference against the first;
    ``cell(figure)`` and ``cell(difference, signed=True)`` render the figures (text here, HTML in the report)."""
    players = report["players"]
    header = ["metric"]
    for p in players:
        header += [p["player"]] + ([f"{p['player']} {minus} {report['baseline']}"] if "difference" in p else [])
    body = []
    for metric in metric_order({m for p in players for m in p["metrics"]}):
        row = [metric]
        for p in players:
            row.append(cell(p["metrics"].get(metric)))
            if "difference" in p:
                row.append(cell(p["difference"].get(metric), signed=True))
        body.append(row)
    return header, body


def format_interval(value: dict | None, signed: bool = False) -> str:
    """``mean [low, high]`` of a figure with its interval (``-`` when there is none)."""
    if value is None:
        return "-"
    fmt = "+.3f" if signed else ".3f"
    return f"{value['mean']:{fmt}} [{value['low']:{fmt}}, {value['high']:{fmt}}]"


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    rows = [header, ["-" * w for w in widths], *body]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     .rstrip() for row in rows)


def write_report(report: dict, path: str | Path) -> Path:
    """Write an evaluation report as JSON (atomically: temporary file, then rename)."""
    return write_text_atomic(path, json.dumps(report, ensure_ascii=False, indent=1))


def summary_row(report: dict, player: str) -> dict:
    """One player's means (and intervals) as a flat row, as attached to its repository version."""
    (entry,) = [p for p in report["players"] if p["player"] == player]
    row: dict[str, Any] = {"player": player}
    for metric in metric_order(entry["metrics"]):
        value = entry["metrics"][metric]
        if value is not None and not math.isnan(value["mean"]):
            row[metric] = value["mean"]
            row[f"{metric} interval"] = [value["low"], value["high"]]
    return row
