"""TRL's ``GRPOConfig`` key names, read as aliases of rftune's keys (docs/from_trl.md is the table for people).

`translate_trl_keys` rewrites a raw config (a parsed YAML file plus overrides) in place: a TRL key at the top
level (a flat TRL YAML such as ``trl grpo --config`` reads), or inside the rftune section it belongs to
(``generation.max_completion_length``), moves to its rftune key, its value translated where TRL spells it
differently, and a one-line notice naming the rftune key is returned for each. A TRL key rftune has no
equivalent for is an error naming it; so is a TRL key given together with its rftune key.

Departures: ``per_device_train_batch_size`` counts completions per micro-batch in TRL; rftune's
``train.batch_size`` counts a whole step's completions, so it becomes that times
``gradient_accumulation_steps`` (one process). ``epsilon`` sets both clip bounds unless ``epsilon_high`` is given,
as in TRL. ``reward_weights`` weights ``rewards.functions`` in order, so those must be listed.
"""

from __future__ import annotations

from typing import Any

from rftune.errors import ConfigError

# TRL key -> rftune key, for keys that mean the same thing (values through VALUES where TRL spells them otherwise)
ALIASES = {
    "model_name_or_path": "model.name_or_path",
    "output_dir": "train.output_dir", "max_steps": "train.max_steps", "learning_rate": "train.learning_rate",
    "weight_decay": "train.weight_decay", "adam_beta1": "train.adam_beta1", "adam_beta2": "train.adam_beta2",
    "warmup_steps": "train.warmup_steps", "lr_scheduler_type": "train.lr_scheduler",
    "max_grad_norm": "train.max_grad_norm", "seed": "train.seed", "shuffle_dataset": "train.shuffle",
    "save_steps": "train.save_steps",
    "save_total_limit": "train.save_total_limit", "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "bf16": "train.bf16", "report_to": "train.report_to", "log_completions": "train.log_completions",
    "num_generations": "generation.num_generations", "max_completion_length": "generation.max_new_tokens",
    "temperature": "generation.temperature", "top_p": "generation.top_p", "top_k": "generation.top_k",
    "use_vllm": "generation.backend",
    "beta": "algorithm.beta", "num_iterations": "algorithm.num_iterations", "epsilon": "algorithm.epsilon_low",
    "epsilon_high": "algorithm.epsilon_high", "importance_sampling_level": "algorithm.importance_sampling_level",
    "scale_rewards": "algorithm.scale_rewards", "loss_type": "algorithm.loss_type",
    "mask_truncated_completions": "algorithm.mask_truncated_completions",
    "use_bias_correction_kl": "algorithm.kl_ratio_weighted",
    "per_device_train_batch_size": "train.batch_size", "reward_weights": "rewards.functions[*].weight",
}

# TRL keys that only change how often TRL prints: rftune logs every step, so they are read and have no effect
LOGGING_ONLY = {"logging_steps", "logging_first_step", "logging_strategy", "disable_tqdm", "run_name"}


def _report_to(value: Any) -> list[str]:
    names = [value] if isinstance(value, str) else list(value or [])
    return ["jsonl"] + [name for name in names if name not in ("none", "jsonl")]


VALUES = {  # TRL spelling -> rftune value
    "lr_scheduler_type": lambda v: "constant" if v == "constant_with_warmup" else v,
    "report_to": _report_to,
    "scale_rewards": lambda v: {True: "group", False: "none"}.get(v, v) if isinstance(v, bool) else v,
    "use_vllm": lambda v: "vllm" if v else "auto",
}

