"""Old import paths of the modules that moved into packages, kept for one release.

``import rftune.trainer`` (or ``from rftune.trainer import X``, or a monkeypatch of ``"rftune.trainer.X"``)
still works: it warns with a DeprecationWarning naming the new path, and the old name then refers to the new
module itself, so attributes, private names and monkeypatching act on the one real module. The old paths are
served by an import hook rather than by files at the old places, so that nothing is left behind at those paths
and version control still sees each file as moved. Nothing in rftune imports an old path (tests/test_layers.py).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {  # old module under rftune -> its new place
    "atomic_io": "runtime.atomic_io",
    "checkpoint": "train.checkpoint",
    "data": "tasks.data",
    "device": "runtime.device",
    "distributed": "runtime.distributed",
    "evaluate": "evaluation.evaluate",
    "generation": "rollout.generation",
    "generation_vllm": "rollout.vllm_backend",
    "heldout": "tasks.heldout",
    "logprobs": "train.logprobs",
    "models": "model.loading",
    "report": "evaluation.report",
    "rollout_env": "rollout.episodes",
    "run_lock": "runtime.run_lock",
    "sft": "train.sft",
    "sharding": "runtime.sharding",
    "stats": "evaluation.stats",
    "tracking": "runtime.tracking",
    "trainer": "train.trainer",
}


class _OldPath(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``rftune.<old>`` and loads it as the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != "rftune" or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = f"rftune.{MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} has moved to {new}; the old path will be removed in the next release",
                      DeprecationWarning, stacklevel=2)  # points at the importing line (import frames skipped)
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # the import system sets __spec__ to the old path's; put it back
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state


def serve_old_paths() -> None:
    """Install the hook (once), ahead of the path finders: the folder of package data ``rftune/data`` would
    otherwise answer ``import rftune.data`` as an empty namespace package."""
    if not any(isinstance(finder, _OldPath) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldPath())
