"""Learning at equal samples: rftune and TRL's GRPOTrainer run the same GRPO recipe from the same start, then both
are evaluated on the same unseen rows.

    .venv/bin/python benchmarks/learning.py configs/arithmetic.yaml            # the recipe's GRPO steps
    .venv/bin/python benchmarks/learning.py configs/arithmetic.yaml --steps 10 --frameworks rftune,trl

The start is the config's SFT adapter (trained first when the config enables SFT and it is not there yet), else
the base model with a fresh LoRA adapter. Both frameworks then take the same prompts in the same order (rftune's
seeded prompt stream, given to TRL unshuffled), P prompts x G completions per step for ``--steps`` steps, with the
config's learning rate and warm-up, Adam betas, clipping, beta, loss type, reward scaling, temperature and
completion length, and the config's reward functions (TRL calls them through one wrapper). TRL runs with bf16
where rftune's ``train.bf16`` resolves to bf16 on this machine.

Afterwards `rftune.evaluation.evaluate` scores the start and each framework's adapter on the config's held-out rows
(the same rows and sampling seeds for every player) and prints the table with paired differences against the start,
then each framework's gain and the paired difference between the two tuned players. Wall-clock training minutes are
printed for each framework. Results go to ``<out>/learning.json``. ``--rftune-adapter`` evaluates an rftune run of
the same recipe instead of training one (seeded runs repeat: the recipe's GRPO run and this script's rftune run
had the same per-step rewards).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from rftune.config import load_config


def start_adapter(config) -> str | None:
    """The SFT adapter GRPO starts from (trained now if the config enables SFT and it is missing), or None."""
    if config.sft.enabled:
        from rftune.train.sft import with_sft_adapter

        return with_sft_adapter(config).model.adapter
    return config.model.adapter


def grpo_config(args, start: str | None, out: Path):
    overrides = [f"train.output_dir={out}", "sft.enabled=false", "repository.register=false", "train.save_steps=0"]
    overrides += [f"model.adapter={start}"] if start else []
    overrides += [f"train.max_steps={args.steps}"] if args.steps else []
    return load_config(args.config, args.overrides + overrides)


def run_rftune(config) -> str:
    from rftune import GRPOTrainer

    GRPOTrainer(config).train()
    return str(Path(config.train.output_dir) / "final")


def run_trl(config, start: str | None, out: Path) -> str:
    """TRL 1.16's GRPOTrainer on the rows rftune's stream would take, in that order; returns the adapter folder."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from trl import GRPOConfig, GRPOTrainer

    from rftune.model.loading import load_model, load_tokenizer
    from rftune.rewards import reward_functions, score_completions, weighted_total
    from rftune.runtime.device import bf16_enabled
    from rftune.tasks import task_from_config
    from rftune.tasks.data import PromptStream

    cfg, gen, alg = config.train, config.generation, config.algorithm
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    task = task_from_config(config)
    order = PromptStream(len(task.samples), cfg.seed).take(config.prompts_per_step * cfg.max_steps)
    rows = [{"prompt": task.samples[i].prompt, "example": json.dumps(task.samples[i].example)} for i in order]
    functions = reward_functions(config.rewards.functions or task.default_rewards, Path(config.base_dir))

    def reward(prompts, completions, example, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        per_func, _failures = score_completions(functions, prompts, texts, [json.loads(e) for e in example],
                                                config.rewards.on_error)
        return weighted_total(per_func, [f.weight for f in functions]).tolist()

    tokenizer = load_tokenizer(config.model.name_or_path)
    model = load_model(config.model.name_or_path, dtype=config.model.dtype)
    lora = None
    if start:
        model = PeftModel.from_pretrained(model, start, is_trainable=True)
    else:
        lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                          target_modules=config.lora.target_modules, task_type="CAUSAL_LM")
    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=1,
        num_generations=gen.num_generations, max_completion_length=gen.max_new_tokens, temperature=gen.temperature,
        top_p=gen.top_p, top_k=gen.top_k, beta=alg.beta, loss_type=alg.loss_type, scale_rewards=alg.scale_rewards,
        epsilon=alg.epsilon_low, epsilon_high=alg.epsilon_high, num_iterations=alg.num_iterations,
        use_bias_correction_kl=False, bf16=bf16_enabled(cfg.bf16, torch.device("cpu")), use_cpu=True,
        gradient_checkpointing=False, learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
        lr_scheduler_type="constant_with_warmup", adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, max_steps=cfg.max_steps,
        logging_steps=1, save_strategy="no", report_to="none", shuffle_dataset=False, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora)
    trainer.train()
    trainer.save_model(str(out / "final"))
    return str(out / "final")


def evaluate_players(config, adapters: dict[str, str | None]) -> dict:
    from rftune.evaluation.evaluate import Player, evaluate, format_table

    players = [Player(name, config.model.name_or_path, adapter, config) for name, adapter in adapters.items()]
    report = evaluate(players)
    print(format_table(report))
    return report


def gains(report: dict, names: list[str]) -> dict:
    """Each tuned player's paired gain over the start, and rftune's paired difference against TRL."""
    from rftune.evaluation.stats import paired_difference

    found = {name: next(p["difference"] for p in report["players"] if p["player"] == name) for name in names}
    if len(names) == 2:
        first, second = (report["per_row"][n]["metrics"] for n in names)
        found[f"{names[0]} - {names[1]}"] = {metric: paired_difference(first[metric], second[metric], 1000,
                                                                        report["seed"])
                                             for metric in first if metric in second}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, help="GRPO steps of each framework (default train.max_steps)")
    parser.add_argument("--frameworks", default="rftune,trl", help="comma-separated: rftune, trl")
    parser.add_argument("--out", default="runs/learning", help="folder for both runs and learning.json")
    parser.add_argument("--rftune-adapter", help="evaluate this rftune adapter instead of training one: a run of the "
                        "same recipe from the same start (e.g. the recipe's <output_dir>/final); runs are seeded, so "
                        "it is the adapter this script would train")
    args = parser.parse_args()
    frameworks = args.frameworks.split(",")
    out = Path(args.out)
    base_config = load_config(args.config, args.overrides)
    start = start_adapter(base_config)
    adapters: dict[str, str | None] = {"start": start}
    minutes = {}
    for framework in frameworks:
        if framework == "rftune" and args.rftune_adapter:
            adapters[framework] = args.rftune_adapter
            continue
        config = grpo_config(args, start, out / framework)
        began = time.perf_counter()
        adapters[framework] = run_rftune(config) if framework == "rftune" else run_trl(config, start, out / framework)
        minutes[framework] = (time.perf_counter() - began) / 60
        print(f"{framework}: {config.train.max_steps} steps of {config.train.batch_size} completions in "
              f"{minutes[framework]:.1f} min", flush=True)
    eval_config = dataclasses.replace(base_config, model=dataclasses.replace(base_config.model, adapter=None))
    report = evaluate_players(eval_config, adapters)
    found = gains(report, frameworks)
    for name, difference in found.items():
        for metric in ("accuracy", "pass@1"):
            if metric in difference and difference[metric]:
                d = difference[metric]
                print(f"{name if ' - ' in name else name + ' - start'}: {metric} {d['mean']:+.3f} "
                      f"[{d['low']:+.3f}, {d['high']:+.3f}]")
    for framework, value in minutes.items():
        print(f"training minutes, {framework}: {value:.1f}")
    (out / "learning.json").write_text(json.dumps({"minutes": minutes, "gains": found, "report": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