# TRL GRPOConfig keys rftune has no equivalent for (docs/from_trl.md says what to do instead)
UNSUPPORTED = {
    "num_train_epochs", "per_device_eval_batch_size", "eval_strategy", "generation_batch_size",
    "steps_per_generation", "num_generations_eval", "model_init_kwargs", "disable_dropout",
    "gradient_checkpointing", "min_p", "repetition_penalty", "generation_kwargs", "chat_template_kwargs",
    "cache_implementation", "delta", "multi_objective_aggregation", "sync_ref_model", "ref_model_mixup_alpha",
    "ref_model_sync_steps", "top_entropy_quantile", "entropy_coef", "use_adaptive_entropy",
    "max_tool_calling_iterations", "vllm_mode", "vllm_importance_sampling_correction", "off_policy_mask_threshold",
    "sapo_temperature_neg", "sapo_temperature_pos", "warmup_ratio", "optim", "lr_scheduler_kwargs",
    "save_strategy", "push_to_hub", "hub_model_id", "resume_from_checkpoint", "use_cpu", "fp16", "tf32",
    "dataloader_num_workers", "remove_unused_columns", "torch_compile", "deepspeed", "fsdp_config",
}


def translate_trl_keys(raw: dict[str, Any]) -> list[str]:
    """Move TRL keys in `raw` (top level or inside their section) to rftune's keys; returns the notices."""
    unsupported = sorted(key for key in raw if key in UNSUPPORTED)
    if unsupported:
        raise ConfigError(f"TRL key(s) {', '.join(map(repr, unsupported))} have no rftune equivalent; "
                          "docs/from_trl.md lists what rftune has instead")
    found = {key: raw.pop(key) for key in list(raw) if key in ALIASES or key in LOGGING_ONLY}
    for section in {key.split(".")[0] for key in ALIASES.values()}:
        node = raw.get(section)
        if isinstance(node, dict):
            found.update({key: node.pop(key) for key in list(node)
                          if ALIASES.get(key, "").startswith(section + ".") and key not in _rftune_keys(section)})
    notices = []
    for key in [k for k in found if k in LOGGING_ONLY]:
        del found[key]
        notices.append(f"notice: TRL key {key!r} has no effect: rftune logs every step")
    if found:
        notices += _apply(raw, found)
    return notices


def _rftune_keys(section: str) -> set[str]:
    """Names that are rftune keys of the section too (e.g. train.max_steps): those are not aliases there."""
    return {target.split(".")[1] for target in ALIASES.values() if target.startswith(section + ".")}


def _apply(raw: dict, found: dict[str, Any]) -> list[str]:
    notices = []
    accumulation = found.get("gradient_accumulation_steps",
                             (raw.get("train") or {}).get("gradient_accumulation_steps", 1))
    for key, value in found.items():
        if value is None:  # TRL's "not set": rftune's default applies
            notices.append(f"notice: TRL key {key!r} is None: rftune's default for {ALIASES[key]} applies")
        elif key == "reward_weights":
            notices.append(_set_reward_weights(raw, value))
        else:
            targets = [ALIASES[key]]
            if key == "epsilon" and "epsilon_high" not in found:  # as in TRL: one epsilon clips both sides
                targets.append("algorithm.epsilon_high")
            value = value * accumulation if key == "per_device_train_batch_size" else VALUES.get(key, _same)(value)
            for target in targets:
                _set(raw, key, target, value)
            how = " (times gradient_accumulation_steps)" if key == "per_device_train_batch_size" else ""
            notices.append(f"notice: TRL key {key!r} read as {' and '.join(targets)}{how}")
    return notices


def _same(value: Any) -> Any:
    return value


def _set(raw: dict, key: str, target: str, value: Any) -> None:
    section, name = target.split(".")
    node = raw.setdefault(section, {})
    if not isinstance(node, dict):
        raise ConfigError(f"{section}: expected a mapping, got {type(node).__name__} {node!r}")
    if name in node:
        raise ConfigError(f"TRL key {key!r} and its rftune key {target!r} are both given; keep one")
    node[name] = value


def _set_reward_weights(raw: dict, weights: Any) -> str:
    functions = (raw.get("rewards") or {}).get("functions")
    if not isinstance(functions, list) or not isinstance(weights, list) or len(weights) != len(functions):
        raise ConfigError("TRL key 'reward_weights' weights rewards.functions in order: list the functions "
                          f"(rewards.functions) and one weight for each; got weights {weights!r}")
    for spec, weight in zip(functions, weights):
        if isinstance(spec, dict):
            spec["weight"] = weight
    return "notice: TRL key 'reward_weights' read as the weight of each of rewards.functions"
