"""GRPO's algorithm core: pure tensor functions for advantages and losses (no I/O, no model)."""
