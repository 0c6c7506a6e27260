"""The ``rftune`` command line: one subcommand per module in `rftune.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. User
mistakes (`RftuneError`) are printed as ``error: ...`` with exit status 2 and no traceback (under torchrun once, by
rank 0: see `report_error`); Ctrl-C exits 130.

``KEY=VALUE`` overrides may come anywhere after the config path, between and after options (``rftune eval c.yaml
--adapter a eval.num_rows=50``), as in TRL's and Hydra's command lines: argparse stops filling the ``overrides``
positional at the first option, so the words it leaves over are added to it when each is a ``KEY=VALUE``.
``$RFTUNE_OVERRIDES`` (shell-quoted ``KEY=VALUE`` words) is applied after the command line's overrides by every
command that reads a config: a quick run of a documented command, e.g. ``RFTUNE_OVERRIDES="train.max_steps=1"``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time

from rftune.errors import RftuneError

RANK_GRACE_S = 10.0  # under torchrun: how long a rank other than 0 waits before printing its error
ENV_OVERRIDES = "RFTUNE_OVERRIDES"  # KEY=VALUE words applied after the command line's

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line parsed, with overrides given after options gathered into ``overrides``."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    _add_late_overrides(parser, args, extra)
    if hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + shlex.split(os.environ.get(ENV_OVERRIDES, ""))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
def _add_late_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """Append the ``KEY=VALUE`` words found after an option to ``args.overrides``; anything else is an error."""
    late = [word for word in extra if "=" in word and not word.startswith("-")]
    unknown = [word for word in extra if word not in late]
    if late and not hasattr(args, "overrides"):
        unknown = extra
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if late:
        args.overrides = list(args.overrides) + late


if __name__ == "__main__":
    sys.exit(main())
