"""Subcommands of the ``rftune`` CLI (see `rftune.cli`)."""
