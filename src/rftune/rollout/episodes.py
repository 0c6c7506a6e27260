"""Multi-turn rollouts: G episodes per sample, played against an environment (the `rftune.envs.base.Env` protocol).

Each turn, the assistant replies of every unfinished episode are generated in one batch (sampling with the step's
`SamplingParams`); each reply goes to its environment's `step`, whose messages are appended, until the environment
says done, ``env.max_turns`` replies have been made, or the episode's token budget is spent.

How an episode becomes a `RolloutBatch` row:
    prompt_ids       the initial conversation from ``env.reset`` rendered with the chat template, ending with the
                     generation prompt (the same ids `rftune.rollout.generation.encode_prompts` gives)
    completion_ids   everything after it, in order: each reply's generated ids *verbatim* (through its end-of-turn
                     token), then the environment's turn as the chat template renders it (from just after the
                     reply's end-of-turn token through the next generation prompt)
    completion_mask  1 exactly on the generated ids; environment tokens have attention 1 and completion_mask 0

Token boundaries come from the chat template: the conversation is rendered before and after the environment's
messages and the text in between is tokenized on its own. It starts right after the end-of-turn token (a special
token, so tokenizing it separately gives the same ids as in context), so decoding the whole row gives exactly the
template's rendering of the whole conversation. A reply cut off by the per-turn token limit (no end-of-turn token)
gets its end-of-turn token from the template, as an environment token.

``completions`` holds the assistant replies joined by a blank line (a reward that reads one completion then sees
the whole episode's text); ``episodes`` holds ``{"turns": [{"completion", "info"}, ...]}`` for episode-mode rewards.
``truncated`` is True when the last reply hit the per-turn limit without its end-of-turn token or the episode ran
out of token budget before the environment ended it. Under a generation constraint every reply is constrained on
its own; a reply that reached a dead end stops there without its end-of-turn token (as a cut-off reply), and
``dead_ends`` marks its episode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from rftune.rollout.generation import SamplingParams, eos_token_ids, generate_replies
from rftune.runtime.device import model_device
from rftune.types import RolloutBatch, Sample


@dataclass
class Episode:
    """One episode in progress: its environment, conversation, token ids and per-turn records."""

    env: Any
    sample: Sample
    messages: list[dict]
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    completion_mask: list[int] = field(default_factory=list)
    turns: list[dict] = field(default_factory=list)
    done: bool = False
    truncated: bool = False
    dead_end: bool = False  # a reply reached a state where the generation constraint allowed no token


def env_rollout(model, tokenizer, samples: list[Sample], params: SamplingParams,
                make_env: Callable[[dict], Any], max_episode_tokens: int | None = None,
                greedy: bool = False) -> RolloutBatch:
    """Play ``params.num_generations`` episodes per sample; rows are grouped by sample (see the module docstring).

    ``max_episode_tokens`` caps each episode's completion (generated plus environment tokens); None = no cap
    beyond ``env.max_turns`` replies of at most ``params.max_new_tokens`` each.
    """
    episodes = [_start(make_env(sample.example), sample, tokenizer)
                for sample in samples for _ in range(params.num_generations)]
    eos_ids = eos_token_ids(tokenizer, model)
    one_each = dataclasses.replace(params, num_generations=1, seeds=None)  # episodes draw from torch's generator
    for _ in range(max(e.env.max_turns for e in episodes)):
        active = [e for e in episodes if not e.done]
        if not active:
            break
        limits = [_turn_limit(e, params.max_new_tokens, max_episode_tokens) for e in active]
        guide = params.constraint.guide(len(active)) if params.constraint is not None else None
        replies = generate_replies(model, tokenizer, [e.prompt_ids + e.completion_ids for e in active],
                                   one_each, max(limits), greedy, guide)
        for row, (episode, reply, limit) in enumerate(zip(active, replies, limits)):
            episode.dead_end |= guide is not None and bool(guide.dead_end_step[row] >= 0)
            _advance(episode, reply[:limit], tokenizer, eos_ids, max_episode_tokens)
    budget = max(e.env.max_turns for e in episodes) * params.max_new_tokens
    batch = _to_batch(episodes, tokenizer, model_device(model),
                      budget if max_episode_tokens is None else min(budget, max_episode_tokens))
    if params.constraint is not None:
        batch.dead_ends = torch.tensor([e.dead_end for e in episodes], device=batch.truncated.device)  # [B]
    return batch


def _start(env, sample: Sample, tokenizer) -> Episode:
    messages = env.reset(sample.example)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return Episode(env=env, sample=sample, messages=list(messages), prompt_ids=_encode(tokenizer, text))


def _turn_limit(episode: Episode, max_new_tokens: int, max_episode_tokens: int | None) -> int:
    if max_episode_tokens is None:
        return max_new_tokens
    return max(1, min(max_new_tokens, max_episode_tokens - len(episode.completion_ids)))


def _advance(episode: Episode, reply_ids: list[int], tokenizer, eos_ids: list[int],
             max_episode_tokens: int | None) -> None:
    """Record one reply, let the environment answer it, and append the environment's tokens."""
    ended = bool(reply_ids) and reply_ids[-1] in eos_ids
    content_ids = reply_ids[:-1] if ended else reply_ids
    episode.completion_ids += reply_ids
    episode.completion_mask += [1] * len(reply_ids)
    content = tokenizer.decode(content_ids, skip_special_tokens=False)  # exactly what the ids render as
    reply = tokenizer.decode(content_ids, skip_special_tokens=True)  # what the environment and rewards read
    result = episode.env.step(reply)
    episode.turns.append({"completion": reply, "info": result.info})
    before = episode.messages + [{"role": "assistant", "content": content}]
    episode.truncated = not ended
    if result.done or len(episode.turns) >= episode.env.max_turns:
        episode.done, episode.messages = True, before
        return
    env_ids = _encode(tokenizer, environment_text(tokenizer, episode.messages, content, result.messages, ended))
    episode.messages = before + list(result.messages)
    episode.completion_ids += env_ids
    episode.completion_mask += [0] * len(env_ids)
    if max_episode_tokens is not None and len(episode.completion_ids) >= max_episode_tokens:
        episode.done, episode.truncated = True, True


