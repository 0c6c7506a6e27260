"""``rftune train CONFIG [key=value ...] [--resume]``: GRPO fine-tuning from a YAML recipe.

With ``sft.enabled: true`` the SFT stage runs first (or its finished adapter is reused) and GRPO trains on from that
adapter. ``model.adapter`` (or ``model.name_or_path``) may be a repository reference (``NAME@V``) to continue a
version. A finished run is registered in the model repository (the SFT stage too, as the GRPO version's parent)
unless ``repository.register: false``.
"""

from rftune.config import load_config
from rftune.errors import ConfigError

HELP = "Fine-tune a model with GRPO from a YAML config (key=value arguments override any field)."


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a field, e.g. train.max_steps=5")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")


def run(args) -> int:
    from rftune.repository.runs import begin_run, register_grpo, register_sft
    from rftune.runtime.distributed import launched_world
    from rftune.train.trainer import GRPOTrainer

    overrides = list(args.overrides) + (["train.resume=true"] if args.resume else [])
    start = begin_run(load_config(args.config, overrides))
    config, parent = start.config, start.parent
    world = launched_world()
    if config.sft.enabled:  # SFT warm start first (reused when finished), then GRPO continues its adapter
        from rftune.train.sft import finished_adapter, sft_data_path, sft_output_dir, with_sft_adapter

        _check_grpo_stage(config)
        reused = finished_adapter(config) is not None
        if world.distributed and not reused:
            raise ConfigError("the SFT stage runs in one process: run `rftune sft CONFIG` first, then start this "
                              "torchrun job (it reuses the finished SFT adapter)")
        config = with_sft_adapter(config)
        if config.repository.register and world.is_main:
            parent = register_sft(start, start.config, finished_adapter(config), sft_data_path(start.config),
                                  sft_output_dir(start.config), reuse=reused)
            print(f"SFT stage: {parent.ref}")
    trainer = GRPOTrainer(config, register_run=False)  # registered below, with the SFT stage as parent
    trainer.train()
    if world.is_main:  # under torchrun, rank 0 reports and registers the run once
        print(f"done: {trainer.step_count} steps; adapter/weights in {trainer.output_dir / 'final'}")
        if config.repository.register:
            print(f"registered {register_grpo(start, config, trainer, parent).ref}")
    return 0


def _check_grpo_stage(config) -> None:
    """What the GRPO stage would refuse (device, task, reward functions), checked before SFT spends its minutes."""
    from pathlib import Path

    from rftune.rewards import reward_functions
    from rftune.runtime.device import resolve_device
    from rftune.tasks import task_from_config

    resolve_device(config.train.device)
    task = task_from_config(config)
    reward_functions(config.rewards.functions or task.default_rewards, Path(config.base_dir))
