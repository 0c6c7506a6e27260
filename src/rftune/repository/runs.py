"""Finished runs recorded as repository versions, and references in a run's config resolved to folders.

A command that trains calls `begin_run` first (references in ``model.name_or_path`` / ``model.adapter`` become
folders; the parent version is found: the referenced version, or the version whose files equal the
``model.adapter`` folder) and `register_sft` / `register_grpo` when it has finished. Each version records:

- ``base_model``: the model as the run named it (a reference stays one) and the sha256 of its weight files
  (cached per folder under ``weight-hashes/``, keyed by the files' names, sizes and modification times);
- ``config`` (the resolved run config), ``data`` (sha256 of the training data, its row count and source),
  ``rewards`` (name, weight, kwargs and the sha256 of each function's source, via `inspect`), ``metrics`` (the
  last ``metrics.jsonl`` row), ``run_dir``, ``stage`` and the start/finish times.

`attach_eval` attaches `rftune eval` results to the versions that were evaluated.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rftune.config import Config, to_dict
from rftune.repository import open_repository, resolve_for_loading
from rftune.repository.store import (
    Repository,
    Version,
    file_sha256,
    is_reference,
    manifest_of,
    now,
    tree_hash,
)
from rftune.runtime.atomic_io import write_text_atomic
from rftune.runtime.jsonl import read_jsonl

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass(frozen=True)
class RunStart:
    """A run about to train: its config with references resolved, where it starts from, and when."""

    config: Config
    repository: Repository
    parent: Version | None  # the version the run continues (None: fresh from the base model)
    base_model: str  # the base model as the user named it
    started_at: str


def repository_for(config: Config) -> Repository:
    path = config.repository.path
    return open_repository(Path(config.base_dir) / path if path else None)


def version_name(config: Config) -> str:
    """``repository.name``, else the run folder's name (``train.output_dir``'s last part) made a valid name."""
    if config.repository.name:
        return config.repository.name
    folder = Path(config.train.output_dir).resolve().name
    return re.sub(r"[^A-Za-z0-9._-]", "-", folder).lstrip("._-") or "run"


def begin_run(config: Config) -> RunStart:
    """Resolve the config's references and find the parent version (see the module docstring)."""
    repository = repository_for(config)
    model = config.model
    parent = None
    base_model = model.name_or_path
    if is_reference(model.name_or_path):
        parent = repository.resolve(model.name_or_path)
        base_model = parent.info["base_model"]["name"] if parent.kind == "adapter" else model.name_or_path
    if is_reference(model.adapter):
        parent = repository.resolve(model.adapter)
    elif model.adapter and Path(model.adapter).is_dir():
        parent = repository.find_by_tree(tree_hash(manifest_of(model.adapter)), version_name(config))
    name, adapter = resolve_for_loading(model.name_or_path, model.adapter, repository)
    config = replace(config, model=replace(model, name_or_path=name, adapter=adapter))
    if not is_reference(base_model) and Path(base_model).exists():  # a local model: loadable from any folder
        base_model = str(Path(base_model).resolve())
    return RunStart(config, repository, parent, base_model, now())


def register_sft(start: RunStart, config: Config, adapter: Path, data_path: Path, run_dir: Path,
                 reuse: bool = False) -> Version:
    """Register the SFT stage's adapter, trained on `data_path` in `run_dir`; with `reuse`, an existing version of
    exactly these files is returned instead (a chained `rftune train` that reused a finished SFT adapter)."""
    if reuse:
        found = start.repository.find_by_tree(tree_hash(manifest_of(adapter)), version_name(config))
        if found is not None:
            return found
    data = {"source": str(data_path), "sha256": file_sha256(data_path), "rows": _count_lines(data_path)}
    return _register(start, config, adapter, stage="sft", run_dir=run_dir, data=data, rewards=[],
                     parent=start.parent)


