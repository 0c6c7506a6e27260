"""``rftune eval CONFIG [key=value ...]``: play held-out Wordle games with the base model, its adapters and baselines.

Players: the base model; each ``--adapter`` (default: the config's finished SFT adapter and GRPO ``final`` adapter,
when present); the information-gain solver and the random player. Every player gets the same secrets. The table
is printed and the full report (rows, secrets, every game) written to ``<train.output_dir>/eval.json``.
An ``--adapter`` may be a repository reference (``NAME@V``); each adapter's results are attached to its version in
the model repository (the referenced one, or the version whose files equal the adapter folder's).
"""

from pathlib import Path

from rftune.config import load_config
from rftune.errors import ConfigError

HELP = "Evaluate by playing Wordle: base model, adapters (SFT, GRPO), solver and random player on the same games."


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config file (see configs/wordle.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a field, e.g. eval.num_games=10")
    parser.add_argument("--adapter", action="append", metavar="A",
                        help="an adapter folder or NAME@VERSION to evaluate (repeatable; default: the config's SFT and "
                        "GRPO adapters)")
    parser.add_argument("--games", type=int, help="number of games (default eval.num_games)")
    parser.add_argument("--seed", type=int, help="which held-out secrets (default eval.seed)")
    parser.add_argument("--sampled", action="store_true", help="sample replies instead of greedy decoding")
    parser.add_argument("--no-base", action="store_true", help="skip the base model")
    parser.add_argument("--output", help="report path (default <train.output_dir>/eval.json)")


def run(args) -> int:
    from rftune.evaluate import evaluate_models, report_table, write_report
    from rftune.device import bf16_enabled, cpu_kernels_enabled, resolve_device, run_summary
    from rftune.generation import SamplingParams, in_process_backend
    from rftune.tasks.wordle import held_out_secrets

    config = load_config(args.config, args.overrides)
    if config.train.threads:
        import torch

        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)
    backend = in_process_backend(config.generation.backend, cpu_kernels_enabled(config.train.cpu_kernels, device))
    print(run_summary(device, config.train.bf16, backend, config.model.dtype), flush=True)
    cfg, gen = config.eval, config.generation
    games = cfg.num_games if args.games is None else args.games
    seed = cfg.seed if args.seed is None else args.seed
    secrets = held_out_secrets(games, seed)
    specs = {} if args.no_base else {"base": (config.model.name_or_path, None)}
    for name, adapter in _adapters(config, args.adapter).items():
        specs[name] = (config.model.name_or_path, adapter)
    params = SamplingParams(1, cfg.max_new_tokens, gen.temperature, gen.top_p, gen.top_k,
                            bf16=bf16_enabled(config.train.bf16, device), backend=backend)
    report = evaluate_models(specs, secrets, max_new_tokens=cfg.max_new_tokens, sampled=args.sampled or cfg.sampled,
                             params=params, batch_size=cfg.batch_size, seed=seed, dtype=config.model.dtype,
                             device=device)
    print(report_table(report))
    path = write_report(report, args.output or Path(config.train.output_dir) / "eval.json")
    print(f"report written to {path}")
    _attach_to_versions(config, report, {name: adapter for name, (_, adapter) in specs.items() if adapter},
                        path, seed, args.sampled or cfg.sampled)
    return 0


def _attach_to_versions(config, report: dict, adapters: dict[str, str], path: Path, seed: int,
                        sampled: bool) -> None:
    """Attach each adapter's summary row to its repository version (a reference, or a registered folder)."""
    from rftune.repository import is_reference
    from rftune.repository.runs import attach_eval, repository_for, version_of_folder

    repository = repository_for(config)
    rows = {row["player"]: row for row in report["rows"]}
    for name, adapter in adapters.items():
        version = repository.resolve(name) if is_reference(name) else version_of_folder(repository, adapter)
        if version is not None:
            attach_eval(repository, version, rows[name], report=path, seed=seed, sampled=sampled)
            print(f"results of {name} attached to {version.ref}")


def _adapters(config, given: list[str] | None) -> dict[str, str]:
    """name -> adapter folder: the given ones (folders or references, checked), else the config's finished SFT
    and GRPO adapters."""
    from rftune.repository import is_reference, resolve_for_loading
    from rftune.repository.runs import repository_for
    from rftune.sft import finished_adapter

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
