"""The one generation interface: token ids in, completions (ids, masks, texts) out, with backends behind it.

``generation.backend`` picks how tokens are produced; every caller (training rollouts, multi-turn episodes,
evaluation, serving, local judges) goes through `generate_ids` / `generate_replies` and the one stop rule:
    cpu-fast  `rftune.cpu.fast_decode`, the lean decoder (merged LoRA weights in a separate copy, one prefill per
              prompt and of the prompts' common prefix, finished rows dropped); CPU only, Llama-family models
    hf        transformers ``generate`` on any device (the one backend for an FSDP-sharded model, whose ranks then
              step in lockstep: ``synced_gpus``)
    vllm      `rftune.rollout.vllm_backend`, an in-process vLLM engine (GPU), weights synced after each optimizer step
    auto      cpu-fast on a CPU for the architectures it serves (unless ``train.cpu_kernels: off``), else hf
A backend that cannot serve the model or its device says so in one ``ConfigError`` at start (`resolve_backend`).
The backends are a registry (`BACKENDS`): a new one is one class decorated with ``@BACKENDS.register(name)``, with
``in_process`` and ``check(model, device)``; an in-process backend has ``generate`` (`generate_ids`' arguments
and its group generators), an engine of its own (``in_process = False``: vLLM) is built as
``Backend(model_path, dtype, model)`` and is the training rollout function, with ``sync_weights(model)``.
Both in-process backends sample from the same distribution: temperature, then top-k (0 = off), then top-p.

Seeds: with ``SamplingParams.seeds`` (one per prompt) each group's draws come from its own generator, through the
same sampler on both backends (`rftune.algo.sampling.sample_tokens`; on hf as a logits processor), so a group's
completions do not depend on the other prompts of the batch, as far as the batch's arithmetic allows (training
seeds each group by its global position in the prompt stream: any number of processes samples the same groups).

Structured generation: ``SamplingParams.constraint`` (a compiled `rftune.constraints.Constraint`) masks the logits
of every step before the sampler sees them, on both backends (on hf as a logits processor ahead of the sampler);
a completion whose constraint admits no token is ended there as truncated (`rollout_batch`, `generate_replies`).

The stop rule: a completion ends at its first token in `eos_token_ids` (the tokenizer's EOS and the model's
generation-config EOS ids), which is kept and masked in; a completion with no EOS within ``max_new_tokens`` is
*truncated*. Prompts arrive as chat messages and are rendered with the tokenizer's chat template. Every tensor is
made on the model's device. Sampling is seeded by the caller (`torch.manual_seed`) so a resumed run samples what
the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from rftune.algo.sampling import group_uniforms, sample_tokens
from rftune.cpu import warn_not_in_force
from rftune.cpu.architectures import model_type, supported_for
from rftune.cpu.fast_decode import build_decoder, decoder_supports, generate
from rftune.errors import ConfigError, DataError
from rftune.registry import Registry
from rftune.runtime.device import autocast, model_device
from rftune.runtime.sharding import is_sharded
from rftune.types import RolloutBatch, Sample

BACKENDS = Registry("generation.backend")  # name -> backend class; ``auto`` is a choice among them (`resolve_backend`)


@dataclass(frozen=True)
class SamplingParams:
    num_generations: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    bf16: bool = False  # matmuls in bfloat16 (float32 residual stream and logits), as under autocast
    backend: str = "auto"  # cpu-fast | hf | auto (resolved per call from the model; see `resolve_backend`)
    seeds: tuple[int, ...] | None = None  # one per prompt: its group's own sampling generator; None = torch's global
    constraint: Any = None  # a compiled generation.constraint (rftune.constraints.Constraint); None = unconstrained


def resolve_backend(setting: str, model, cpu_kernels: bool = True) -> str:
    """``generation.backend`` for `model` on its device: the concrete backend, or a ConfigError saying why not."""
    if setting != "auto" and setting not in BACKENDS:
        raise ConfigError(f"generation.backend: must be one of {', '.join(['auto', *BACKENDS])}, got {setting!r}")
    device = model_device(model)
    if is_sharded(model) and setting in ("auto", "hf"):
        return "hf"
    if is_sharded(model):
        raise ConfigError(f"generation.backend={setting} cannot generate from a sharded model (train.fsdp); use "
                          "generation.backend=auto")
    if setting == "auto":
        return "cpu-fast" if cpu_kernels and device.type == "cpu" and decoder_supports(model) else "hf"
    BACKENDS[setting].check(model, device)
    return setting


def in_process_backend(setting: str, cpu_kernels: bool) -> str:
    """The backend setting for in-process generation (evaluation, serving, judges, the trainer's eval steps): an
    engine of its own (vLLM, for training rollouts) is replaced by ``auto``, and ``auto`` with the CPU kernels
    off is ``hf``."""
    if setting in BACKENDS and not BACKENDS[setting].in_process:
        setting = "auto"
    return "hf" if setting == "auto" and not cpu_kernels else setting


def eos_token_ids(tokenizer, model=None) -> list[int]:
    """Every token id that ends a completion (tokenizer EOS plus the model's generation config EOS)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def encode_prompts(tokenizer, prompts: list[list[dict]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat messages -> left-padded ids [P, Tp] and mask [P, Tp] (on the CPU)."""
    texts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
             for messages in prompts]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    return encoded["input_ids"], encoded["attention_mask"]


def prompt_lengths(tokenizer, prompts: list[list[dict]]) -> list[int]:
    """The number of tokens of each prompt as `encode_prompts` encodes it (counted on a copy of the tokenizer:
    encoding sets its padding state, which save_pretrained writes)."""
    return _count_tokens(copy.deepcopy(tokenizer), prompts)


def fit_prompts(samples: list[Sample], tokenizer, context: int | None, max_new_tokens: int,
                max_prompt_tokens: int | None, policy: str) -> tuple[list[Sample], int, str]:
    """(the samples fitted to the prompt limit by `policy`, how many were changed, the limit in words) — see
    `check_prompt_lengths`. The limit is `max_prompt_tokens`, else the model's `context` less
    `max_new_tokens`; with neither, the samples are returned as they are."""
    if max_prompt_tokens is not None:
        limit, where = max_prompt_tokens, "task.max_prompt_tokens"
    elif context:
        limit = context - max_new_tokens
        where = f"the model's context of {context} tokens less the {max_new_tokens} tokens of a completion"
    else:
        return samples, 0, "no limit"
    lengths = prompt_lengths(tokenizer, [s.prompt for s in samples])
    shorten = functools.partial(truncate_prompt, tokenizer, limit=limit)
    fitted, changed = check_prompt_lengths(samples, lengths, limit, policy, where, shorten)
    return fitted, changed, f"longer than {limit} tokens ({where})"


def truncate_prompt(tokenizer, messages: list[dict], limit: int) -> list[dict] | None:
    """`messages` with the start of the last message's text cut away, as little as needed for the prompt to have
    at most `limit` tokens (the instructions before it and the end of its text, usually the question, stay; the
    text kept is the original's, never re-decoded); None when even an empty last message would not fit."""
    counter = copy.deepcopy(tokenizer)  # (as in `prompt_lengths`)
    text = messages[-1]["content"]

    def keeping(start: int) -> list[dict]:
        return [*messages[:-1], {**messages[-1], "content": text[start:]}]

    def fits(start: int) -> bool:
        return _count_tokens(counter, [keeping(start)])[0] <= limit

    if not fits(len(text)):
        return None
    low, high = 0, len(text)  # binary search for the first start that fits: fits(high) holds throughout
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return keeping(high)


def _count_tokens(tokenizer, prompts: list[list[dict]]) -> list[int]:
    texts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
             for messages in prompts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def completion_mask(completion_ids: torch.Tensor, eos_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The stop rule. Mask [B, Tc] of tokens up to and including the first EOS, and truncated [B] (no EOS at all)."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))  # [B, Tc]
    # eos_before[t] = number of EOS strictly before position t; a token is kept while that is 0.
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()  # [B, Tc]
    mask = (eos_before == 0).long()  # [B, Tc]
    truncated = ~is_eos.any(dim=1)  # [B]
    return mask, truncated


def sample_completions(model, tokenizer, samples: list[Sample], params: SamplingParams) -> RolloutBatch:
    """Generate ``params.num_generations`` completions for each sample; rows are grouped by prompt."""
    device = model_device(model)
    prompt_ids, prompt_mask = (t.to(device) for t in encode_prompts(tokenizer, [s.prompt for s in samples]))
    g = params.num_generations
    eos_ids = eos_token_ids(tokenizer, model)
    guide = params.constraint.guide(len(samples) * g) if params.constraint is not None else None
    completion_ids = generate_ids(model, tokenizer, prompt_ids, prompt_mask, params, params.max_new_tokens,
                                  eos_ids, guide=guide)  # [B, Tc]
    return rollout_batch(tokenizer, samples, prompt_ids.repeat_interleave(g, dim=0),
                         prompt_mask.repeat_interleave(g, dim=0), completion_ids, eos_ids, g, params.max_new_tokens,
                         guide)


def generate_ids(model, tokenizer, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, params: SamplingParams,
                 max_new_tokens: int, eos_ids: list[int], greedy: bool = False, guide=None) -> torch.Tensor:
    """``params.num_generations`` completions per left-padded prompt [P, Tp] -> ids [P*G, Tc], grouped by prompt.

    Samples (or, when ``greedy``, takes the most likely token) with bfloat16 matmuls when ``params.bf16``, through
    ``params.backend``. Tokens after a row's EOS are padding. The ids are on the model's device. Under
    ``params.constraint`` the `rftune.constraints.Guide` of the call (``guide``, made here if None) masks every
    step and records the rows that reached a dead end.
    """
    device = model_device(model)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    name = resolve_backend(params.backend, model)
    if not BACKENDS[name].in_process:
        raise ConfigError(f"generation.backend={name} serves training rollouts only; evaluation, serving and "
                          "judges generate with cpu-fast or hf (generation.backend=auto)")
    generators = _group_generators(params.seeds, prompt_ids.shape[0]) if not greedy else None
    if params.constraint is not None and guide is None:
        guide = params.constraint.guide(prompt_ids.shape[0] * params.num_generations)
    return BACKENDS[name].generate(model, tokenizer, prompt_ids, prompt_mask, params, max_new_tokens, eos_ids,
                                   greedy, generators, guide)


@BACKENDS.register("cpu-fast")
class CpuFastBackend:
    """`rftune.cpu.fast_decode`'s lean decoder: CPU only, the architectures it serves."""

    in_process = True

    @staticmethod
    def check(model, device: torch.device) -> None:
        if device.type != "cpu":
            raise ConfigError(f"generation.backend=cpu-fast runs on the CPU, but the model is on {device}; "
                              "use generation.backend=auto or hf")
        if not decoder_supports(model):
            raise ConfigError(f"generation.backend=cpu-fast does not serve this model (model_type "
                              f"{model_type(model)!r}; it serves {', '.join(supported_for('decoder'))} without "
                              "sliding windows or DoRA); use generation.backend=hf")

    @staticmethod
    def generate(model, tokenizer, prompt_ids, prompt_mask, params: SamplingParams, max_new_tokens: int,
                 eos_ids: list[int], greedy: bool, generators, guide=None) -> torch.Tensor:
        decoder = build_decoder(model, torch.bfloat16 if params.bf16 else None)
        if decoder.prepacked_in_force() is False:
            warn_not_in_force("prepacked")
        completion_ids = generate(decoder, prompt_ids, prompt_mask, params.num_generations, max_new_tokens, eos_ids,
                                  tokenizer.pad_token_id, params.temperature, params.top_k, params.top_p, greedy,
                                  generators, guide)
        del decoder  # frees the merged weights before training needs the memory
        return completion_ids


@BACKENDS.register("hf")
class HfBackend:
    """transformers ``generate``, on any device; sampling through our sampler when groups are seeded."""

    in_process = True

    @staticmethod
    def check(model, device: torch.device) -> None:
        return None  # serves every model on every device

    @staticmethod
    def generate(model, tokenizer, prompt_ids, prompt_mask, params: SamplingParams, max_new_tokens: int,
                 eos_ids: list[int], greedy: bool, generators, guide=None) -> torch.Tensor:
        g = params.num_generations
        sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None} if greedy else {
            "do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k}
        processors = [_ConstraintMask(guide, prompt_ids.shape[1])] if guide is not None else []
        if generators is not None:  # our sampler picks the token; generate then keeps the one it left possible
            sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            processors.append(_seeded_sampler(generators, params))
        if processors:  # (transformers applies these before its own temperature, top-k and top-p)
            from transformers import LogitsProcessorList

            sampling["logits_processor"] = LogitsProcessorList(processors)
        with torch.no_grad(), autocast(prompt_ids.device, params.bf16):
            output = model.generate(input_ids=prompt_ids.repeat_interleave(g, dim=0),
                                    attention_mask=prompt_mask.repeat_interleave(g, dim=0),
                                    max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
                                    pad_token_id=tokenizer.pad_token_id, synced_gpus=is_sharded(model),
                                    **sampling)  # [B, Tp+Tc]
        return output[:, prompt_ids.shape[1]:]  # [B, Tc]


def _group_generators(seeds: tuple[int, ...] | None, prompts: int) -> list[torch.Generator] | None:
    if seeds is None:
        return None
    if len(seeds) != prompts:
        raise ValueError(f"SamplingParams.seeds: {len(seeds)} seeds for {prompts} prompts (one per prompt)")
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def _seeded_sampler(generators: list[torch.Generator], params: SamplingParams):
    """A transformers logits processor that samples each row's token with `sample_tokens` from its group's
    generator and leaves only that token possible (-inf elsewhere), for ``generate`` without its own sampling."""
    from transformers import LogitsProcessor

    class SeededSampler(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            uniform = group_uniforms(generators, params.num_generations)
            tokens = sample_tokens(scores.float(), params.temperature, params.top_k, params.top_p,
                                   uniform.to(scores.device))  # [B]
            return torch.full_like(scores, -math.inf).scatter_(1, tokens[:, None], 0.0)

    return SeededSampler()


class _ConstraintMask:
    """A transformers logits processor: the guide's mask at each step (rows are generate's rows, in order)."""

    def __init__(self, guide, prompt_width: int):
        self.guide, self.prompt_width = guide, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_width
        rows = torch.arange(scores.shape[0])
        if step > 0:
            self.guide.advance(rows, input_ids[:, -1].cpu())
        return self.guide.mask_logits(scores, rows, step)


def generate_replies(model, tokenizer, contexts: list[list[int]], params: SamplingParams, max_new_tokens: int,
                     greedy: bool = False, guide=None) -> list[list[int]]:
    """``params.num_generations`` replies per context (token ids), in one left-padded batch, grouped by context;
    each reply's ids run through its first EOS (kept), or to ``max_new_tokens`` when it has none. Under a
    constraint, a reply that reached a dead end stops before it, with no EOS (``guide`` records which)."""
    width = max(len(c) for c in contexts)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(c)) + list(c) for c in contexts])  # [N, T]
    attention = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])  # [N, T]
    eos_ids = eos_token_ids(tokenizer, model)
    if params.constraint is not None and guide is None:
        guide = params.constraint.guide(len(contexts) * params.num_generations)
    output = generate_ids(model, tokenizer, input_ids, attention, params, max_new_tokens, eos_ids, greedy, guide)
    mask, _ = completion_mask(output, eos_ids)  # [N*G, Tc]
    lengths = mask.sum(dim=1) if guide is None else end_dead_ends(mask, guide.dead_end_step).sum(dim=1)  # [N*G]
    return [row[:length] for row, length in zip(output.tolist(), lengths.tolist())]


