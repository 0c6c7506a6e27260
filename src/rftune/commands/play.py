"""``rftune play GAME``: watch a model play one game turn by turn, or play it yourself with ``--human``. The games
are those of the tasks (`rftune.tasks.GAMES`); each reads the arguments below."""

HELP = "Play a task's game: watch a model (with an optional adapter) play, or play it yourself with --human."


def add_arguments(parser) -> None:
    from rftune.tasks import GAMES

    parser.add_argument("game", choices=sorted(GAMES), help="the game to play")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="model name, folder, .gguf file or NAME@VERSION")
    parser.add_argument("--adapter", help="a LoRA adapter folder (or NAME@VERSION) to apply")
    parser.add_argument("--secret", help="the secret to find (default: a random one)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random secret (and for --sampled)")
    parser.add_argument("--human", action="store_true", help="you play, typing guesses")
    parser.add_argument("--sampled", action="store_true", help="the model samples (default: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="token limit per model reply")
    parser.add_argument("--no-color", action="store_true", help="plain tile text instead of coloured tiles")
    parser.add_argument("--config", help="the run's config: the model plays with its task's prompts and under its "
                                         "generation.constraint (default: the config.yaml of the adapter's run)")
    parser.add_argument("--no-constraint", action="store_true", help="decode freely, even if the config constrains")


def run(args) -> int:
    from rftune.tasks import game_player

    return game_player(args.game)(args)
