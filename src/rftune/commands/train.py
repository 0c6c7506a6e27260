"""``rftune train CONFIG [key=value ...] [--resume]``: GRPO fine-tuning from a YAML recipe.

With ``sft.enabled: true`` the SFT stage runs first (or its finished adapter is reused) and GRPO trains on from that
adapter.
"""

from rftune.config import load_config

HELP = "Fine-tune a model with GRPO from a YAML config (key=value arguments override any field)."


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a field, e.g. train.max_steps=5")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")


def run(args) -> int:
    from rftune.trainer import GRPOTrainer

    overrides = list(args.overrides) + (["train.resume=true"] if args.resume else [])
    config = load_config(args.config, overrides)
    if config.sft.enabled:  # SFT warm start first (reused when finished), then GRPO continues its adapter
        from rftune.sft import with_sft_adapter

        config = with_sft_adapter(config)
    trainer = GRPOTrainer(config)
    trainer.train()
    print(f"done: {trainer.step_count} steps; adapter/weights in {trainer.output_dir / 'final'}")
    return 0
