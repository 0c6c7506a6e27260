"""The ``rftune`` command line: one subcommand per module in `rftune.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. User
mistakes (`RftuneError`) are printed as ``error: ...`` with exit status 2 and no traceback (under torchrun by
rank 0 only; the other ranks exit with the same status quietly); Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rftune.errors import RftuneError

# name -> module; the module is imported only when its command runs (or for --help).
COMMANDS = {
    "setup": "rftune.commands.setup",
    "train": "rftune.commands.train",
    "serve": "rftune.commands.serve",
    "sft": "rftune.commands.sft",
    "eval": "rftune.commands.eval",
    "play": "rftune.commands.play",
    "models": "rftune.commands.models",
    "report": "rftune.commands.report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rftune", description="Reinforcement fine-tuning with GRPO.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except RftuneError as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank meets the error: rank 0 says it
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
