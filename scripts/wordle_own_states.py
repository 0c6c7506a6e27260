"""Write history-mode Wordle rows from a model's own games, for GRPO on the positions that model reaches.

Usage:  python scripts/wordle_own_states.py CONFIG ADAPTER OUTPUT.jsonl [--games 40] [--seed 7]

The model (the config's ``model.name_or_path`` with ADAPTER, e.g. the SFT stage's ``runs/wordle/sft/adapter``) plays
``--games`` greedy games on *training* secrets (never the held-out test secrets of ``rftune eval``), with the
config's prompt style and guess constraint, exactly as ``rftune eval`` plays. Every turn state of those games
becomes a row ``{"prompt", "secret", "past_guess_history"}``, the columns the Wordle rewards read, except the
opening, which every game shares: it is kept in one game of five. Train on the rows with the dataset task:

    rftune train configs/wordle.yaml task.name=dataset task.path=OUTPUT.jsonl 'task.kwargs={}' \\
        sft.enabled=false model.adapter=ADAPTER train.output_dir=runs/wordle-own

docs/wordle.md ("The GRPO stage's levers") measured this against the reference players' positions.
"""

from __future__ import annotations

import argparse
import json
import random

from rftune.config import load_config
from rftune.envs.wordle.datasets import history_row
from rftune.envs.wordle.model_eval import evaluate_models
from rftune.envs.wordle.prompts import prompt_style_option
from rftune.tasks.wordle import split_answers

OPENING_EVERY = 5  # keep the shared opening position in one game of this many


def own_state_rows(games: list[dict], prompt_style: str) -> list[dict]:
    """History rows for every turn state of `games` (``rftune eval``'s game dicts), the opening in one of five."""
    rows = []
    for number, game in enumerate(games):
        for turn in game["turns"]:
            past = turn["past_guess_history"]
            if past or number % OPENING_EVERY == 0:
                rows.append(history_row(game["secret"], past, prompt_style))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("adapter")
    parser.add_argument("output")
    parser.add_argument("--games", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    config = load_config(args.config)
    style = prompt_style_option(config.task.kwargs)
    secrets = random.Random(args.seed).sample(list(split_answers()[0]), args.games)
    report = evaluate_models({"model": (config.model.name_or_path, args.adapter)}, secrets,
                             max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size,
                             reference_players=False, config=config, prompt_style=style, progress=False)
    rows = own_state_rows(report["games"]["model"], style)
    with open(args.output, "w") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"{len(rows)} rows from {args.games} games ({report['rows'][0]['solved_of']} solved) -> {args.output}")


if __name__ == "__main__":
    main()
