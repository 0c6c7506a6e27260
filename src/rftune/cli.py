"""The ``rftune`` command line: one subcommand per module in `rftune.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. User
mistakes (`RftuneError`) are printed as ``error: ...`` with exit status 2 and no traceback (under torchrun once, by
rank 0: see `report_error`); Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from rftune.errors import RftuneError

RANK_GRACE_S = 10.0  # under torchrun: how long a rank other than 0 waits before printing its error

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
        return report_error(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def report_error(exc: RftuneError) -> int:
    """Print a user error as one ``error:`` line; return the exit status 2.

    Under torchrun every rank usually meets the same error: rank 0 prints it at once, and another rank waits
    `RANK_GRACE_S` first, so that torchrun, seeing rank 0 fail, ends it before it speaks. An error only that rank
    met is still printed after the wait, with the rank named.
    """
    rank = int(os.environ.get("RANK", "0"))
    if rank:
        time.sleep(RANK_GRACE_S)
    print(f"error: {f'rank {rank}: ' if rank else ''}{exc}", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(main())
