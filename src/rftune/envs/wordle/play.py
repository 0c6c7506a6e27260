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
    from rftune.rollout.generation import SamplingParams

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    model, tokenizer = load_model_and_tokenizer(args.model, adapter=args.adapter)
    torch.manual_seed(args.seed or 0)
    generate = model_generator(model, tokenizer, args.max_new_tokens, args.sampled,
                               SamplingParams(1, args.max_new_tokens))
    color = not args.no_color and sys.stdout.isatty()
    game, record, notice = WordleGame(secret), GameRecord(secret=secret.upper()), None
    while not game.done:
        (text,) = generate([wordle_messages(game.history, notice)])
        notice = play_turn(game, record, text)
        print(f"--- turn {game.guesses_used}/{game.max_guesses} ---\n{text.strip()}")
        print(render_board(game.history, color=color) if notice is None else f"(invalid) {notice}", flush=True)
    print(f"Solved in {game.guesses_used}!" if game.won else f"Not solved; the word was {secret.upper()}.")
