"""Typed run configuration: frozen dataclasses per stage, loaded from YAML plus ``key=value`` overrides.

Everything is validated once, at load, with messages a user can act on: an unknown key names the closest known
one, a wrong type names the key and the expected type, out-of-range values say the allowed range, and the batch
must be a multiple of ``generation.num_generations``. Core functions receive plain values, never this object.

YAML 1.1 reads ``yes``/``no``/``on``/``off`` as booleans, so ``train.cpu_kernels: off`` would arrive as False.
rftune's loader keeps such a word as written (a `BoolWord`): a string field (``cpu_kernels: off``) gets the text, a
boolean field (``lora.enabled: no``) and an untyped value (reward ``kwargs``) get the boolean YAML 1.1 means.
Only ``true``/``false`` are plain booleans. Overrides are read by the same loader.

TRL's ``GRPOConfig`` key names are read as aliases, each with a one-line notice (`rftune.trl_keys`).

Sections: ``model``, ``lora``, ``generation``, ``algorithm``, ``train``, ``rewards``, ``task``, ``sft`` (warm start
before GRPO), ``eval`` (held-out evaluation of every task), ``repository`` (registering finished runs) and
``sandbox`` (limits for running generated code).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import sys
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rftune.errors import ConfigError
from rftune.trl_keys import translate_trl_keys


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = "smollm2-135m-instruct"  # hub id, local folder, *.gguf file, or the embedded default
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weights' dtype
    adapter: str | None = None  # start from this PEFT adapter (e.g. an SFT warm start)


@dataclass(frozen=True)
class LoraConfig:
    enabled: bool = True  # False = full fine-tuning (a frozen copy serves as the KL reference)
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"


@dataclass(frozen=True)
class ConstraintConfig:
    """``generation.constraint``: structured generation (`rftune.constraints`); set exactly one kind."""

    regex: str | None = None  # the reply (or span) matches this regular expression
    choices: list[str] | None = None  # ... is one of these strings
    choices_file: str | None = None  # ... is one of this file's lines (relative: from the config's folder)
    case: Literal["keep", "upper", "lower"] = "keep"  # choices rewritten to upper or lower case
    json_schema: dict[str, Any] | str | None = None  # ... is JSON valid under this schema (mapping, text, .json file)
    grammar: str | None = None  # ... matches this Lark grammar (text or a .lark file)
    gbnf: str | None = None  # ... matches this GBNF grammar (text or a .gbnf file)
    span: list[str] | None = None  # [open, close]: constrain only the text between these tags; None = the reply


@dataclass(frozen=True)
class GenerationConfig:
    num_generations: int = 8  # G: completions sampled per prompt
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filtering
    backend: Literal["auto", "cpu-fast", "hf", "vllm"] = "auto"  # see rftune.rollout.generation
    constraint: ConstraintConfig | None = None  # structured generation; None = unconstrained


@dataclass(frozen=True)
class AlgorithmConfig:
    beta: float = 0.04  # KL coefficient; 0 = no reference model pass at all
    kl_ratio_weighted: bool = False  # KL term times the importance ratio (TRL 1.16's use_bias_correction_kl)
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2  # > epsilon_low is DAPO's clip-higher
    loss_type: str = "grpo"  # a name in rftune.algo.losses.AGGREGATORS: grpo, bnpo, dr_grpo, dapo
    importance_sampling_level: str = "token"  # rftune.algo.losses.RATIOS: token, sequence (= GSPO)
    scale_rewards: str = "group"  # rftune.algo.advantages.SCALERS: group, batch, none (= Dr. GRPO)
    advantage_eps: float = 1e-4
    num_iterations: int = 1  # mu: optimisation passes over each rollout batch
    mask_truncated_completions: bool = False  # completions with no EOS get no loss
    dynamic_sampling: bool = False  # DAPO: drop groups with equal rewards, sample more prompts
    max_resample_rounds: int = 3  # cap on extra sampling rounds per step under dynamic_sampling


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/default"
    max_steps: int = 100  # rollout steps; each does num_iterations optimizer updates
    batch_size: int = 32  # completions per step (prompts per step = batch_size / num_generations)
    gradient_accumulation_steps: int = 1  # micro-batches per step (batch_size must divide evenly)
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    warmup_steps: int = 0
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    max_grad_norm: float = 1.0  # 0 = no clipping
    device: str = "auto"  # auto (CUDA when available, else CPU), cpu, cuda or cuda:N
    bf16: bool | Literal["auto"] = False  # bfloat16 matmuls in every pass; "auto": where the device has native bf16
    cpu_kernels: Literal["auto", "off"] = "auto"  # rftune's CPU speed layer on CPU runs (never on a GPU); off = plain
    seed: int = 42
    shuffle: bool = True  # prompts in a seeded shuffled order each epoch; false: in the task's order (a curriculum)
    save_steps: int = 10  # checkpoint every N steps (0 = only at the end)
    save_total_limit: int = 2  # keep this many latest checkpoints
    resume: bool = False  # continue from the latest checkpoint in output_dir
    threads: int = 0  # torch CPU threads (0 = torch's default)
    dist_timeout: int = 300  # seconds a collective waits for the other ranks (torchrun jobs) before failing
    fsdp: bool = False  # full fine-tuning under torchrun: weights, gradients and optimizer state sharded (FSDP2)
    log_completions: bool = True  # write completions.jsonl
    eval_steps: int = 0  # every N steps score the held-out subset (eval section), logged as eval/<metric>; 0 = off
    eval_before_train: bool = False  # also score it once before the first step (logged as step 0)
    report_to: list[Literal["jsonl", "tensorboard", "wandb", "trackio"]] = field(
        default_factory=lambda: ["jsonl"])  # trackers


@dataclass(frozen=True)
class RewardSpec:
    name: str  # built-in name, "package.module:function" or "path/file.py:function"
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the function


@dataclass(frozen=True)
class RewardsConfig:
    functions: list[RewardSpec] = field(default_factory=list)  # empty = the task's default rewards
    on_error: Literal["raise", "skip"] = "raise"
    timeout: float | None = None  # seconds one reward call may take (None = no limit); past it the call failed
    on_unavailable: Literal["stop", "skip_step", "continue"] = "stop"  # a step where a reward function had no value
    # for any completion, or most judge calls failed: stop = skip its update and stop after max_unavailable_steps
    # such steps in a row; skip_step = skip its update; continue = train on it; each one is announced
    max_unavailable_steps: int = 3  # on_unavailable=stop: consecutive unavailable steps before the run stops


@dataclass(frozen=True)
class TaskConfig:
    name: str = "arithmetic"  # a built-in task, or "dataset" for a user file
    path: str | None = None  # JSONL / CSV / Parquet file with a `prompt` column (task "dataset")
    eval_path: str | None = None  # held-out rows in a file like task.path (tasks "dataset", "summarize")
    system_prompt: str | None = None  # overrides the task's system prompt
    max_prompt_tokens: int | None = None  # longest prompt in tokens; None = the model's context - max_new_tokens
    on_long_prompt: Literal["error", "truncate", "drop"] = "error"  # a longer prompt: an error naming its row, cut
    # to fit (the start of its last message goes), or left out
    kwargs: dict[str, Any] = field(default_factory=dict)  # task options (e.g. size, seed, datasets)


@dataclass(frozen=True)
class SftConfig:
    """Supervised warm start (LoRA from the ``lora`` section) on chat JSONL; loss on assistant tokens only."""

    enabled: bool = False  # `rftune train` runs SFT first (or reuses its finished adapter), then GRPO from it
    data: str | None = None  # chat JSONL of {"messages": [...]} rows, or "task" (or the task's name): the task's own
    # SFT data (its generated traces or worked examples); None = the task's own where it has some
    num_examples: int = 256  # data=task: worked examples of training rows written by the task (e.g. arithmetic)
    kwargs: dict[str, Any] = field(default_factory=dict)  # data=task: options of the task's generated traces
    output_dir: str | None = None  # where the adapter and metrics go; None = <train.output_dir>/sft
    epochs: int = 1  # passes over the data
    max_steps: int = 0  # stop after this many optimizer steps (0 = run all epochs)
    batch_size: int = 4  # conversations per optimizer step
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up, then constant
    max_length: int = 1024  # tokens per conversation; longer ones are cut from the right
    seed: int = 0  # trace generation, shuffling and LoRA initialisation


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation (`rftune eval`, and during training every ``train.eval_steps``)."""

    num_rows: int = 200  # held-out rows per player (0 = all); the same rows for every player
    seed: int = 0  # which held-out rows (or secrets of games) and the seeds of sampled completions
    max_new_tokens: int | None = None  # per completion; None = generation.max_new_tokens
    num_samples: int = 0  # k sampled completions per row for pass@k / mean@k (0 = greedy only)
    split: float | None = None  # share of rows held out by a seeded hash of their content; None = the task's
    split_seed: int = 0  # seed of that hash (changing it changes the training rows too)
    correct_reward: str | None = None  # verifiable tasks: reward whose value >= 1 is correct; None = the task's
    bootstrap: int = 1000  # bootstrap resamples of the 95% intervals
    batch_size: int = 64  # rows (or games) whose completions are generated in one batch
    kwargs: dict[str, Any] = field(default_factory=dict)  # options of the task's own evaluation (e.g. games played)


