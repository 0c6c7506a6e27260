"""Named reward functions and resolution of reward specs from config files.

A reward spec is one of
  - a built-in name (``exact_answer``, ``format_regex``, ...), registered with `register_reward`;
  - ``package.module:function`` — imported with importlib;
  - ``path/to/file.py:function`` — loaded from a file (relative paths are resolved against the config's folder).

Built-in rewards live in several modules (core, code, judges, text, Wordle); they are imported lazily the first time a
name is looked up so that `import rftune` stays light. A task may register rewards of its own the same way (its
module registers them when it is imported, as the built-in tasks do when they are built); their names are known
from then on.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from pathlib import Path
from typing import Callable

from rftune.errors import ConfigError
from rftune.registry import Registry

_REGISTRY = Registry("reward name")

# Modules whose import registers built-in rewards. Add a module here when it defines @register_reward functions.
BUILTIN_MODULES = (
    "rftune.rewards.builtin",
    "rftune.rewards.code",
    "rftune.rewards.judge",
    "rftune.rewards.text",
    "rftune.envs.wordle.rewards",  # the course's Wordle rewards, also for Wordle rows in a user's dataset
)


def register_reward(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make `fn` available in configs under `name`."""
    return _REGISTRY.register(name)


def builtin_rewards() -> dict[str, Callable]:
    """All registered built-in rewards, by name."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


def resolve_reward(spec: str, base_dir: Path | None = None) -> Callable:
    """Turn a reward spec string into a callable; raises ConfigError with a suggestion when it cannot."""
    if ":" not in spec:
        known = builtin_rewards()
        if spec in known:
            return known[spec]
        close = difflib.get_close_matches(spec, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else f" Built-ins: {', '.join(sorted(known))}."
        raise ConfigError(f"unknown reward {spec!r}.{hint} Use 'module:function' or 'file.py:function' for your own.")
    target, _, attr = spec.rpartition(":")
    module = _load_file(target, base_dir) if target.endswith(".py") else _import_module(target, spec)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"reward {spec!r}: {target} has no callable named {attr!r}")
    return fn


def _import_module(name: str, spec: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"reward {spec!r}: cannot import module {name!r} ({exc})") from exc


def _load_file(path_text: str, base_dir: Path | None):
    path = Path(path_text)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(f"reward file not found: {path_text}")
    module_spec = importlib.util.spec_from_file_location(f"rftune_user_reward_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file failed to import: say which file and why
        raise ConfigError(f"reward file {path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def reward_functions(specs, base_dir: Path | None = None) -> list:
    """`RewardFunction`s for config reward specs (``name``, ``weight``, ``kwargs``), with unique names."""
    from rftune.rewards.base import as_reward_function, unique_names

    return unique_names([as_reward_function(resolve_reward(s.name, base_dir), name=s.name.rpartition(":")[2],
                                            weight=s.weight, kwargs=s.kwargs) for s in specs])
