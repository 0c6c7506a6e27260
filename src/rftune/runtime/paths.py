"""Where rftune keeps what it makes outside a run directory: one cache folder, $RFTUNE_CACHE or ~/.cache/rftune
(converted models, the model repository). Model loading and the repository both find it here."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where rftune keeps converted models: $RFTUNE_CACHE, else ~/.cache/rftune."""
    return Path(os.environ.get("RFTUNE_CACHE", Path.home() / ".cache" / "rftune"))
