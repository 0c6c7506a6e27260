"""Run a TRL GRPO script on rftune by changing only its imports.

    from rftune.trl import GRPOConfig, GRPOTrainer        # was: from trl import GRPOConfig, GRPOTrainer

`GRPOConfig` takes TRL's keyword names; the keys rftune has (`rftune.trl_keys.ALIASES`, docs/from_trl.md) keep
TRL's defaults where TRL's differ from rftune's (learning rate 1e-6, ``loss_type="dapo"``, ``beta=0``, ...), so the
script trains as it did under TRL; a key rftune cannot honour is an error naming it. `GRPOTrainer` takes
TRL's arguments — ``model`` (a hub id, folder or a loaded model), ``reward_funcs`` (TRL's own included, called
with TRL's convention: `rftune.rewards.base`), ``args``, ``train_dataset`` (a `datasets.Dataset` or a list of
rows), ``processing_class`` and ``peft_config`` (a ``peft.LoraConfig``; without one TRL fine-tunes every weight,
and so does this) — and runs rftune's trainer. Without ``max_steps``, the run lasts ``num_train_epochs`` passes
over the dataset, as in TRL.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from rftune.config import Config, config_from_dict
from rftune.errors import ConfigError
from rftune.rewards import as_reward_function
from rftune.trl_keys import ALIASES, LOGGING_ONLY, translate_trl_keys

# TRL 1.16's GRPOConfig defaults where they differ from rftune's: a script relying on them trains the same way
TRL_DEFAULTS = {
    "output_dir": "trainer_output", "learning_rate": 1e-6, "adam_beta2": 0.999, "lr_scheduler_type": "linear",
    "max_completion_length": 512, "beta": 0.0, "loss_type": "dapo", "per_device_train_batch_size": 8,
    "use_bias_correction_kl": True, "save_steps": 500,
}
EPOCH_KEY = "num_train_epochs"  # TRL's default run length when max_steps is not set
TRL_EPOCHS = 3.0


class GRPOConfig:
    """TRL's ``GRPOConfig(output_dir=..., **keys)``: the keys are readable as attributes, as in TRL."""

    def __init__(self, output_dir: str | None = None, **keys: Any):
        given = {"output_dir": output_dir, **keys} if output_dir is not None else dict(keys)
        unknown = sorted(set(given) - set(ALIASES) - LOGGING_ONLY - {EPOCH_KEY})
        if unknown:
            raise ConfigError(f"GRPOConfig: rftune cannot honour {', '.join(map(repr, unknown))}; "
                              "docs/from_trl.md lists the keys it has and what it does instead")
        self.given = given
        for key, value in {**TRL_DEFAULTS, EPOCH_KEY: TRL_EPOCHS, **given}.items():
            setattr(self, key, value)

    def to_rftune(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The TRL keys (TRL's defaults where unset) as a raw rftune config (what `config_from_dict` takes)."""
        keys = {**TRL_DEFAULTS, **self.given}
        keys.pop(EPOCH_KEY, None)
        if keys.get("max_steps", -1) == -1:  # TRL's "not set": epochs decide, see GRPOTrainer
            keys.pop("max_steps", None)
        raw = {**(extra or {}), **keys}
        translate_trl_keys(raw)  # its notices are for YAML files: here the user wrote TRL's API on purpose
        return raw


class GRPOTrainer:
    """TRL's ``GRPOTrainer(model, reward_funcs, args, train_dataset, ...)`` running rftune's GRPO trainer."""

    def __init__(self, model: Any, reward_funcs: Callable | Sequence[Callable], args: GRPOConfig | None = None,
                 train_dataset: Any = None, eval_dataset: Any = None, processing_class: Any = None,
                 reward_processing_classes: Any = None, callbacks: Any = None, peft_config: Any = None):
        refused = {"eval_dataset": eval_dataset, "reward_processing_classes": reward_processing_classes,
                   "callbacks": callbacks}
        if any(value is not None for value in refused.values()):
            names = ", ".join(name for name, value in refused.items() if value is not None)
            raise ConfigError(f"GRPOTrainer: rftune cannot honour {names} (held-out data: task.eval_path and "
                              "`rftune eval`; reward models: write a reward function)")
        if train_dataset is None:
            raise ConfigError("GRPOTrainer: train_dataset is required")
        self.args = args or GRPOConfig()
        self.rows = [dict(row) for row in train_dataset]
        functions = _reward_functions(reward_funcs, self.args.given.get("reward_weights"))
        self.config = _config(self.args, _model_name(model, processing_class), peft_config, len(self.rows))
        from rftune.train.trainer import GRPOTrainer as RftuneTrainer

        self.trainer = RftuneTrainer(self.config, reward_funcs=functions, dataset=self.rows,
                                     model=None if isinstance(model, str) else model, tokenizer=processing_class)

    def train(self) -> list[dict[str, Any]]:
        """Train to the end; returns each step's metrics."""
        return self.trainer.train()

    def save_model(self, output_dir: str | None = None) -> None:
        """Save the trained model (LoRA: the adapter) and tokenizer, by default to ``args.output_dir``."""
        folder = output_dir or self.config.train.output_dir
        self.trainer.model.save_pretrained(folder, safe_serialization=True)
        self.trainer.tokenizer.save_pretrained(folder)


def _reward_functions(reward_funcs, weights) -> list:
    functions = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    if any(isinstance(f, str) or not callable(f) for f in functions):
        raise ConfigError("GRPOTrainer: reward models (a model id or object) are not supported; pass callables")
    weights = weights if weights is not None else [1.0] * len(functions)
    if len(weights) != len(functions):
        raise ConfigError(f"reward_weights has {len(weights)} weights for {len(functions)} reward functions")
    return [as_reward_function(f, weight=w) for f, w in zip(functions, weights)]


def _model_name(model: Any, processing_class: Any) -> str:
    """The model's name or folder: the config records it, and the tokenizer is loaded from it when not given."""
    name = model if isinstance(model, str) else getattr(model, "name_or_path", "")
    if not name and processing_class is None:
        raise ConfigError("GRPOTrainer: this model object has no name_or_path; pass processing_class (its tokenizer)")
    return name or "(model passed in)"


def _config(args: GRPOConfig, model_name: str, peft_config: Any, num_rows: int) -> Config:
    raw = args.to_rftune({"model": {"name_or_path": model_name}, "lora": _lora(peft_config),
                          "task": {"name": "dataset"}})
    train = raw.setdefault("train", {})
    if "max_steps" not in train:  # TRL's run length: num_train_epochs passes over the prompts
        prompts_per_step = train["batch_size"] // raw.get("generation", {}).get("num_generations", 8)
        train["max_steps"] = max(1, math.ceil(args.num_train_epochs * num_rows / max(1, prompts_per_step)))
    return config_from_dict(raw)


def _lora(peft_config: Any) -> dict[str, Any]:
    """A ``peft.LoraConfig`` as rftune's lora section; None = full fine-tuning, as TRL does without one."""
    if peft_config is None:
        return {"enabled": False}
    modules = peft_config.target_modules
    return {"r": peft_config.r, "alpha": peft_config.lora_alpha, "dropout": peft_config.lora_dropout,
            "target_modules": "all-linear" if modules is None else
            (modules if isinstance(modules, str) else sorted(modules))}
