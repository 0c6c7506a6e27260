"""``rftune eval CONFIG [--adapter A ...] [--model M ...] [--variant KEY=VALUE ...] [key=value ...]``: held-out
evaluation of the config's task, every player on the same rows with the same seeds.

Players: the base model (``model.name_or_path``, unless ``--no-base``); each ``--model``; each ``--adapter`` on the
base model (default: the config's finished SFT adapter and GRPO ``final`` adapter, when present); each
``--variant KEY=VALUE``, the base model under that override (e.g. ``task.system_prompt=...``; named variant1,
variant2, ... in the table, each listed above it with its override). The first player is
the baseline of the paired differences. The table is printed and the report written to
``<train.output_dir>/eval.json`` (see `rftune.evaluation.evaluate`). A task with an evaluation of its own
(`rftune.tasks.Task.evaluator`, e.g. one that plays held-out games) runs that instead, with ``eval.kwargs`` as its
options (``--games`` and ``--sampled`` set ``num_games`` and ``sampled`` there).

An ``--adapter`` may be a repository reference (``NAME@V``); each adapter's results are attached to its version in
the model repository (the referenced one, or the version whose files equal the adapter folder's).
"""

from pathlib import Path

from rftune.config import load_config
from rftune.errors import ConfigError

HELP = ("Evaluate on held-out data: base model, adapters, other models and prompt variants, with intervals and "
        "paired differences (or the task's own evaluation, e.g. playing games).")


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config file (e.g. configs/arithmetic.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a field, e.g. eval.num_rows=50")
    parser.add_argument("--adapter", action="append", metavar="A",
                        help="an adapter folder or NAME@VERSION to evaluate (repeatable; default: the config's SFT and "
                        "GRPO adapters)")
    parser.add_argument("--model", action="append", metavar="M", help="another model to evaluate (repeatable)")
    parser.add_argument("--variant", action="append", metavar="KEY=VALUE",
                        help="the base model under this override, e.g. task.system_prompt='...' (repeatable)")
    parser.add_argument("--seed", type=int, help="which held-out rows or secrets, and the sampling seeds "
                        "(default eval.seed)")
    parser.add_argument("--no-base", action="store_true", help="skip the base model")
    parser.add_argument("--output", help="report path (default <train.output_dir>/eval.json)")
    parser.add_argument("--games", type=int, help="tasks that play games: number of games (eval.kwargs.num_games)")
    parser.add_argument("--sampled", action="store_true",
                        help="tasks that play games: sample replies instead of greedy decoding (eval.kwargs.sampled)")


def run(args) -> int:
    from rftune.rollout.generation import in_process_backend
    from rftune.runtime.device import cpu_kernels_enabled, resolve_device, run_summary
    from rftune.tasks import task_from_config

    overrides = list(args.overrides) + ([f"eval.seed={args.seed}"] if args.seed is not None else [])
    config = load_config(args.config, overrides)
    if config.train.threads:
        import torch

        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)
    backend = in_process_backend(config.generation.backend, cpu_kernels_enabled(config.train.cpu_kernels, device))
    print(run_summary(device, config.train.bf16, backend, config.model.dtype), flush=True)
    adapters = _adapters(config, args.adapter)
    task = task_from_config(config)
    if task.evaluator is not None:
        return _run_task_evaluator(args, config, task, adapters, device)
    if args.games is not None or args.sampled or config.eval.kwargs:
        raise ConfigError(f"--games, --sampled and eval.kwargs are for tasks with an evaluation of their own (that "
                          f"play games); task {config.task.name!r} is scored on held-out rows: use eval.num_rows and "
                          "eval.num_samples")
    return _run_task(args, overrides, config, adapters, device)


