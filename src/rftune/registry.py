"""Name -> variant tables filled by a decorator where each variant is defined, so that a new variant (a loss
aggregator, an advantage scaler, a ratio, a generation backend) is one decorated function or class:

    AGGREGATORS = Registry("algorithm.loss_type")

    @AGGREGATORS.register("seq_sum")
    def aggregate_seq_sum(per_token, mask, norms): ...

The config setting named by the registry is checked against it (`Registry.check`): an unknown name is an error
that lists the known ones and suggests the closest.
"""

from __future__ import annotations

import difflib
from typing import Callable, TypeVar

from rftune.errors import ConfigError

T = TypeVar("T")


class Registry(dict):
    """The variants of one setting, by name, in the order they were registered."""

    def __init__(self, setting: str):
        super().__init__()
        self.setting = setting  # the config key whose values are the names, for error messages

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the function or class available under `name`."""

        def add(variant: T) -> T:
            if name in self and self[name] is not variant:
                raise ValueError(f"{self.setting}: {name!r} is registered twice")
            self[name] = variant
            return variant

        return add

    def check(self, name: str) -> None:
        """A ConfigError unless `name` is registered: the known names, and the closest when there is one."""
        if name in self:
            return
        close = difflib.get_close_matches(str(name), list(self), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{self.setting}: must be one of {', '.join(map(repr, self))}, got {name!r}{hint}")
