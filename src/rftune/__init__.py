"""rftune: reinforcement fine-tuning of language models with GRPO and programmable rewards.

    from rftune import GRPOTrainer, load_config
    trainer = GRPOTrainer(load_config("configs/arithmetic.yaml"), reward_funcs=[my_reward])
    trainer.train()
"""

from rftune._moved import serve_old_paths

__version__ = "0.1.0"
serve_old_paths()  # modules that moved into packages keep their old import paths for one release

_EXPORTS = {
    "GRPOTrainer": "rftune.train.trainer",
    "load_config": "rftune.config",
    "config_from_dict": "rftune.config",
    "Config": "rftune.config",
    "register_reward": "rftune.rewards.registry",
    "RewardFunction": "rftune.rewards.base",
    "load_model_and_tokenizer": "rftune.model.loading",
}
__all__ = list(_EXPORTS)


def __getattr__(name):  # imported on first use so that `import rftune` stays light
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rftune' has no attribute {name!r}")
