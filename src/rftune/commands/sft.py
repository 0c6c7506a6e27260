"""``rftune sft CONFIG [key=value ...]``: the supervised warm start (LoRA on chat JSONL or the task's own SFT data).

The finished adapter is registered in the model repository unless ``repository.register: false``.
"""

from rftune.config import load_config

HELP = "Supervised fine-tuning (LoRA, loss on assistant tokens) from the config's sft section."


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config file (see configs/arithmetic.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a field, e.g. sft.max_steps=5")


def run(args) -> int:
    from rftune.repository.runs import begin_run, register_sft
    from rftune.train.sft import run_sft

    start = begin_run(load_config(args.config, args.overrides))
    adapter = run_sft(start.config)
    print(f"done: SFT adapter in {adapter}")
    if start.config.repository.register:
        print(f"registered {register_sft(start, start.config, adapter).ref}")
    return 0