def environment_text(tokenizer, messages: list[dict], content: str, env_messages: list[dict],
                     reply_ended: bool) -> str:
    """The rendered text between the model's reply and the next generation prompt (inclusive).

    It starts right after the reply's content, or after its end-of-turn token when the model produced one.
    """
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    after = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": content}] + env_messages,
                                          tokenize=False, add_generation_prompt=True)
    start = len(prompt) + len(content)
    if not after.startswith(prompt + content):
        raise ValueError("the chat template does not render a conversation as a prefix of its continuation; "
                         "multi-turn rollouts need a template that appends turns")
    tail = after[start:]
    if reply_ended:
        eos = tokenizer.eos_token
        if not tail.startswith(eos):
            raise ValueError(f"the chat template does not end an assistant turn with the EOS token {eos!r}")
        tail = tail[len(eos):]
    return tail


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _to_batch(episodes: list[Episode], tokenizer, device: torch.device, completion_budget: int) -> RolloutBatch:
    pad = tokenizer.pad_token_id
    tp = max(len(e.prompt_ids) for e in episodes)
    tc = max(len(e.completion_ids) for e in episodes)

    def rows(values) -> torch.Tensor:
        return torch.tensor(values, device=device)

    return RolloutBatch(
        prompt_ids=rows([[pad] * (tp - len(e.prompt_ids)) + e.prompt_ids for e in episodes]),  # [B, Tp]
        prompt_mask=rows([[0] * (tp - len(e.prompt_ids)) + [1] * len(e.prompt_ids) for e in episodes]),
        completion_ids=rows([e.completion_ids + [pad] * (tc - len(e.completion_ids)) for e in episodes]),  # [B, Tc]
        attention_mask=rows([[1] * len(e.completion_ids) + [0] * (tc - len(e.completion_ids)) for e in episodes]),
        completion_mask=rows([e.completion_mask + [0] * (tc - len(e.completion_mask)) for e in episodes]),
        truncated=rows([e.truncated for e in episodes]), samples=[e.sample for e in episodes],
        completions=["\n\n".join(turn["completion"] for turn in e.turns) for e in episodes],
        episodes=[{"turns": e.turns} for e in episodes], completion_budget=completion_budget)
