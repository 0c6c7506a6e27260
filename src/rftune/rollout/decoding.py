"""Token-by-token decoding of one chat reply, for serving: text as it is generated, stop strings that end
generation, and each token's log-probability with its most likely alternatives.

`decode_reply` yields `Delta`s (new text and the log-probabilities of the tokens behind it) and returns a `Finish`
(why it ended, tokens generated). The stop rule is rftune's (`rftune.rollout.generation.eos_token_ids`: an EOS token
ends a reply, kept in the token count but not in the text), plus the request's stop strings: generation stops at the
first token whose text completes one, and the reply's text ends before it. Text that could still become a stop
string, or ends inside a multi-byte character, is held back until the next tokens decide.

Sampling: temperature 0 is greedy; otherwise softmax(logits / temperature) within nucleus ``top_p``, drawn with
the request's generator; under a constraint (`rftune.constraints`) the tokens it forbids are removed first (a
dead end forces EOS). Log-probabilities are those of the model's own distribution (log-softmax of the raw
logits, before temperature and top_p), as OpenAI reports them. One sequence at a time with the model's KV cache:
a serving loop for a request, not the batched rollout path of training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generator, Sequence

import torch

from rftune.rollout.generation import eos_token_ids
from rftune.runtime.device import model_device

REPLACEMENT = "\ufffd"  # what decoding shows for an incomplete UTF-8 sequence


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, log-probability, and the ``top`` most likely tokens at its position."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)  # (text, logprob), most likely first


@dataclass(frozen=True)
class Delta:
    text: str
    logprobs: list[TokenLogprob]


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop" (EOS or a stop string) or "length"
    completion_tokens: int


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    top_logprobs: int = 0  # alternatives recorded per token (0 = only the chosen token's log-probability)
    constraint: Any = None  # a compiled `rftune.constraints.Constraint`: each token is drawn under its mask


def decode_reply(model, tokenizer, prompt: list[int], sampling: Sampling,
                 generator: torch.Generator) -> Generator[Delta, None, Finish]:
    """Generate one reply to the tokenised `prompt`, yielding its text as it becomes final."""
    eos, device = set(eos_token_ids(tokenizer, model)), model_device(model)
    tokens: list[int] = []
    pending: list[TokenLogprob] = []
    sent = 0  # characters of the reply already yielded
    inputs, cache = torch.tensor([prompt], device=device), None
    ended_by_eos = False
    guide = sampling.constraint.guide(1) if sampling.constraint else None
    row = torch.zeros(1, dtype=torch.long)  # the guide's one row
    for step in range(sampling.max_tokens):
        with torch.no_grad():
            output = model(input_ids=inputs, past_key_values=cache, use_cache=True)
        cache, logits = output.past_key_values, output.logits[0, -1].float().cpu()  # [V]
        allowed = guide.mask_logits(logits[None], row, step)[0] if guide else logits  # [V], forbidden at -inf
        token = _pick(allowed, sampling, generator)
        if guide:
            guide.advance(row, torch.tensor([token]))
        if token in eos:
            ended_by_eos = True
            break
        tokens.append(token)
        pending.append(_logprob(tokenizer, logits, token, sampling.top_logprobs))
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((text.find(s) for s in sampling.stop if s in text), default=-1)
        if cut >= 0:  # a stop string: the reply ends before it
            yield Delta(text[sent:cut], pending)
            return Finish("stop", len(tokens))
        final = _final_length(text, sampling.stop)
        if final > sent:
            yield Delta(text[sent:final], pending)
            pending, sent = [], final
        inputs = torch.tensor([[token]], device=device)
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    if len(text) > sent or pending:
        yield Delta(text[sent:], pending)
    # the EOS token counts, as in training's completion lengths
    return Finish("stop", len(tokens) + 1) if ended_by_eos else Finish("length", len(tokens))


def _pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """Greedy at temperature 0, else a draw from the tempered nucleus."""
    if sampling.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)  # [V]
    if sampling.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        outside = ordered.cumsum(0) - ordered >= sampling.top_p  # the most likely token always stays
        probs = probs.clone()
        probs[order[outside]] = 0.0
    return int(torch.multinomial(probs, 1, generator=generator))


def _logprob(tokenizer, logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    logprobs = torch.log_softmax(logits, dim=-1)  # [V]
    alternatives = []
    if top:
        values, ids = logprobs.topk(top)
        alternatives = [(tokenizer.decode([i]), v) for i, v in zip(ids.tolist(), values.tolist())]
    return TokenLogprob(tokenizer.decode([token]), float(logprobs[token]), alternatives)


def _final_length(text: str, stops: Sequence[str]) -> int:
    """How much of `text` no later token can change: without a trailing partial character, and without an end
    that begins a stop string."""
    end = len(text.rstrip(REPLACEMENT))
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end = min(end, len(text[:end]) - size)
                break
    return end
