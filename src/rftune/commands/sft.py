"""``rftune sft CONFIG [key=value ...]``: the supervised warm start (LoRA on chat JSONL or Wordle solver traces)."""

from rftune.config import load_config

HELP = "Supervised fine-tuning (LoRA, loss on assistant tokens) from the config's sft section."


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config file (see configs/wordle.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a field, e.g. sft.max_steps=5")


def run(args) -> int:
    from rftune.sft import run_sft

    adapter = run_sft(load_config(args.config, args.overrides))
    print(f"done: SFT adapter in {adapter}")
    return 0