def _run_task(args, overrides: list[str], config, adapters: dict[str, str], device) -> int:
    from rftune.evaluation.evaluate import Player, evaluate, format_table, summary_row, write_report

    base = config.model.name_or_path
    players = [] if args.no_base else [Player("base", base, None, config)]
    players += [Player(model, model, None, config) for model in args.model or []]
    players += [Player(name, base, adapter, config) for name, adapter in adapters.items()]
    variants = {f"variant{number}": variant for number, variant in enumerate(args.variant or [], 1)}
    players += [Player(name, base, None, load_config(args.config, overrides + [variant]), variant)
                for name, variant in variants.items()]
    if not players:
        raise ConfigError("nothing to evaluate: --no-base and no --model, --adapter, --variant or trained adapter")
    report = evaluate(players, device)
    for name, variant in variants.items():  # a short column name in the table, the whole override here
        print(f"{name}: the base model with {variant}")
    print(format_table(report))
    path = write_report(report, args.output or Path(config.train.output_dir) / "eval.json")
    print(f"report written to {path}")
    rows = {name: summary_row(report, name) for name in adapters}
    _attach_to_versions(config, rows, adapters, path, config.eval.seed, config.eval.num_samples > 0, "task")
    return 0


def _run_task_evaluator(args, config, task, adapters: dict[str, str], device) -> int:
    from rftune.evaluation.evaluate import sampling_params, write_report
    from rftune.tasks import EvalRequest

    if args.model or args.variant:
        raise ConfigError(f"--model and --variant are not supported for task {config.task.name!r}, which evaluates "
                          "in its own way; use --adapter")
    cfg = config.eval
    options = dict(cfg.kwargs)
    options.update({} if args.games is None else {"num_games": args.games})
    options.update({"sampled": True} if args.sampled else {})
    players = {} if args.no_base else {"base": (config.model.name_or_path, None)}
    players.update({name: (config.model.name_or_path, adapter) for name, adapter in adapters.items()})
    outcome = task.evaluator(EvalRequest(players, options, sampling_params(config, device), cfg.seed,
                                         cfg.batch_size, cfg.bootstrap, config.model.dtype, device, config))
    print(outcome.table)
    path = write_report(outcome.report, args.output or Path(config.train.output_dir) / "eval.json")
    print(f"report written to {path}")
    _attach_to_versions(config, {name: outcome.rows[name] for name in adapters}, adapters, path, cfg.seed,
                        outcome.sampled, config.task.name)
    return 0


def _attach_to_versions(config, rows: dict[str, dict], adapters: dict[str, str], path: Path, seed: int,
                        sampled: bool, kind: str) -> None:
    """Attach each adapter's summary row to its repository version (a reference, or a registered folder)."""
    from rftune.repository import is_reference
    from rftune.repository.runs import attach_eval, repository_for, version_of_folder

    repository = repository_for(config)
    for name, adapter in adapters.items():
        version = repository.resolve(name) if is_reference(name) else version_of_folder(repository, adapter)
        if version is not None:
            attach_eval(repository, version, rows[name], report=path, seed=seed, sampled=sampled, kind=kind)
            print(f"results of {name} attached to {version.ref}")


def _adapters(config, given: list[str] | None) -> dict[str, str]:
    """name -> adapter folder: the given ones (folders or references, checked), else the config's finished SFT
    and GRPO adapters."""
    from rftune.repository import is_reference, resolve_for_loading
    from rftune.repository.runs import repository_for
    from rftune.train.sft import finished_adapter

    if given:
        found = {}
        for folder in given:
            if is_reference(folder):
                found[folder] = resolve_for_loading(config.model.name_or_path, folder, repository_for(config))[1]
            elif (Path(folder) / "adapter_config.json").is_file():
                found[folder] = folder
            else:
                raise ConfigError(f"--adapter {folder}: not a PEFT adapter folder (no adapter_config.json) nor a "
                                  "repository reference (NAME@VERSION)")
        return found
    found = {}
    sft = finished_adapter(config) if config.sft.enabled else None
    if sft is not None:
        found["sft"] = str(sft)
    final = Path(config.train.output_dir) / "final"
    if (final / "adapter_config.json").is_file():
        found["sft+grpo" if config.sft.enabled else "grpo"] = str(final)
    return found
