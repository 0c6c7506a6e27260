"""``rftune setup``: fetch and convert the embedded default model once, so later runs start at once."""

from rftune.model.loading import ensure_default_model

HELP = "Fetch the embedded default model (SmolLM2-135M-Instruct) and cache it as safetensors."


def add_arguments(parser) -> None:
    del parser  # no options


def run(args) -> int:
    ensure_default_model()
    return 0
