"""A judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, ``rftune serve``).

Retries are ours, not the client's (it is built with ``max_retries=0``) so that they are visible and testable:
timeouts, connection errors, 408, 409, 429, 5xx and malformed replies (no choices, no text) are retried up to
``max_retries`` times with exponential backoff and jitter — attempt k waits a uniform share between half and all
of ``min(backoff_max, backoff_base * 2**(k-1))`` seconds, at least a 429's ``Retry-After`` (capped). A request
that still fails gives ``None`` and is counted in the judge's ``stats``. Other 4xx replies (a prompt too long, a bad
parameter) are not retried and give ``None``; 401/403/404 mean the config is wrong (key, permission, model name)
and raise `ConfigError`.

At most ``concurrency`` requests are in flight per judge, however many threads call it.

The API key is read from the environment variable *named* by ``api_key_env`` when the judge is built; it is never
stored on the judge, written to the cache, or shown in logs and errors (server messages are scrubbed of it).
``api_key_env=None`` sends a placeholder key, for local servers that check none.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from typing import Callable, Sequence

import openai

from rftune.errors import ConfigError
from rftune.judges.base import Messages, complete_concurrently, judge_counters

log = logging.getLogger("rftune.judges")

_RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx
_CONFIG_ERRORS = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
_NO_KEY = "no-key"


class MalformedReply(Exception):
    """The endpoint answered 2xx with something that is not a chat completion with text."""


class OpenAIJudge:
    """Chat completions from an OpenAI-compatible endpoint, with retries, backoff and bounded concurrency."""

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 4, concurrency: int = 8, temperature: float = 0.0,
                 max_tokens: int = 1024, backoff_base: float = 1.0, backoff_max: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        _check_settings(timeout, max_retries, concurrency, max_tokens)
        self.model = model
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self.backoff_base, self.backoff_max = float(backoff_base), float(backoff_max)
        self.sleep = sleep
        self.cache_identity = f"openai:{model}|temperature={self.temperature}|max_tokens={self.max_tokens}"
        self.stats = judge_counters()
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._random = random.Random()
        options = {"base_url": base_url} if base_url else {}
        self._client = openai.OpenAI(api_key=_read_key(api_key_env, base_url), timeout=float(timeout),
                                     max_retries=0, **options)

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.model!r}, base_url={str(self._client.base_url)!r})"

    def complete(self, messages: Messages) -> str | None:
        with self._slots:
            return self._complete_with_retries(messages)

    def complete_many(self, batch: Sequence[Messages]) -> list[str | None]:
        return complete_concurrently(self.complete, batch, self.concurrency)

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        delay = ceiling * self._random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _complete_with_retries(self, messages: Messages) -> str | None:
        self.stats.add("judge/calls")
        problem, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.add("judge/retries")
                self.sleep(self.backoff_delay(attempt, retry_after))
            try:
                return self._request(messages)
            except _CONFIG_ERRORS as exc:
                raise ConfigError(f"judge endpoint {self._client.base_url} refused model {self.model!r}: "
                                  f"{self._describe(exc)} (check the judge's model, base_url and api_key_env)"
                                  ) from None
            except (openai.APIError, MalformedReply) as exc:
                problem, retry_after = self._describe(exc), _retry_after(exc)
                if not _retryable(exc):
                    break
        self.stats.add("judge/failures")
        log.warning("judge %s gave no reply after %d attempt(s): %s", self.model, attempt + 1, problem)
        return None

    def _request(self, messages: Messages) -> str:
        try:
            response = self._client.chat.completions.create(model=self.model, messages=messages,
                                                            temperature=self.temperature, max_tokens=self.max_tokens)
        except (json.JSONDecodeError, openai.APIResponseValidationError) as exc:
            raise MalformedReply(f"reply is not a chat completion: {exc}") from None
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError):
            raise MalformedReply(f"reply has no choices: {str(response)[:200]!r}") from None
        if not isinstance(text, str):
            raise MalformedReply(f"reply has no text content: {str(response)[:200]!r}")
        return text

    def _describe(self, exc: Exception) -> str:
        status = getattr(exc, "status_code", None)
        text = f"{type(exc).__name__}{f' (HTTP {status})' if status else ''}: {exc}"
        key = self._client.api_key
        return text.replace(key, "***") if key and key != _NO_KEY else text


def _read_key(api_key_env: str | None, base_url: str | None) -> str:
    if api_key_env is None:
        return _NO_KEY
    key = os.environ.get(api_key_env)
    if not key:
        where = base_url or "the OpenAI API"
        raise ConfigError(f"judge api_key_env names environment variable {api_key_env!r}, which is not set; "
                          f"set it to the key for {where}, or set api_key_env to null for a server without keys")
    return key


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, (MalformedReply, openai.APITimeoutError, openai.APIConnectionError)):
        return True
    status = getattr(exc, "status_code", None)
    return status is not None and (status in _RETRYABLE_STATUS or status >= 500)


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _check_settings(timeout: float, max_retries: int, concurrency: int, max_tokens: int) -> None:
    if not timeout > 0:
        raise ConfigError(f"judge timeout must be > 0 seconds, got {timeout!r}")
    if int(max_retries) < 0:
        raise ConfigError(f"judge max_retries must be >= 0, got {max_retries!r}")
    if int(concurrency) < 1:
        raise ConfigError(f"judge concurrency must be >= 1, got {concurrency!r}")
    if int(max_tokens) < 1:
        raise ConfigError(f"judge max_tokens must be >= 1, got {max_tokens!r}")
