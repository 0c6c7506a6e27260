"""Crash-safe checkpoints.

A checkpoint is a folder ``<output_dir>/checkpoints/step-NNNNNN`` holding the model (PEFT adapter or full
weights, via ``save_pretrained``), ``state.pt`` (optimizer, scheduler, RNG states), ``trainer_state.json`` (step,
data position), ``config.json`` (the run's resolved config) and, written last, ``manifest.json`` (size and sha256
of every other file, `rftune.runtime.atomic_io.write_manifest`). It is written under a temporary name, flushed to
disk, and renamed into place, so a kill at any moment leaves either the complete new checkpoint or none. A
checkpoint counts only if every file verifies against its manifest: `find_resumable` takes the newest one that does
and names the
newer ones it skipped, and why (a file cut short, changed, missing). Leftovers from an interrupted save
(``.tmp-*``) are removed on the next save; a save that fails (disk full, read-only folder) removes its own and
raises a `StorageError`, leaving the earlier checkpoints as they were.

`shape_changes` compares a checkpoint's config with the current one on the keys that fix the shape of what was
saved (``SHAPE_KEYS``): those cannot change on resume.
"""

from __future__ import annotations

import functools
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from rftune.runtime.atomic_io import storage_errors, verify_folder, write_folder
from rftune.runtime.sharding import is_sharded, load_model_state, load_optimizer_state

PREFIX = "step-"
SHAPE_KEYS = ("model.name_or_path", "lora.enabled", "lora.r", "lora.target_modules")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Every ``step-NNNNNN`` folder, oldest first, complete or not (see `find_resumable`)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=_step_of)


def find_resumable(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest checkpoint whose files all verify, or None; the newer ones skipped, each with its problems)."""
    skipped = []
    for path in reversed(list_checkpoints(output_dir)):
        problems = verify_folder(path)
        if not problems:
            return path, skipped
        skipped.append((path, "; ".join(problems)))
    return None, skipped


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (None when there is none)."""
    return find_resumable(output_dir)[0]


def shape_changes(path: Path, current: dict) -> list[str]:
    """`SHAPE_KEYS` whose value in checkpoint `path`'s config differs from `current` (a `to_dict` config), as
    ``key: checkpoint X, now Y``; empty for a checkpoint saved without a config."""
    saved_file = path / "config.json"
    if not saved_file.is_file():
        return []
    saved = json.loads(saved_file.read_text())
    changes = []
    for key in SHAPE_KEYS:
        section, name = key.split(".")
        before, now = saved.get(section, {}).get(name), current.get(section, {}).get(name)
        if before != now:
            changes.append(f"{key}: checkpoint {before!r}, now {now!r}")
    return changes


def rng_states() -> dict:
    """Every random stream a run draws from: torch (CPU and, where present, each CUDA device), Python, NumPy."""
    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    """Restore `rng_states`; CUDA states are restored where this machine has the same devices (a checkpoint made
    on a GPU resumes on a CPU, and back, with the CPU streams restored)."""
    torch.set_rng_state(states["torch"].cpu())
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([state.cpu() for state in cuda])


def save_checkpoint(output_dir: str | Path, step: int, model, optimizer, scheduler, trainer_state: dict,
                    keep: int, rng_per_rank: list[dict] | None = None, model_state: dict | None = None,
                    optimizer_state: dict | None = None, config: dict | None = None) -> Path:
    """Write a checkpoint atomically and keep only the `keep` newest. ``rng_per_rank``: every rank's
    `rng_states` (None: this process's). ``model_state`` / ``optimizer_state``: the gathered full states of a
    sharded model (`rftune.runtime.sharding`), written instead of the model's and optimizer's own. ``config``: the run's
    resolved config, which `shape_changes` reads back."""
    root = checkpoint_root(output_dir)
    with storage_errors(root, "checkpoint folder"):
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    final = write_folder(root / f"{PREFIX}{step:06d}", functools.partial(
        _write_checkpoint, model=model, optimizer=optimizer, scheduler=scheduler, trainer_state=trainer_state,
        rng_per_rank=rng_per_rank, model_state=model_state, optimizer_state=optimizer_state, config=config),
        "checkpoint")  # a checkpoint of this step from an earlier attempt is replaced
    # keep the `keep` newest up to this step; newer folders are damaged ones a resume went back past, left to be
    # replaced when their step is redone (pruning by name alone could delete the checkpoint just written)
    older = [p for p in list_checkpoints(output_dir) if _step_of(p) < step]
    for old in older[:max(0, len(older) - keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _step_of(path: Path) -> int:
    return int(path.name[len(PREFIX):])


def _write_checkpoint(staging: Path, model, optimizer, scheduler, trainer_state: dict, rng_per_rank, model_state,
                      optimizer_state, config: dict | None) -> None:
    gathered = {} if model_state is None else {"state_dict": model_state}
    model.save_pretrained(staging / "model", safe_serialization=True, **gathered)
    optimizer_state = optimizer.state_dict() if optimizer_state is None else optimizer_state
    torch.save({"optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                "rng": rng_per_rank or [rng_states()]}, staging / "state.pt")
    (staging / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    if config is not None:
        (staging / "config.json").write_text(json.dumps(config, indent=2, default=str))


def load_checkpoint(path: Path, model, optimizer, scheduler, lora: bool, rank: int = 0, world_size: int = 1) -> dict:
    """Restore model weights, optimizer, scheduler and this rank's RNG; return the trainer state. A checkpoint of
    another world size restores rank 0's random state on every rank (sampling then differs, the rest continues)."""
    load_weights(model, path / "model", lora)
    state = torch.load(path / "state.pt", weights_only=False, map_location="cpu")  # the optimizer moves its state
    # to the device of its parameters on load; RNG states live on the CPU
    if is_sharded(model):
        load_optimizer_state(model, optimizer, state["optimizer"])
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    per_rank = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
    restore_rng_states(per_rank[rank] if len(per_rank) == world_size else per_rank[0])
    return read_trainer_state(path)


def read_trainer_state(path: Path) -> dict:
    """A checkpoint's trainer state (step, data position, world size, sharding)."""
    return json.loads((path / "trainer_state.json").read_text())


def load_weights(model, folder: Path, lora: bool) -> None:
    """Load saved weights into an existing model in place (a LoRA adapter, or full weights)."""
    from safetensors.torch import load_file

    if lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        return
    weights = {}
    for shard in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(shard))
    loaded = load_model_state(model, weights) if is_sharded(model) else model.load_state_dict(weights, strict=False)
    missing, unexpected = loaded
    tied = {name for name in missing if "lm_head" in name}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"checkpoint {folder} does not match the model: missing {missing}, unexpected {unexpected}")
