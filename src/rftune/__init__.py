"""rftune: reinforcement fine-tuning of language models with GRPO and programmable rewards."""

__version__ = "0.1.0"
