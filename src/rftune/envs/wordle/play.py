"""``rftune play wordle``: watch a model play one game turn by turn (its reasoning and coloured tiles), or play it
yourself with ``--human``. `play` takes the command's arguments (see `rftune.commands.play`)."""

from __future__ import annotations

import random
import sys

from rftune.errors import ConfigError


def play(args) -> int:
    """Play one game of Wordle as the command line asks: a model watched turn by turn, or the human at the keyboard."""
    from rftune.envs.wordle.render import play_human

    secret = _secret(args.secret, args.seed)
    if args.human:
        play_human(secret, color=not args.no_color and sys.stdout.isatty(), seed=args.seed)
        return 0
    watch_model(args, secret)
    return 0


def _secret(secret: str | None, seed: int | None) -> str:
    from rftune.envs.wordle.words import allowed_words, answer_words, is_five_letters

    if secret is None:
        return random.Random(seed).choice(answer_words().words)
    if not is_five_letters(secret) or secret.strip().lower() not in allowed_words():
        raise ConfigError(f"--secret {secret!r}: must be an allowed 5-letter word")
    return secret.strip().lower()


def watch_model(args, secret: str) -> None:
    """Let the model play `secret`, printing each reply and the board after each turn."""
    import torch

    from rftune.envs.wordle.evaluate import GameRecord
    from rftune.envs.wordle.game import WordleGame
    from rftune.envs.wordle.model_eval import model_generator, play_turn
    from rftune.envs.wordle.prompts import wordle_messages
    from rftune.envs.wordle.render import render_board
    from rftune.model.loading import load_model_and_tokenizer
    from rftune.rollout.constrained import constrained, constraint_description
    from rftune.rollout.generation import SamplingParams

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    config = run_config(args)
    style = _prompt_style(config)
    model, tokenizer = load_model_and_tokenizer(args.model, adapter=args.adapter)
    torch.manual_seed(args.seed or 0)
    params = SamplingParams(1, args.max_new_tokens)
    if config is not None and not args.no_constraint:
        params = constrained(params, config, model, tokenizer)
    constraint = f"replies constrained to {constraint_description(config)}" if params.constraint else "unconstrained"
    print(f"prompt style: {style}; {constraint}")
    generate = model_generator(model, tokenizer, args.max_new_tokens, args.sampled, params)
    color = not args.no_color and sys.stdout.isatty()
    game, record, notice = WordleGame(secret), GameRecord(secret=secret.upper()), None
    while not game.done:
        (text,) = generate([wordle_messages(game.history, notice, style)])
        notice = play_turn(game, record, text)
        print(f"--- turn {game.guesses_used}/{game.max_guesses} ---\n{text.strip()}")
        print(render_board(game.history, color=color) if notice is None else f"(invalid) {notice}", flush=True)
    print(f"Solved in {game.guesses_used}!" if game.won else f"Not solved; the word was {secret.upper()}.")


def run_config(args):
    """The config the model was trained with: ``--config``, else the ``config.yaml`` that the training run wrote
    next to the adapter folder (``runs/wordle/final`` -> ``runs/wordle/config.yaml``), else None."""
    from pathlib import Path

    from rftune.config import load_config

    path = args.config
    if path is None and args.adapter and (Path(args.adapter).parent / "config.yaml").is_file():
        path = Path(args.adapter).parent / "config.yaml"
        print(f"prompts and constraint from {path} (--config to choose another)")
    return None if path is None else load_config(path)


def _prompt_style(config) -> str:
    """The task's ``prompt_style`` in `config` (the course's prompts without a config or another task)."""
    from rftune.envs.wordle.prompts import prompt_style_option

    if config is None or config.task.name != "wordle":
        return "course"
    return prompt_style_option(config.task.kwargs)