@dataclass(frozen=True)
class RepositoryConfig:
    """The model repository (`rftune models`): where finished runs are registered, and under which name."""

    register: bool = True  # `rftune train` / `rftune sft` register each finished run as a version
    name: str | None = None  # the versions' name; None = the run folder's name (last part of train.output_dir)
    path: str | None = None  # folder (relative: from the config's); None = $RFTUNE_REPOSITORY, else the cache's


@dataclass(frozen=True)
class SandboxConfig:
    """How the code rewards run programs (`rftune.sandbox`)."""

    require_isolation: bool = False  # refuse to run when namespaces (no network, no outside files) are unavailable
    workers: int = 4  # programs run at once
    cache_size: int = 4096  # results kept, by (code, tests, limits)
    timeout_s: float = 10.0  # wall clock per program, tests included
    cpu_s: int = 5  # CPU seconds per program
    memory_mb: int = 512  # address space per program
    max_processes: int = 16  # processes per program (its own included)
    max_file_mb: int = 16  # size of any one file it writes
    disk_mb: int = 32  # size of its directory (isolated mode)
    max_open_files: int = 64


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    repository: RepositoryConfig = field(default_factory=RepositoryConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    base_dir: str = "."  # folder of the config file; relative paths inside it resolve from here

    @property
    def prompts_per_step(self) -> int:
        return self.train.batch_size // self.generation.num_generations


RANGES = {
    "generation.num_generations": (2, None), "generation.max_new_tokens": (1, None),
    "generation.temperature": (1e-6, None), "generation.top_p": (1e-6, 1.0), "generation.top_k": (0, None),
    "algorithm.beta": (0.0, None), "algorithm.epsilon_low": (0.0, 1.0), "algorithm.epsilon_high": (0.0, None),
    "algorithm.num_iterations": (1, None), "algorithm.advantage_eps": (0.0, None),
    "algorithm.max_resample_rounds": (0, None), "train.max_steps": (1, None), "train.batch_size": (1, None),
    "train.gradient_accumulation_steps": (1, None), "train.learning_rate": (0.0, None),
    "train.warmup_steps": (0, None), "train.max_grad_norm": (0.0, None), "train.save_steps": (0, None),
    "train.save_total_limit": (1, None), "train.threads": (0, None), "train.dist_timeout": (1, None),
    "train.eval_steps": (0, None), "lora.r": (1, None), "task.max_prompt_tokens": (1, None),
    "rewards.timeout": (0.001, None), "rewards.max_unavailable_steps": (1, None),
    "lora.dropout": (0.0, 1.0),
    "sft.num_examples": (1, None), "sft.epochs": (1, None), "sft.max_steps": (0, None),
    "sft.batch_size": (1, None),
    "sft.learning_rate": (0.0, None), "sft.weight_decay": (0.0, None), "sft.warmup_steps": (0, None),
    "sft.max_length": (8, None), "eval.max_new_tokens": (1, None),
    "eval.batch_size": (1, None), "eval.num_rows": (0, None), "eval.num_samples": (0, None),
    "eval.split": (0.0, 0.99), "eval.bootstrap": (1, None),
    "sandbox.workers": (1, None), "sandbox.cache_size": (0, None), "sandbox.timeout_s": (0.1, None),
    "sandbox.cpu_s": (1, None), "sandbox.memory_mb": (64, None), "sandbox.max_processes": (1, None),
    "sandbox.max_file_mb": (1, None), "sandbox.disk_mb": (1, None), "sandbox.max_open_files": (16, None),
}


class BoolWord(str):
    """A YAML 1.1 boolean word (yes, no, on, off in any case) kept as the text the user wrote."""

    def as_bool(self) -> bool:
        return self.lower() in ("yes", "on")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that yes/no/on/off stay `BoolWord`s (see the module docstring)."""

    def construct_yaml_bool(self, node):
        text = self.construct_scalar(node)
        return text.lower() == "true" if text.lower() in ("true", "false") else BoolWord(text)


_Loader.add_constructor("tag:yaml.org,2002:bool", _Loader.construct_yaml_bool)


def read_yaml(text: str) -> Any:
    """Parse YAML the way config files and overrides are parsed (yes/no/on/off kept as `BoolWord`)."""
    return yaml.load(text, Loader=_Loader)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (optional), apply ``section.key=value`` overrides, validate, and return a Config."""
    raw: dict[str, Any] = {}
    base_dir = "."
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
        base_dir = str(path.resolve().parent)
    for item in overrides or []:
        apply_override(raw, item)
    _say_notices(translate_trl_keys(raw))
    raw.setdefault("base_dir", base_dir)
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested dict (the Python API's equivalent of a YAML file)."""
    raw = copy.deepcopy(raw)
    _say_notices(translate_trl_keys(raw))
    config = build_dataclass(Config, move_deprecated(raw), "")
    validate(config)
    return config


# old key -> where it lives now (a task's own options); the old key still works, with a warning
MOVED_KEYS = {"sft.num_games": "sft.kwargs.num_games", "sft.detour_share": "sft.kwargs.detour_share",
              "eval.num_games": "eval.kwargs.num_games", "eval.sampled": "eval.kwargs.sampled"}


def move_deprecated(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with each moved key (`MOVED_KEYS`) put under its new name, warning (FutureWarning) for each."""
    raw = dict(raw)
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        if not isinstance(raw.get(section), dict) or key not in raw[section]:
            continue
        raw[section] = dict(raw[section])
        value = raw[section].pop(key)
        options = raw[section].get("kwargs") or {}
        if not isinstance(options, dict):
            raise ConfigError(f"{section}.kwargs: expected a mapping, got {type(options).__name__} {options!r}")
        name = new.rpartition(".")[2]
        if name in options:
            raise ConfigError(f"{old} and {new} are both set; keep {new} ({old} is its old name)")
        warnings.warn(f"config key {old} is deprecated; use {new}", FutureWarning, stacklevel=3)
        raw[section]["kwargs"] = {**options, name: value}
    return raw
def _say_notices(notices: list[str]) -> None:
    for notice in notices:
        print(notice, file=sys.stderr)


def apply_override(raw: dict, item: str) -> None:
    """Set ``a.b.c=value`` in the nested dict; the value is parsed as YAML (so 0.5, true, [a, b] work)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = _override_value(item, value)


def _override_value(item: str, text: str) -> Any:
    """An override's value read as YAML (0.5, true, null, [a, b], {k: v}); text that YAML would read as a mapping
    or a block without being written in brackets stays the text, so ``task.system_prompt=Example: 2 + 2`` is a
    string, not a mapping (nor an error)."""
    if not text.strip():
        return ""
    bracketed = text.lstrip()[:1] in ("[", "{")
    try:
        value = read_yaml(text)
    except yaml.YAMLError as exc:
        if bracketed:
            raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from exc
        return text
    return text if isinstance(value, (dict, list)) and not bracketed else value


def to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (what is written to the run's resolved config)."""
    return dataclasses.asdict(config)


def build_dataclass(cls, raw: Any, where: str):
    """Recursively build dataclass `cls` from `raw`, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = (f"; did you mean {_join(where, close[0])!r}?" if close
                    else f"; known keys: {', '.join(sorted(fields))}")
            raise ConfigError(f"unknown config key {_join(where, key)!r}{hint}")
    values = {key: _convert(hints[key], value, _join(where, key)) for key, value in raw.items()}
    return cls(**values)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _convert(hint, value, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(typing.get_args(hint), value, where)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return str(value) if isinstance(value, BoolWord) else value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_hint,) = typing.get_args(hint)
        return [_convert(item_hint, item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return {key: _plain(item) for key, item in value.items()}
    return _convert_scalar(hint, value, where)


def _plain(value: Any) -> Any:
    """An untyped value with every `BoolWord` turned into the boolean YAML 1.1 gives it."""
    if isinstance(value, BoolWord):
        return value.as_bool()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _convert_union(options, value, where: str):
    if value is None and type(None) in options:
        return None
    errors = []
    for option in (o for o in options if o is not type(None)):
        try:
            return _convert(option, value, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(f"{where}: " + " or ".join(error.removeprefix(f"{where}: ") for error in errors))


def _convert_scalar(hint, value, where: str):
    if hint is Any:
        return _plain(value)
    if isinstance(value, BoolWord):
        if hint is str:
            return str(value)
        if hint is bool:
            return value.as_bool()
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads 1e-5 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    quote = " (YAML reads yes, no, on, off as booleans: quote the text)" if hint is str and isinstance(value, bool) \
        else ""
    raise ConfigError(f"{where}: expected {hint.__name__}, got {_shown(value)}{quote}")


def _shown(value: Any) -> str:
    """A value as an error message shows it, with its type: a `BoolWord` as the text written."""
    return f"str {str(value)!r}" if isinstance(value, BoolWord) else f"{type(value).__name__} {value!r}"


DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # a repository name (the store checks names against it too)


def validate(config: Config) -> None:
    """Cross-field and range checks, with messages that say what to change."""
    if not DEVICE_PATTERN.match(config.train.device):
        raise ConfigError(f"train.device: {config.train.device!r} is not a device; use auto, cpu, cuda or cuda:N")
    _check_registered(config.algorithm)
    for key, (low, high) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value is None:
            continue
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(f"{key}: must be {bound}, got {value}")
    g, b = config.generation.num_generations, config.train.batch_size
    if b % g:
        raise ConfigError(f"train.batch_size={b} is not a multiple of generation.num_generations={g}; "
                          f"use e.g. train.batch_size={max(g, b // g * g)}")
    accum = config.train.gradient_accumulation_steps
    if b % accum:
        raise ConfigError(f"train.batch_size={b} is not divisible by train.gradient_accumulation_steps={accum}")
    if config.algorithm.epsilon_high < config.algorithm.epsilon_low:
        raise ConfigError("algorithm.epsilon_high must be >= algorithm.epsilon_low (clip-higher widens the top)")
    _check_fsdp(config)
    if config.generation.constraint is not None:
        from rftune.constraints import check_constraint

        check_constraint(config.generation.constraint, config.base_dir)
    name = config.repository.name
    if name is not None and not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(f"repository.name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter "
                          "or digit (versions are referred to as NAME@VERSION)")


def _check_fsdp(config: Config) -> None:
    """train.fsdp shards a fully fine-tuned model; a LoRA adapter is small and is data-parallel without it."""
    if not config.train.fsdp:
        return
    if config.lora.enabled:
        raise ConfigError("train.fsdp shards full fine-tuning: set lora.enabled: false (LoRA runs data-parallel "
                          "under torchrun without train.fsdp)")
    if config.generation.backend in ("cpu-fast", "vllm"):
        raise ConfigError(f"generation.backend={config.generation.backend} cannot generate from a sharded model; "
                          "use generation.backend=auto (transformers generate) with train.fsdp")


def _check_registered(algorithm: AlgorithmConfig) -> None:
    """The algorithm's names must be in the registries of `rftune.algo` (the one list of what exists)."""
    from rftune.algo.advantages import SCALERS
    from rftune.algo.losses import AGGREGATORS, RATIOS

    for key, registry in (("loss_type", AGGREGATORS), ("importance_sampling_level", RATIOS),
                          ("scale_rewards", SCALERS)):
        registry.check(getattr(algorithm, key))
