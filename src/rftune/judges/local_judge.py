"""A judge run in-process by any model rftune can load (the embedded default unless told otherwise).

Replies are greedy by default (``temperature=0``), so a judge's verdict on a prompt is reproducible and cacheable.
Prompts are generated in batches of ``batch_size``, one batch at a time behind a lock (one model, one device).
A prompt longer than the model's context (less ``max_tokens``) gets ``None`` and is counted as a failure rather
than being silently cut, since cutting would drop either the rubric or the text being judged.

`chat_replies` is the batched chat generation shared with ``rftune serve``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Sequence

from rftune.errors import ConfigError
from rftune.judges.base import Messages, judge_counters
from rftune.model.loading import DEFAULT_MODEL, load_model_and_tokenizer
from rftune.rollout.generation import SamplingParams, eos_token_ids, generate_replies
from rftune.runtime.device import resolve_device

log = logging.getLogger("rftune.judges")


@dataclass(frozen=True)
class Reply:
    """One generated reply with its token counts; ``finish_reason`` is "stop" (end of turn) or "length"."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def chat_prompt_ids(tokenizer, messages: Messages) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("this model's tokenizer has no chat template, so it cannot answer chat messages")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def context_limit(model) -> int | None:
    """The longest sequence the model accepts (prompt + reply), when its config says."""
    return getattr(model.config, "max_position_embeddings", None)


def chat_replies(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, num_return_sequences: int = 1, constraint=None) -> list[list[Reply]]:
    """``num_return_sequences`` replies for each tokenised prompt, in one batch through rftune's one generation
    interface and stop rule (`rftune.rollout.generation`); temperature 0 is greedy; ``constraint``: a compiled
    `rftune.constraints.Constraint` the replies keep to (None: unconstrained)."""
    params = SamplingParams(num_generations=num_return_sequences, max_new_tokens=max_new_tokens,
                            temperature=temperature if temperature > 0 else 1.0, top_p=top_p, constraint=constraint)
    generated = generate_replies(model, tokenizer, list(prompts), params, max_new_tokens, greedy=temperature <= 0)
    stops = set(eos_token_ids(tokenizer, model))
    replies = [_reply(tokens, len(prompts[i // num_return_sequences]), stops, tokenizer)
               for i, tokens in enumerate(generated)]
    return [replies[i:i + num_return_sequences] for i in range(0, len(replies), num_return_sequences)]


def _reply(tokens: list[int], prompt_tokens: int, stops: set[int], tokenizer) -> Reply:
    ended = bool(tokens) and tokens[-1] in stops
    kept = tokens[:-1] if ended else tokens
    text = tokenizer.decode(kept, skip_special_tokens=True)
    return Reply(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(tokens),
                 finish_reason="stop" if ended else "length")


class LocalJudge:
    """A judge backed by a model loaded into this process."""

    def __init__(self, model: str = DEFAULT_MODEL, adapter: str | None = None, dtype: str = "float32",
                 device: str | None = None, temperature: float = 0.0, max_tokens: int = 512,
                 batch_size: int = 8) -> None:
        if int(max_tokens) < 1 or int(batch_size) < 1:
            raise ConfigError(f"local judge max_tokens and batch_size must be >= 1, got {max_tokens}, {batch_size}")
        self.model_name = model
        self.temperature, self.max_tokens, self.batch_size = float(temperature), int(max_tokens), int(batch_size)
        self.device = resolve_device(device or "auto")  # before the model is loaded
        self.model, self.tokenizer = load_model_and_tokenizer(model, dtype=dtype, adapter=adapter)
        self.model.to(self.device)
        self.cache_identity = (f"local:{model}|adapter={adapter}|temperature={self.temperature}"
                               f"|max_tokens={self.max_tokens}")
        self.stats = judge_counters()
        self._lock = threading.Lock()

    def complete(self, messages: Messages) -> str | None:
        return self.complete_many([messages])[0]

    def complete_many(self, batch: Sequence[Messages]) -> list[str | None]:
        self.stats.add("judge/calls", len(batch))
        prompts = [chat_prompt_ids(self.tokenizer, messages) for messages in batch]
        limit = context_limit(self.model)
        fits = [i for i, ids in enumerate(prompts) if limit is None or len(ids) + self.max_tokens <= limit]
        if len(fits) < len(prompts):
            self.stats.add("judge/failures", len(prompts) - len(fits))
            log.warning("local judge %s: %d prompt(s) longer than its context of %s tokens less max_tokens=%d",
                        self.model_name, len(prompts) - len(fits), limit, self.max_tokens)
        replies: list[str | None] = [None] * len(batch)
        for start in range(0, len(fits), self.batch_size):
            chunk = fits[start:start + self.batch_size]
            with self._lock:
                generated = chat_replies(self.model, self.tokenizer, [prompts[i] for i in chunk], self.max_tokens,
                                         temperature=self.temperature)
            for i, (reply,) in zip(chunk, generated):
                replies[i] = reply.text
        return replies
