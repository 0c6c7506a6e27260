"""Text penalties that counter reward hacking: copying the source, and length measured in tokens.

``copy_penalty`` returns ``-copy_fraction * scale``, where `copy_fraction` is the share of the completion's word
n-grams (lower-cased ``\\w+`` words, counted with repetition) that also occur in the source document. A summary
that pastes the source scores near -scale; one in its own words near 0. The source is the row's ``document``
column (``source_key``), or the prompt's text when the row has no such column.

``length_penalty_tokens`` is the built-in ``length_penalty`` formula (0 up to ``target``, then
``max((target - length) / target, floor)``) with the length counted in tokens of a named tokenizer, loaded once.
"""

from __future__ import annotations

import functools
import re

from rftune.errors import ConfigError
from rftune.rewards.registry import register_reward

_WORD = re.compile(r"\w+")


def word_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """The lower-cased word n-grams of ``text``, in order and with repetition."""
    words = _WORD.findall(text.lower())
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def copy_fraction(completion: str, document: str, n: int = 4) -> float:
    """Share (0..1) of the completion's word n-grams found in ``document``; 0 for a completion under n words."""
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    grams = word_ngrams(completion, n)
    if not grams:
        return 0.0
    source = set(word_ngrams(document, n))
    return sum(gram in source for gram in grams) / len(grams)


@register_reward("copy_penalty")
def copy_penalty(prompt, completion: str, example: dict, n: int = 4, scale: float = 1.0,
                 source_key: str = "document") -> float:
    """``-copy_fraction(completion, source, n) * scale``; see the module docstring for the source."""
    source = example.get(source_key)
    if source is None:
        source = _prompt_text(prompt)
    return -copy_fraction(completion, str(source), n) * scale


def _prompt_text(prompt) -> str:
    if isinstance(prompt, list):
        return "\n".join(str(message.get("content", "")) for message in prompt if isinstance(message, dict))
    return str(prompt)


@functools.lru_cache(maxsize=4)
def _tokenizer(name_or_path: str):
    from rftune.model.loading import load_tokenizer

    return load_tokenizer(name_or_path)


@register_reward("length_penalty_tokens")
def length_penalty_tokens(prompt, completion: str, example: dict, tokenizer: str | None = None, target: int = 256,
                          floor: float = -10.0) -> float:
    """0 up to ``target`` tokens, then ``max((target - tokens) / target, floor)``; tokens of ``tokenizer``."""
    if not tokenizer:
        raise ConfigError("length_penalty_tokens needs the option 'tokenizer': a model name or folder whose "
                          "tokenizer counts the tokens (usually the policy model)")
    if target < 1:
        raise ConfigError(f"length_penalty_tokens target must be >= 1 token, got {target}")
    length = len(_tokenizer(tokenizer)(completion, add_special_tokens=False)["input_ids"])
    if length <= target:
        return 0.0
    return max((target - length) / target, floor)