def rollout_batch(tokenizer, samples: list[Sample], prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                  completion_ids: torch.Tensor, eos_ids: list[int], num_generations: int,
                  completion_budget: int, guide=None) -> RolloutBatch:
    """Completion ids [B, Tc] (grouped by prompt) -> RolloutBatch with masks, truncation flags and texts; rows
    that reached a constraint's dead end (``guide``) end before it, truncated."""
    mask, truncated = completion_mask(completion_ids, eos_ids)  # [B, Tc], [B]
    dead_ends = None
    if guide is not None:
        dead_ends = guide.dead_end_step.to(mask.device) >= 0  # [B]
        mask, truncated = end_dead_ends(mask, guide.dead_end_step), truncated | dead_ends
    completion_ids = completion_ids.masked_fill(mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(completion_ids.cpu(), skip_special_tokens=True)
    return RolloutBatch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                        attention_mask=mask.clone(), completion_mask=mask, truncated=truncated,
                        samples=[s for s in samples for _ in range(num_generations)], completions=texts,
                        completion_budget=completion_budget, dead_ends=dead_ends)


def end_dead_ends(mask: torch.Tensor, dead_end_step: torch.Tensor) -> torch.Tensor:
    """Completion mask [B, Tc] without the tokens from each row's dead-end step on (dead_end_step [B], -1: none)."""
    step = dead_end_step.to(mask.device)
    columns = torch.arange(mask.shape[1], device=mask.device)  # [Tc]
    return mask * ((step[:, None] < 0) | (columns[None] < step[:, None])).long()  # [B, Tc]


