"""The model repository: every trained version kept with its lineage, by name and number (``NAME@V``).

`store` holds the index and the files, `runs` records finished `rftune train`/`rftune sft` runs as versions,
`export` writes and reads Hugging Face folders with a model card. The repository lives in ``repository.path``
(config), else ``$RFTUNE_REPOSITORY``, else ``<rftune cache>/repository``.

A reference ``NAME@V``, ``NAME@TAG`` or ``NAME@latest`` works wherever a model or adapter path does:
`resolve_for_loading` turns it into the folders `rftune.model.loading` loads.
"""

from __future__ import annotations

import os
from pathlib import Path

from rftune.errors import RepositoryError
from rftune.repository.store import Repository, Version, is_reference
from rftune.runtime.paths import cache_dir

__all__ = ["Repository", "Version", "is_reference", "open_repository", "repository_location",
           "resolve_for_loading"]


def repository_location(path: str | Path | None = None) -> Path:
    """`path` when given, else ``$RFTUNE_REPOSITORY``, else ``<rftune cache>/repository``."""
    if path:
        return Path(path).expanduser()
    if os.environ.get("RFTUNE_REPOSITORY"):
        return Path(os.environ["RFTUNE_REPOSITORY"]).expanduser()
    return cache_dir() / "repository"


def open_repository(path: str | Path | None = None) -> Repository:
    return Repository(repository_location(path))


def resolve_for_loading(name_or_path: str, adapter: str | None = None,
                        repository: Repository | None = None) -> tuple[str, str | None]:
    """(model, adapter) with references replaced by folders: an adapter version given as the model becomes its
    base model plus the version's adapter; a full-weights version becomes its folder."""
    if not (is_reference(name_or_path) or is_reference(adapter)):
        return name_or_path, adapter
    repository = repository or open_repository()
    if is_reference(adapter):
        version = repository.resolve(adapter)
        if version.kind != "adapter":
            raise RepositoryError(f"{adapter} holds full weights, not an adapter: pass it as the model instead")
        adapter = str(repository.checkout(version))
    if is_reference(name_or_path):
        version = repository.resolve(name_or_path)
        if version.kind == "full":
            return str(repository.checkout(version)), adapter
        if adapter:
            raise RepositoryError(f"{name_or_path} is an adapter version and an adapter ({adapter}) is given too; "
                                  "give one of them")
        return base_model_name(version), str(repository.checkout(version))
    return name_or_path, adapter


def base_model_name(version: Version) -> str:
    """The model the version's adapter applies to, as the run named it."""
    return version.info["base_model"]["name"]
