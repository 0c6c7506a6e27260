"""Building judges from config dicts: `build_judge` makes a new one (the trainer owns the judges it builds),
`make_judge` memoises one per spec for the process (library calls of the judge rewards without a judge).

A spec is a plain dict (the ``judge`` option of a reward in a config file)::

    {"backend": "local", "model": "smollm2-135m-instruct"}                  # the default
    {"backend": "openai", "model": "gpt-4o-mini"}                           # key from $OPENAI_API_KEY
    {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:8000/v1", "api_key_env": null}

Common keys: ``backend``, ``model``, ``temperature``, ``max_tokens``, ``cache_path`` (an SQLite file; replies and
quizzes are cached there across runs). OpenAI keys: ``base_url``, ``api_key_env``, ``timeout``, ``max_retries``,
``concurrency``, ``backoff_base``, ``backoff_max``. Local keys: ``adapter``, ``dtype``, ``device``,
``batch_size``. Unknown keys and wrong types raise `ConfigError` naming the key.
"""

from __future__ import annotations

import difflib
import json
import threading
from typing import Any

from rftune.errors import ConfigError
from rftune.judges.base import Judge
from rftune.judges.cache import CachedJudge, JudgeCache

_NUMBER = (int, float)
_COMMON = {"backend": str, "model": str, "temperature": _NUMBER, "max_tokens": int, "cache_path": str}
_BACKEND_KEYS = {
    "openai": {"base_url": str, "api_key_env": (str, type(None)), "timeout": _NUMBER, "max_retries": int,
               "concurrency": int, "backoff_base": _NUMBER, "backoff_max": _NUMBER},
    "local": {"adapter": (str, type(None)), "dtype": str, "device": (str, type(None)), "batch_size": int},
}

_judges: dict[str, Judge] = {}
_caches: dict[str, JudgeCache] = {}
_lock = threading.Lock()


def build_judge(spec: dict[str, Any] | None = None) -> Judge:
    """A new judge described by ``spec`` (None = the local default), with its own counters."""
    spec = dict(spec or {})
    _validate(spec)
    return _build(spec)


def make_judge(spec: dict[str, Any] | None = None) -> Judge:
    """The judge described by ``spec`` (None = the local default), built once per distinct spec."""
    spec = dict(spec or {})
    _validate(spec)
    memo_key = json.dumps(spec, sort_keys=True)
    with _lock:
        if memo_key not in _judges:
            _judges[memo_key] = _build(spec)
        return _judges[memo_key]


def resolve_judge(judge: Judge | dict[str, Any] | None) -> Judge:
    """Accept a ready judge object (library use) or a spec dict (config use)."""
    if judge is None or isinstance(judge, dict):
        return make_judge(judge)
    if not isinstance(judge, Judge):
        raise ConfigError(f"judge must be a mapping of judge settings or a judge object, got {type(judge).__name__}")
    return judge


def clear_judges() -> None:
    """Forget memoised judges and close their caches (tests; freeing a local judge's memory)."""
    with _lock:
        _judges.clear()
        for cache in _caches.values():
            cache.close()
        _caches.clear()


def _build(spec: dict[str, Any]) -> Judge:
    options = {key: value for key, value in spec.items() if key not in ("backend", "cache_path")}
    if spec.get("backend", "local") == "openai":
        from rftune.judges.openai_judge import OpenAIJudge

        judge = OpenAIJudge(**options)
    else:
        from rftune.judges.local_judge import LocalJudge

        judge = LocalJudge(**options)
    cache_path = spec.get("cache_path")
    if cache_path is None:
        return judge
    if cache_path not in _caches:
        _caches[cache_path] = JudgeCache(cache_path)
    return CachedJudge(judge, _caches[cache_path])


def _validate(spec: dict[str, Any]) -> None:
    backend = spec.get("backend", "local")
    if backend not in _BACKEND_KEYS:
        raise ConfigError(f"judge backend must be one of {sorted(_BACKEND_KEYS)}, got {backend!r}")
    allowed = {**_COMMON, **_BACKEND_KEYS[backend]}
    for key, value in spec.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown judge setting {key!r} for backend {backend!r}.{hint} "
                              f"Known: {', '.join(sorted(allowed))}.")
        expected = allowed[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            names = " or ".join(t.__name__.replace("NoneType", "null")
                                for t in (expected if isinstance(expected, tuple) else (expected,)))
            raise ConfigError(f"judge setting {key!r} must be {names}, got {value!r}")
    if backend == "openai" and "model" not in spec:
        raise ConfigError("judge backend 'openai' needs a 'model' (the model name the endpoint serves)")
