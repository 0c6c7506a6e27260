"""A multi-turn number-guessing game as a user's own rftune task: environment, rewards, SFT traces and evaluation.

Modules: `game` (pure rules and the bisecting solver), `env` (the `Env` protocol), `rewards`, `task` (the factory
`make_task` that bundles them). Train and evaluate from the repository's root::

    rftune train examples/number_guess/config.yaml
    rftune eval examples/number_guess/config.yaml
"""
