"""``rftune play wordle``: watch a model play one game turn by turn (its reasoning and coloured tiles), or play
it yourself with ``--human``."""

import sys

from rftune.errors import ConfigError

HELP = "Play Wordle: watch a model (with an optional adapter) play a game, or play it yourself with --human."


def add_arguments(parser) -> None:
    parser.add_argument("game", choices=["wordle"], help="the game to play")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="model name, folder, .gguf file or NAME@VERSION")
    parser.add_argument("--adapter", help="a LoRA adapter folder (or NAME@VERSION) to apply")
    parser.add_argument("--secret", help="the secret word (default: a random answer)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random secret (and for --sampled)")
    parser.add_argument("--human", action="store_true", help="you play, typing guesses")
    parser.add_argument("--sampled", action="store_true", help="the model samples (default: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="token limit per model reply")
    parser.add_argument("--no-color", action="store_true", help="plain tile text instead of coloured tiles")


def run(args) -> int:
    from rftune.envs.wordle import play_human

    secret = _secret(args.secret, args.seed)
    if args.human:
        play_human(secret, color=not args.no_color and sys.stdout.isatty(), seed=args.seed)
        return 0
    watch_model(args, secret)
    return 0


def _secret(secret: str | None, seed: int | None) -> str:
    import random

    from rftune.envs.wordle.words import allowed_words, answer_words, is_five_letters

    if secret is None:
        return random.Random(seed).choice(answer_words().words)
    if not is_five_letters(secret) or secret.strip().lower() not in allowed_words():
        raise ConfigError(f"--secret {secret!r}: must be an allowed 5-letter word")
    return secret.strip().lower()


def watch_model(args, secret: str) -> None:
    """Let the model play `secret`, printing each reply and the board after each turn."""
    import torch

    from rftune.envs.wordle import GameRecord, render_board, wordle_messages
    from rftune.envs.wordle.game import WordleGame
    from rftune.envs.wordle.model_eval import model_generator, play_turn
    from rftune.rollout.generation import SamplingParams
    from rftune.model.loading import load_model_and_tokenizer

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