def register_grpo(start: RunStart, config: Config, trainer, parent: Version | None) -> Version:
    """Register a finished GRPO run (`trainer` has trained) from its ``final`` folder."""
    samples = [{"prompt": s.prompt, "example": s.example} for s in trainer.task.samples]
    source = str(Path(config.base_dir) / config.task.path) if config.task.path else f"task {config.task.name}"
    data = {"source": source, "rows": len(samples),
            "sha256": hashlib.sha256(_canonical_json(samples).encode()).hexdigest()}
    rewards = [reward_record(rf) for rf in trainer.reward_functions]
    return _register(start, config, trainer.output_dir / "final", stage="grpo", run_dir=trainer.output_dir,
                     data=data, rewards=rewards, parent=parent)


def _register(start: RunStart, config: Config, folder: Path, *, stage: str, run_dir: Path, data: dict,
              rewards: list[dict], parent: Version | None) -> Version:
    info = {
        "stage": stage,
        "base_model": {"name": start.base_model, "sha256": weights_sha256(start.repository, start.base_model)},
        "parent_ref": parent.ref if parent else None,
        "config": to_dict(config),
        "data": data,
        "rewards": rewards,
        "metrics": last_metrics(Path(run_dir) / "metrics.jsonl"),
        "run_dir": str(Path(run_dir).resolve()),
        "started_at": start.started_at,
        "finished_at": now(),
    }
    kind = "adapter" if (Path(folder) / "adapter_config.json").is_file() else "full"
    return start.repository.register(version_name(config), folder, kind=kind, info=info,
                                     parent_id=parent.id if parent else None)


def reward_record(reward_function) -> dict[str, Any]:
    """Name, weight, kwargs and the sha256 of the function's source (None when Python cannot show it)."""
    fn = reward_function.fn
    target = fn.func if isinstance(fn, functools.partial) else fn
    try:
        source_sha256 = hashlib.sha256(inspect.getsource(target).encode()).hexdigest()
    except (OSError, TypeError):
        source_sha256 = None
    return {"name": reward_function.name, "weight": reward_function.weight, "kwargs": reward_function.kwargs,
            "function": f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}",
            "source_sha256": source_sha256}


def weights_sha256(repository: Repository, model: str) -> str | None:
    """sha256 over the model's weight files (name and content hash of each); None for a model not on disk."""
    from rftune.model.loading import resolve_model_path

    path = Path(resolve_model_path(resolve_for_loading(model, None, repository)[0]))
    files = [path] if path.is_file() else sorted(p for p in path.glob("*") if p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    signature = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    cache = repository.root / "weight-hashes" / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached["signature"] == signature:
            return cached["sha256"]
    digest = hashlib.sha256(json.dumps({p.name: file_sha256(p) for p in files}, sort_keys=True).encode())
    write_text_atomic(cache, json.dumps({"path": str(path), "signature": signature, "sha256": digest.hexdigest()}))
    return digest.hexdigest()


def last_metrics(path: Path) -> dict[str, Any]:
    """The last complete row of a metrics.jsonl file ({} when there is none)."""
    if not path.is_file():
        return {}
    records = read_jsonl(path, log=True, skip_bad=True)  # a line cut short by a kill is left out
    return records[-1] if records else {}


def attach_eval(repository: Repository, version: Version, row: dict[str, Any], *, report: str | Path,
                seed: int, sampled: bool, kind: str = "task") -> None:
    """Attach one player's `rftune eval` summary row to `version` (`kind`: ``task`` for held-out rows, else the name
    of the task whose own evaluation made the row, e.g. one that plays games)."""
    repository.attach_eval(version, {"kind": kind, "summary": row, "report": str(Path(report).resolve()),
                                     "seed": seed, "sampled": sampled})


def version_of_folder(repository: Repository, folder: str | Path) -> Version | None:
    """The newest version whose files are exactly those of `folder`."""
    return repository.find_by_tree(tree_hash(manifest_of(folder)))


def _canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False,
                      default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o))


def _count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())
