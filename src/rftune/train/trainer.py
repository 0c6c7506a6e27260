"""The GRPO training loop, readable top to bottom.

Each step:
    1. rollout     sample G completions for each of P prompts (or play G episodes per prompt in an environment)
    2. rewards     score every completion with every reward function; R = weighted sum. A step whose rewards are
                   unavailable (a function with no value at all, most judgments failed) is announced, and by
                   rewards.on_unavailable its update skipped or the run stopped (`rftune.rewards.availability`)
    3. advantages  group-relative; with dynamic sampling, groups with equal rewards are replaced first
    4. reference   log-probs under the reference policy (adapters disabled / frozen copy), only if beta > 0
    5. update      num_iterations passes of clipped, KL-regularised policy-gradient updates, micro-batched
    6. record      metrics.jsonl, completions.jsonl, progress line, atomic checkpoint every save_steps
    7. evaluate    every train.eval_steps (and before the first step with train.eval_before_train): the held-out
                   subset scored, logged as eval/<metric> records (`GRPOTrainer.evaluate`)

With num_iterations = 1 the old policy *is* the current one: its log-probs are the detached current ones (ratio
exactly 1, no extra forward pass). With num_iterations > 1 the log-probs of the first pass (taken before any
update of this batch) are kept as the old log-probs for the later passes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rftune.algo.advantages import compute_advantages, zero_std_groups
from rftune.algo.losses import BatchNorms, policy_loss
from rftune.config import Config, to_dict
from rftune.constraints import compile_constraint
from rftune.cpu import enable_training_kernels, parts_in_force, report_parts
from rftune.errors import ConfigError, RewardError, StorageError
from rftune.judges.base import JUDGE_KEYS
from rftune.model.loading import apply_lora, load_model, load_tokenizer, resolve_model_path
from rftune.repository.runs import begin_run, register_grpo, register_sft
from rftune.rewards import (
    RewardFunction,
    RewardLogs,
    TrainerState,
    as_reward_function,
    reward_functions,
    score_batch,
    unique_names,
    weighted_total,
)
from rftune.rewards.availability import UnavailableSteps, unavailable_reasons
from rftune.rewards.resources import RewardResources
from rftune.rollout.episodes import env_rollout
from rftune.rollout.generation import (
    BACKENDS,
    SamplingParams,
    eos_token_ids,
    fit_prompts,
    in_process_backend,
    resolve_backend,
    sample_completions,
)
from rftune.runtime.atomic_io import write_folder
from rftune.runtime.counters import add_counts
from rftune.runtime.device import autocast, bf16_enabled, cpu_kernels_enabled, resolve_device, run_summary
from rftune.runtime.distributed import (
    barrier,
    combine_metrics,
    gather_objects,
    gather_rows,
    init_world,
    launched_world,
    max_int,
    process_device,
    sum_,
    sum_gradients,
)
from rftune.runtime.run_lock import RunLock, stale_note
from rftune.runtime.sharding import full_tensor, model_state, optimizer_state, shard
from rftune.runtime.tracking import JsonlLog, Trackers, check_trackers, print_progress
from rftune.tasks import Task, task_from_config
from rftune.tasks.data import PromptStream, RankShard, samples_from_rows
from rftune.train import checkpoint
from rftune.train.logprobs import completion_logprobs
from rftune.types import RolloutBatch, Sample, concat_batches


@dataclass
class ScoredBatch:
    rollout: RolloutBatch
    rewards_per_func: torch.Tensor  # [B, K], NaN = not applicable
    rewards: torch.Tensor  # [B]
    failures: dict[str, int]
    stats: dict[str, int]  # sandbox/* and judge/* counts while scoring
    logged: list[dict[str, Any]]  # [B] the columns reward functions logged with log_extra, per row
    logged_metrics: dict[str, list[float]]  # what they logged with log_metric: name -> values


class GRPOTrainer:
    """GRPO fine-tuning of a causal LM. Build from a `Config`; rewards and data may be passed as Python objects.

    ``reward_funcs``: callables (see `rftune.rewards.base`) or `RewardFunction`s; they replace the config's.
    ``dataset``: rows (dicts with a ``prompt``) replacing the config's task data.
    ``model``/``tokenizer``: an already-loaded model to train instead of ``config.model``.
    With ``sft.enabled`` the SFT stage runs first (its finished adapter is reused), as in ``rftune train``; not with
    a model passed in (an error says so). With ``register_run`` and ``repository.register`` (the defaults) the
    finished run is registered in the model repository, as ``rftune train`` does (the command registers its runs
    itself, with their SFT stage as parent, and passes ``register_run=False``).
    """

    def __init__(self, config: Config, reward_funcs: Sequence[Callable | RewardFunction] | None = None,
                 dataset: Sequence[dict] | None = None, model=None, tokenizer=None, rollout_fn: Callable | None = None,
                 progress: bool = True, register_run: bool = True):
        self.progress = progress
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.run_start = begin_run(config) if register_run and config.repository.register else None
        self.parent = self.run_start.parent if self.run_start else None
        if config.sft.enabled:
            config = self._sft_stage(config, model)
        self.config = config
        torch.manual_seed(config.train.seed)  # LoRA initialisation is random: same seed, same run
        device = resolve_device(config.train.device)  # before any model is loaded: a bad device fails fast
        self.world = init_world(device, config.train.dist_timeout)
        self.device = process_device(device, self.world)
        self._check_world()
        self.output_dir = Path(config.train.output_dir)
        self.lock = RunLock(self.output_dir) if self.world.is_main else None  # one run per folder
        barrier(self.world)
        check_trackers(config.train.report_to)  # a tracker that is not installed fails fast too
        self.bf16 = bf16_enabled(config.train.bf16, self.device)
        self.fsdp = config.train.fsdp and self.world.distributed  # one process has nothing to shard
        self.cpu_kernels = cpu_kernels_enabled(config.train.cpu_kernels, self.device) and not self.fsdp
        self.task = self._build_task(dataset)
        self.resources = RewardResources(dataclasses.asdict(config.sandbox))  # the sandbox and judges of this run
        self.reward_functions = self.resources.bind(self._build_rewards(reward_funcs))
        self.tokenizer = tokenizer or load_tokenizer(config.model.name_or_path)
        self.model, self.ref_model = self._build_models(model)
        self._check_prompts()
        self.backend = resolve_backend(config.generation.backend, self.model, self.cpu_kernels)
        self.constraint = compile_constraint(config.generation.constraint, self.tokenizer,
                                             eos_token_ids(self.tokenizer, self.model), config.base_dir)
        self._say(run_summary(self.device, config.train.bf16, self.backend if rollout_fn is None else "custom",
                              config.model.dtype) + self._speed_layer_summary(rollout_fn is None))
        if self.fsdp:
            self._say(f"train.fsdp: weights, gradients and optimizer state sharded over {self.world.size} processes")
        self.rollout_fn, self.sync_weights = (rollout_fn, None) if rollout_fn else self._default_rollout()
        self.optimizer, self.scheduler = self._build_optimizer()
        self.step_count = 0
        self.stream_position = 0
        self.unavailable_steps = UnavailableSteps(config.rewards.on_unavailable, config.rewards.max_unavailable_steps)
        self._eval_setup = None  # the held-out rows and rewards of `evaluate`, built at its first call
        if config.train.eval_steps or config.train.eval_before_train:
            self._check_eval_rows()
        resumed_from = self._maybe_resume()
        self.metrics_log = self.completions_log = None
        if self.world.is_main:  # rank 0 writes the run's files; the others compute
            stale = stale_note(self.lock.stale_holder)
            if stale:
                self._say(stale)
            self.metrics_log = Trackers(self.output_dir, config.train.report_to, to_dict(config),
                                        keep_through_step=self.step_count)
            self.completions_log = JsonlLog(self.output_dir / "completions.jsonl", keep_through_step=self.step_count)
            if resumed_from is None:
                (self.output_dir / "config.yaml").write_text(_yaml_dump(to_dict(config)))

    def _sft_stage(self, config: Config, model) -> Config:
        """The config continuing the SFT stage's adapter (the stage run now unless finished before)."""
        from rftune.train.sft import finished_adapter, sft_data_path, sft_output_dir, with_sft_adapter

        finished = finished_adapter(config)
        if finished is not None and config.model.adapter and Path(config.model.adapter).resolve() == finished.resolve():
            return config  # `rftune train` ran the stage and continues from its adapter
        if model is not None:
            raise ConfigError("sft.enabled: the SFT stage trains model.name_or_path, not a model passed in; run "
                              "rftune.train.sft.run_sft(config) first, or set sft.enabled: false")
        world = launched_world()
        if world.distributed and finished is None:
            raise ConfigError("sft.enabled: the SFT stage runs in one process: run it first (`rftune sft CONFIG`), "
                              "then start the torchrun job, which reuses its adapter")
        chained = with_sft_adapter(config, self.progress)
        if self.run_start is not None and world.is_main:
            self.parent = register_sft(self.run_start, config, Path(chained.model.adapter), sft_data_path(config),
                                       sft_output_dir(config), reuse=finished is not None)
            if self.progress:
                print(f"SFT stage: {self.parent.ref}", flush=True)
        return chained

    def _check_world(self) -> None:
        prompts, size = self.config.prompts_per_step, self.world.size
        if prompts % size:
            raise ConfigError(f"{prompts} prompts per step (train.batch_size={self.config.train.batch_size} / "
                              f"generation.num_generations={self.config.generation.num_generations}) cannot be split "
                              f"into whole groups over {size} processes; make the prompts per step a multiple of "
                              f"{size}")

    # ----------------------------------------------------------------------------------------------- setup
    def _build_task(self, dataset) -> Task:
        cfg = self.config.task
        if dataset is not None:
            rows = ((f"dataset row {i}", row) for i, row in enumerate(dataset))
            return Task(samples=samples_from_rows(rows, cfg.system_prompt))
        task = task_from_config(self.config)  # held-out rows are left out of training
        if task.ordered and self.config.train.shuffle:
            raise ConfigError(f"task {cfg.name!r}: its rows are in curriculum order, which a shuffled "
                              "prompt order would undo; set train.shuffle: false")
        return task

    def _check_prompts(self) -> None:
        """Every prompt fits the context (`rftune.rollout.generation.fit_prompts`), and a step's prompts are distinct
        rows."""
        cfg, task, changed = self.config, self.task, 0
        context = getattr(self.model.config, "max_position_embeddings", None)
        for key in ("samples", "eval_samples"):
            fitted, count, limit = fit_prompts(getattr(task, key), self.tokenizer, context,
                                               cfg.generation.max_new_tokens, cfg.task.max_prompt_tokens,
                                               cfg.task.on_long_prompt)
            task, changed = replace(task, **{key: fitted}), changed + count
        self.task = task
        if changed:
            done = "truncated" if cfg.task.on_long_prompt == "truncate" else "left out"
            self._say(f"task.on_long_prompt={cfg.task.on_long_prompt}: {done} {changed} rows whose prompt is {limit}")
        if len(self.task.samples) < cfg.prompts_per_step:
            raise ConfigError(f"the task has {len(self.task.samples)} training rows, fewer than the "
                              f"{cfg.prompts_per_step} prompts of one step (train.batch_size / "
                              "generation.num_generations): a step would repeat rows; add rows or lower "
                              "train.batch_size")
        reached = cfg.train.max_steps * cfg.prompts_per_step
        if self.task.ordered and reached < len(self.task.samples):
            self._say(f"the task's curriculum has {len(self.task.samples)} rows in order; train.max_steps="
                      f"{cfg.train.max_steps} x {cfg.prompts_per_step} prompts per step reach only the first {reached}")

    def _build_rewards(self, reward_funcs) -> list[RewardFunction]:
        if reward_funcs is not None:
            functions = unique_names([as_reward_function(f) for f in reward_funcs])
        else:
            functions = reward_functions(self.config.rewards.functions or self.task.default_rewards,
                                         Path(self.config.base_dir))
        if not functions:
            raise ConfigError("no reward functions: set rewards.functions (this task has no default rewards)")
        return functions

    def _build_models(self, model):
        cfg = self.config
        if model is None:
            model = load_model(cfg.model.name_or_path, dtype=cfg.model.dtype, adapter=cfg.model.adapter)
        ref_model = None
        if cfg.lora.enabled:
            if cfg.model.adapter:  # continue training the given adapter (e.g. after SFT)
                for name, param in model.named_parameters():
                    param.requires_grad = "lora_" in name
            else:
                model = apply_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
        model.to(self.device)
        if not cfg.lora.enabled and cfg.algorithm.beta > 0:
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        for network in (model, ref_model):
            if network is not None and self.fsdp:
                shard(network, self.world)
            if network is not None and self.cpu_kernels:
                enable_training_kernels(network, self.bf16)
        model.train()
        return model, ref_model

    def _speed_layer_summary(self, own_rollouts: bool) -> str:
        """The CPU speed layer's parts in force, read back from the model (a part that fits but is not in force
        warns): for the start line."""
        if not self.cpu_kernels:
            return ""
        chosen = own_rollouts and self.config.generation.backend in ("auto", "cpu-fast")
        parts = parts_in_force(self.model, self.bf16, self.backend if chosen else None)
        return f"; cpu kernels: {report_parts(parts)}"

    def _default_rollout(self) -> tuple[Callable, Callable | None]:
        """(rollout function, weight sync after each optimizer step or None): environment episodes for multi-turn
        tasks, else sampling with the configured backend; a separate engine (vLLM) gets the new weights."""
        if self.task.make_env:
            if self.fsdp:
                raise ConfigError("train.fsdp: multi-turn tasks are not supported (the ranks of a sharded model "
                                  "generate in lockstep, and their episodes take different numbers of turns)")
            return functools.partial(env_rollout, make_env=self.task.make_env), None
        backend = BACKENDS[self.backend]
        if not backend.in_process:
            sampler = backend(resolve_model_path(self.config.model.name_or_path), self.config.model.dtype, self.model,
                              self.constraint)
            return sampler, sampler.sync_weights
        return sample_completions, None

    def _build_optimizer(self):
        cfg = self.config.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                      weight_decay=cfg.weight_decay)
        total = cfg.max_steps * self.config.algorithm.num_iterations
        schedule = _lr_lambda(cfg.lr_scheduler, cfg.warmup_steps, total)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def _check_eval_rows(self) -> None:
        """Evaluation during training needs held-out rows and a known correctness reward: checked at start."""
        if not self.task.eval_samples:
            raise ConfigError(f"train.eval_steps: task {self.config.task.name!r} has no held-out rows here; set "
                              "task.eval_path or eval.split (a dataset passed in has none)")
        correct = self.config.eval.correct_reward
        if correct is not None and correct not in [f.name for f in self.reward_functions]:
            raise ConfigError(f"eval.correct_reward: {correct!r} is not one of the reward functions")

    def _maybe_resume(self) -> Path | None:
        """With train.resume: restore the newest complete checkpoint (naming the newer ones skipped); a folder with
        no checkpoint at all starts from step 0 with a notice. Without it, a folder that holds checkpoints is
        refused."""
        if not self.config.train.resume:
            existing = checkpoint.list_checkpoints(self.output_dir)
            if existing:
                raise ConfigError(f"train.output_dir {self.output_dir} already holds checkpoints (latest "
                                  f"{existing[-1].name}); resume with --resume or pick another train.output_dir")
            self.output_dir.mkdir(parents=True, exist_ok=True)
            return None
        latest, skipped = checkpoint.find_resumable(self.output_dir)
        for path, problems in skipped:
            self._say(f"--resume: skipping {path}: {problems}")
        if latest is None:
            if skipped:
                raise StorageError(f"--resume: no complete checkpoint in {checkpoint.checkpoint_root(self.output_dir)}"
                                   f" (every one is damaged, see above); start a new train.output_dir")
            self._say(f"--resume: {self.output_dir} holds no checkpoint yet; starting from step 0")
            self.output_dir.mkdir(parents=True, exist_ok=True)
            return None
        self._check_resumable(latest)
        state = checkpoint.load_checkpoint(latest, self.model, self.optimizer, self.scheduler,
                                           lora=self.config.lora.enabled, rank=self.world.rank,
                                           world_size=self.world.size)
        self.step_count, self.stream_position = state["step"], state["stream_position"]
        self._say(f"resumed from {latest} (step {self.step_count})")
        if state.get("world_size", 1) != self.world.size:
            self._say(f"the checkpoint was made by {state.get('world_size', 1)} process(es) and this run has "
                      f"{self.world.size}: training continues from the same step and data position, but the sampled "
                      "completions will differ from an uninterrupted run")
        return latest

    def _check_resumable(self, latest: Path) -> None:
        """The checkpoint was saved with the same sharding and the same shape keys as this run."""
        saved_fsdp = checkpoint.read_trainer_state(latest).get("fsdp", False)
        if saved_fsdp != self.fsdp:
            raise ConfigError(f"{latest} was saved {'with' if saved_fsdp else 'without'} sharding (train.fsdp under "
                              f"torchrun); resume it {'with' if saved_fsdp else 'without'} sharding too")
        changes = checkpoint.shape_changes(latest, to_dict(self.config))
        if changes:
            raise ConfigError(f"--resume: {latest} was saved with other values of keys that cannot change on resume "
                              f"({'; '.join(changes)}); set them back, or train from scratch in a new "
                              "train.output_dir")

    # -------------------------------------------------------------------------------------------- the loop
    def train(self) -> list[dict[str, Any]]:
        """Run until train.max_steps; returns the metrics of the steps run now."""
        cfg = self.config.train
        stream = RankShard(PromptStream(len(self.task.samples), cfg.seed, self.stream_position, cfg.shuffle),
                           self.world.rank, self.world.size)
        history = []
        try:
            if cfg.eval_before_train and self.step_count == 0:
                self.evaluate()
            while self.step_count < cfg.max_steps:
                history.append(self.step(stream))
                if cfg.eval_steps and self.step_count % cfg.eval_steps == 0:
                    self.evaluate()
                if self.step_count == cfg.max_steps or (cfg.save_steps and self.step_count % cfg.save_steps == 0):
                    self.save_checkpoint(stream)
            weights = model_state(self.model) if self.fsdp else None  # gathered by every rank
            if self.world.is_main:
                write_folder(self.output_dir / "final", functools.partial(self._save_final, weights=weights),
                             "the final adapter/weights")
                if self.run_start is not None:
                    self._say(f"registered {register_grpo(self.run_start, self.config, self, self.parent).ref}")
            barrier(self.world)
        finally:
            for log in (self.metrics_log, self.completions_log):
                if log is not None:
                    log.close()
            if self.lock is not None:
                self.lock.release()
        return history

    def _save_final(self, folder: Path, weights: dict | None) -> None:
        self.model.save_pretrained(folder, safe_serialization=True, state_dict=weights)
        self.tokenizer.save_pretrained(folder)

    def step(self, stream) -> dict[str, Any]:
        """One GRPO step: rollout, rewards, advantages, reference, update, record."""
        start = time.perf_counter()
        self.step_count += 1
        torch.manual_seed(self.config.train.seed * 100_003 + self.step_count + 7_919 * self.world.rank)
        scored, rollout_metrics = self._collect(stream)
        reward_metrics = self._reward_metrics(scored)
        unavailable = self._unavailable(scored, reward_metrics)
        advantages, adv_metrics = self._advantages(scored.rewards)  # [B] this rank's rows
        t0 = time.perf_counter()
        if self.unavailable_steps.skip_update(unavailable):
            train_metrics = {"update_skipped": 1}
        else:
            train_metrics = self._update(scored.rollout, advantages.to(self.device))
            train_metrics["time/update"] = time.perf_counter() - t0 - train_metrics["time/reference"]
        rollout_metrics["time/train"] = time.perf_counter() - t0  # reference + update
        metrics = {"step": self.step_count, **reward_metrics, **adv_metrics, **rollout_metrics,
                   **train_metrics, "lr": self.scheduler.get_last_lr()[0]}
        if unavailable:
            metrics["rewards/unavailable"] = 1
        metrics["time/step"] = time.perf_counter() - start
        tokens = sum_(scored.rollout.completion_mask.sum(), self.world).item()
        metrics = combine_metrics(gather_objects(metrics, self.world))
        metrics["tokens_per_s"] = tokens / metrics["time/step"]
        self._record(metrics, scored, advantages)
        if unavailable:
            self.unavailable_steps.announce(self.step_count, unavailable, speak=self.world.is_main)
        return metrics

    def _unavailable(self, scored: ScoredBatch, reward_metrics: dict[str, float]) -> list[str]:
        """Why this step's rewards are unavailable, over all ranks (see `rftune.rewards.availability`)."""
        values = sum_((~torch.isnan(scored.rewards_per_func)).sum(dim=0).to(self.device), self.world)  # [K]
        judged = [reward_metrics.get("judge/calls", 0) + reward_metrics.get("judge/cache_hits", 0),
                  reward_metrics.get("judge/failures", 0) + reward_metrics.get("judge/parse_failures", 0)]
        judgments, failed = sum_(torch.tensor(judged, device=self.device), self.world).tolist()
        return unavailable_reasons([rf.name for rf in self.reward_functions], values.tolist(),
                                   scored.rewards.shape[0] * self.world.size, judgments, failed)

    def _advantages(self, rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Group-relative advantages of this rank's rows, computed on the whole batch's rewards (in one process
        its own), so batch-wide scaling sees every rank's groups."""
        alg, size = self.config.algorithm, rewards.shape[0]
        everyone = gather_rows(rewards, self.world)  # [B * world], rank blocks in order
        advantages, metrics = compute_advantages(everyone, self.config.generation.num_generations,
                                                 alg.scale_rewards, alg.advantage_eps)
        return advantages[self.world.rank * size:(self.world.rank + 1) * size], metrics

    # ---------------------------------------------------------------------------------- rollout and scoring
    def _collect(self, stream) -> tuple[ScoredBatch, dict[str, float]]:
        """Sample and score P groups; under dynamic sampling replace equal-reward groups, within a cap."""
        g = self.config.generation.num_generations
        wanted = self.prompts_per_rank
        timings = {"time/generation": 0.0, "time/reward": 0.0}
        positions = stream.next_positions(wanted)
        scored = self._sample_and_score([self.task.samples[i] for i in stream.take(wanted)], positions, timings)
        metrics = {}
        if self.config.algorithm.dynamic_sampling:  # frac_zero_std (advantages) is that of the batch trained on
            metrics["dynamic_sampling/frac_zero_std_sampled"] = zero_std_groups(scored.rewards, g).float().mean().item()
            scored, rounds = self._fill_informative(scored, stream, timings)
            metrics["dynamic_sampling/rounds"] = rounds
        metrics.update(timings)
        return scored, metrics

    def _sample_and_score(self, samples: list[Sample], positions: list[int],
                          timings: dict[str, float]) -> ScoredBatch:
        """Sample each prompt's group, seeded by its global stream position (so by neither rank nor batch), and
        score it."""
        gen = self.config.generation
        seeds = tuple(self.config.train.seed * 1_000_003 + position for position in positions)
        params = SamplingParams(gen.num_generations, gen.max_new_tokens, gen.temperature, gen.top_p, gen.top_k,
                                bf16=self.bf16, backend=in_process_backend(self.backend, self.cpu_kernels),
                                seeds=seeds, constraint=self.constraint)
        t0 = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        rollout = self.rollout_fn(self.model, self.tokenizer, samples, params)
        self.model.train(was_training)
        t1 = time.perf_counter()
        examples = [dict(s.example, episode=e) for s, e in zip(rollout.samples, rollout.episodes)] \
            if rollout.episodes else [s.example for s in rollout.samples]
        logs = RewardLogs()
        scores = score_batch(self.reward_functions, [s.prompt for s in rollout.samples], rollout.completions,
                             examples, self.config.rewards.on_error, self.config.rewards.timeout,
                             completion_ids=rollout.generated_ids(),
                             state=TrainerState(self.step_count - 1, self.config.train.max_steps), logs=logs)
        rewards = weighted_total(scores.rewards_per_func, [f.weight for f in self.reward_functions])  # [B]
        timings["time/generation"] += t1 - t0
        timings["time/reward"] += time.perf_counter() - t1
        return ScoredBatch(rollout, scores.rewards_per_func, rewards, scores.failures, scores.stats,
                           _rows_of(logs.columns, rollout.size), logs.metrics)

    def _fill_informative(self, scored: ScoredBatch, stream, timings) -> tuple[ScoredBatch, int]:
        """DAPO dynamic sampling: keep groups whose rewards differ; sample more prompts until P groups or the cap.

        If the cap is reached first, the batch is topped up with equal-reward groups (zero advantage) so its size
        stays P * G.
        """
        g, wanted = self.config.generation.num_generations, self.prompts_per_rank
        kept, spare = [], []
        failures, stats, logged_metrics = [scored.failures], [scored.stats], [scored.logged_metrics]
        rounds = 0
        while scored is not None:
            informative = ~zero_std_groups(scored.rewards, g)  # [P']
            for group, ok in enumerate(informative.tolist()):
                (kept if ok else spare).append(_group(scored, group, g))
            needed = max(0, wanted - len(kept))
            most = max_int(needed, self.world)  # every rank takes as many from the stream: positions stay equal
            if most == 0 or rounds >= self.config.algorithm.max_resample_rounds:
                break
            rounds += 1
            # ranks of a sharded model generate in lockstep: every rank samples `most` groups
            count = most if self.fsdp else needed
            positions = stream.next_positions(most)[:count]
            indices = stream.take(most)[:count]
            scored = self._sample_and_score([self.task.samples[i] for i in indices], positions,
                                            timings) if indices else None
            failures.append(scored.failures if scored is not None else {})
            stats.append(scored.stats if scored is not None else {})
            logged_metrics.append(scored.logged_metrics if scored is not None else {})
        chosen = (kept + spare)[:wanted]
        merged = ScoredBatch(concat_batches([c.rollout for c in chosen], self.tokenizer.pad_token_id),
                             torch.cat([c.rewards_per_func for c in chosen]), torch.cat([c.rewards for c in chosen]),
                             add_counts(failures), add_counts(stats), [row for c in chosen for row in c.logged],
                             _merge_lists(logged_metrics))
        return merged, rounds

    # ----------------------------------------------------------------------------------------------- update
    def _update(self, rollout: RolloutBatch, advantages: torch.Tensor) -> dict[str, float]:
        """num_iterations optimisation passes over the rollout batch, micro-batched; returns mean metrics."""
        cfg, alg = self.config, self.config.algorithm
        mask = rollout.completion_mask.clone()  # [B, Tc]
        if alg.mask_truncated_completions:
            mask[rollout.truncated] = 0
        accum = cfg.train.gradient_accumulation_steps
        chunks = torch.arange(rollout.size).chunk(accum)
        world = self.world  # every normaliser spans the whole batch of all ranks, so the ranks' losses add up to it
        micro_tokens = sum_(torch.stack([mask[rows].sum() for rows in chunks]), world).tolist()  # [accum] all ranks
        norms = BatchNorms(rows=rollout.size * world.size, tokens=int(sum(micro_tokens)), micro_batches=len(chunks),
                           max_completion_length=max_int(rollout.completion_budget or cfg.generation.max_new_tokens,
                                                         world))
        t0 = time.perf_counter()
        # the constrained policy is the policy: every pass scores under the masks the sampler was under
        allowed = self.constraint.replay(rollout.completion_ids, rollout.completion_mask) \
            if self.constraint is not None else None  # [B, Tc, W] bit words
        t1 = time.perf_counter()
        ref_logprobs = [self._reference_logprobs(rollout, rows, allowed) for rows in chunks] if alg.beta > 0 else None
        collected: list[dict[str, float]] = [{"time/reference": time.perf_counter() - t1}]
        if allowed is not None:
            collected.append({"time/constraint_replay": t1 - t0})
        old_logprobs: list[torch.Tensor] = []
        for iteration in range(alg.num_iterations):
            for index, rows in enumerate(chunks):
                with self._autocast():
                    logprobs, entropy = completion_logprobs(
                        self.model, rollout.prompt_ids[rows], rollout.prompt_mask[rows], rollout.completion_ids[rows],
                        rollout.attention_mask[rows], cfg.generation.temperature, with_entropy=iteration == 0,
                        allowed=allowed[rows] if allowed is not None else None)
                if iteration == 0:
                    old_logprobs.append(logprobs.detach())
                loss, metrics = policy_loss(
                    logprobs, old_logprobs[index], ref_logprobs[index] if ref_logprobs else None, advantages[rows],
                    mask[rows], dataclasses.replace(norms, micro_batch_tokens=int(micro_tokens[index])),
                    loss_type=alg.loss_type, importance_sampling_level=alg.importance_sampling_level,
                    epsilon_low=alg.epsilon_low, epsilon_high=alg.epsilon_high, beta=alg.beta,
                    kl_ratio_weighted=alg.kl_ratio_weighted)
                loss.backward()
                metrics["loss"] = loss.item()
                if entropy is not None:
                    metrics["entropy"] = (entropy * mask[rows]).sum().item() / max(mask[rows].sum().item(), 1)
                collected.append(metrics)
            collected.append({"grad_norm": self._optimizer_step()})
        summary = _mean_metrics(collected)
        summary["loss"] = summary.get("loss", 0.0) * len(chunks)  # micro-batch losses add up to the batch loss
        return summary

    def _reference_logprobs(self, rollout: RolloutBatch, rows: torch.Tensor,
                            allowed: torch.Tensor | None) -> torch.Tensor:
        context = self.model.disable_adapter() if self.ref_model is None else contextlib.nullcontext()
        model = self.model if self.ref_model is None else self.ref_model
        with torch.no_grad(), context, self._autocast():
            logprobs, _ = completion_logprobs(model, rollout.prompt_ids[rows], rollout.prompt_mask[rows],
                                              rollout.completion_ids[rows], rollout.attention_mask[rows],
                                              self.config.generation.temperature,
                                              allowed=allowed[rows] if allowed is not None else None)
        return logprobs

    def _optimizer_step(self) -> float:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if not self.fsdp:  # (FSDP sums the sharded gradients itself)
            sum_gradients(params, self.world)  # each rank's loss is its share of the batch loss: gradients add up
        max_norm = self.config.train.max_grad_norm
        norm = full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.sync_weights is not None:  # a separate inference engine (vLLM) samples the next batch
            self.sync_weights(self.model)
        return float(norm)

    def _autocast(self):
        return autocast(self.device, self.bf16)

    # ----------------------------------------------------------------------------------------------- record
    def _reward_metrics(self, scored: ScoredBatch) -> dict[str, float]:
        rollout = scored.rollout
        lengths = rollout.completion_mask.sum(dim=1).float()  # [B]
        has_value = ~torch.isnan(scored.rewards_per_func).all(dim=1)  # [B] rows some function scored
        totals = scored.rewards[has_value]
        metrics = {"reward/mean": totals.mean().item() if totals.numel() else math.nan,
                   "reward/std": totals.std(unbiased=False).item() if totals.numel() else math.nan,
                   "completion_len/mean": lengths.mean().item(), "completion_len/min": lengths.min().item(),
                   "completion_len/max": lengths.max().item(),
                   "truncated_frac": rollout.truncated.float().mean().item()}
        if rollout.dead_ends is not None:  # completions the constraint left without an allowed token
            metrics["constraint/dead_ends"] = int(rollout.dead_ends.sum())
        for k, rf in enumerate(self.reward_functions):
            column = scored.rewards_per_func[:, k]
            valid = column[~torch.isnan(column)]
            metrics[f"rewards/{rf.name}/mean"] = valid.mean().item() if valid.numel() else math.nan
            metrics[f"rewards/{rf.name}/std"] = valid.std(unbiased=False).item() if valid.numel() else math.nan
            if scored.failures.get(rf.name):
                metrics[f"rewards/{rf.name}/errors"] = scored.failures[rf.name]
        for name, fn in self.task.completion_metrics.items():
            values = [fn(s.prompt, text, s.example) for s, text in zip(rollout.samples, rollout.completions)]
            metrics[f"task/{name}"] = sum(values) / len(values)
        if self.resources.sandbox is not None:  # programs run by the code rewards this step, by outcome, cache hits
            metrics.update(dict.fromkeys(self.resources.sandbox.stats.keys, 0))
        metrics.update(dict.fromkeys(JUDGE_KEYS, 0))  # judge calls made by the reward functions this step
        metrics.update(scored.stats)  # as scoring returned them (every round of the step's sampling added up)
        metrics.update({name: sum(values) / len(values) for name, values in scored.logged_metrics.items()})
        return metrics

    def _record(self, metrics: dict[str, Any], scored: ScoredBatch, advantages: torch.Tensor) -> None:
        """Rank 0 writes the step's metrics and every rank's completions (gathered in rank order)."""
        rows = []
        if self.config.train.log_completions:
            names = [rf.name for rf in self.reward_functions]
            rows = [{"step": self.step_count, "prompt": sample.prompt, "completion": text,
                     "rewards": {n: (None if math.isnan(v) else v) for n, v in zip(names, per_func.tolist())},
                     "reward": total, "advantage": adv, **({"logged": logged} if logged else {})}
                    for sample, text, per_func, total, adv, logged in zip(
                        scored.rollout.samples, scored.rollout.completions, scored.rewards_per_func,
                        scored.rewards.tolist(), advantages.tolist(), scored.logged)]
            rows = [row for part in gather_objects(rows, self.world) for row in part]
        if not self.world.is_main:
            return
        self.metrics_log.write([metrics])
        if rows:
            self.completions_log.write(rows)
            self.metrics_log.log_completions(self.step_count, rows)
        if self.progress:
            print_progress(metrics, self.config.train.max_steps)

    def evaluate(self) -> dict[str, float]:
        """Score the fixed held-out subset with the current policy (greedy, plus ``eval.num_samples`` samples) and
        log the means as ``eval/<metric>``, a metrics.jsonl record of the current step (see
        `rftune.evaluation.evaluate`)."""
        from rftune.evaluation.evaluate import Setup, held_out_rows, sampling_params, score_player

        config = self.config
        if self._eval_setup is None:
            self._eval_setup = Setup(held_out_rows(self.task, config), self.reward_functions,
                                     config.eval.correct_reward or self.task.correct_reward, config.rewards.timeout)
        params = replace(sampling_params(config, self.device), bf16=self.bf16,
                         backend=in_process_backend(self.backend, self.cpu_kernels), constraint=self.constraint)
        self.model.eval()
        try:
            scored = score_player(self.model, self.tokenizer, self._eval_setup, params, config.eval,
                                  config.rewards.on_error, desc="eval", progress=False)
        finally:
            self.model.train()
        record = {"step": self.step_count}
        for metric, values in scored["metrics"].items():
            applicable = [v for v in values if not math.isnan(v)]
            if applicable:
                record[f"eval/{metric}"] = sum(applicable) / len(applicable)
        if self.world.is_main:  # every rank scores the whole subset (no collective); rank 0 writes it
            self.metrics_log.write([record])
        self._say(" | ".join(f"{k} {v:.3f}" if k != "step" else f"eval at step {v}" for k, v in record.items()))
        return record

    def save_checkpoint(self, stream) -> Path:
        """Rank 0 writes the checkpoint (with every rank's random state); the others wait for it."""
        state = {"step": self.step_count, "stream_position": stream.position, "world_size": self.world.size,
                 "fsdp": self.fsdp}
        rng = gather_objects(checkpoint.rng_states(), self.world)
        gathered = (model_state(self.model), optimizer_state(self.model, self.optimizer)) if self.fsdp else (None, None)
        path = checkpoint.checkpoint_root(self.output_dir) / f"{checkpoint.PREFIX}{self.step_count:06d}"
        if self.world.is_main:
            path = checkpoint.save_checkpoint(self.output_dir, self.step_count, self.model, self.optimizer,
                                              self.scheduler, state, self.config.train.save_total_limit, rng,
                                              *gathered, config=to_dict(self.config))
        barrier(self.world)
        return path

    @property
    def prompts_per_rank(self) -> int:
        return self.config.prompts_per_step // self.world.size

    def _say(self, text: str) -> None:
        if self.progress and self.world.is_main:
            print(text, flush=True)


def _lr_lambda(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0
    return factor


def _group(scored: ScoredBatch, group: int, g: int) -> ScoredBatch:
    rows = list(range(group * g, (group + 1) * g))
    return ScoredBatch(scored.rollout.select(rows), scored.rewards_per_func[rows], scored.rewards[rows], {}, {},
                       [scored.logged[i] for i in rows], {})


def _rows_of(columns: dict[str, list], size: int) -> list[dict[str, Any]]:
    """log_extra's columns turned into one dict per row (a column must hold one value per completion)."""
    for name, values in columns.items():
        if len(values) != size:
            raise RewardError(f"log_extra({name!r}, ...) was given {len(values)} values for {size} completions")
    return [{name: values[i] for name, values in columns.items()} for i in range(size)]


def _merge_lists(parts: list[dict[str, list]]) -> dict[str, list]:
    merged: dict[str, list] = {}
    for part in parts:
        for key, values in part.items():
            merged.setdefault(key, []).extend(values)
    return merged


def _mean_metrics(records: list[dict[str, float]]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for record in records:
        for key, value in record.items():
            sums.setdefault(key, []).append(value)
    return {key: sum(values) / len(values) for key, values in sums.items()}


def _yaml_dump(data: dict) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False)