def check_prompt_lengths(samples: list[Sample], lengths: list[int], limit: int, policy: str, where: str,
                         shorten: Callable[[list[dict]], list[dict] | None]) -> tuple[list[Sample], int]:
    """(the samples fitted to `limit` tokens, how many were changed). A prompt longer than `limit` (`lengths`) is
    a `DataError` naming its row under `policy` ``error``, is left out under ``drop``, and under ``truncate`` is
    cut to fit by `shorten` (the start of its last message goes); `where` says where the limit comes from."""
    kept = []
    for sample, tokens in zip(samples, lengths):
        if tokens <= limit:
            kept.append(sample)
        elif policy == "truncate":
            prompt = shorten(sample.prompt)
            if prompt is None:
                raise DataError(f"{_row_name(sample)}: the prompt has {tokens} tokens, more than {limit} ({where}), "
                                "even with its last message emptied; shorten its other messages")
            kept.append(replace(sample, prompt=prompt))
        elif policy == "error":
            raise DataError(f"{_row_name(sample)}: the prompt has {tokens} tokens, more than {limit} ({where}); "
                            "shorten it, or set task.on_long_prompt to truncate or drop")
    if samples and not kept:
        raise DataError(f"every prompt is longer than {limit} tokens ({where})")
    return kept, sum(tokens > limit for tokens in lengths)


def _row_name(sample: Sample) -> str:
    text = sample.prompt[-1]["content"].replace("\n", " ")
    return f"{sample.where or f'row {sample.index}'} (prompt {text[:60]!r}{'...' if len(text) > 60 else ''})"
