"""Sampling G completions per prompt: the lean decoder for Llama-family models, HF ``generate`` otherwise.

`rftune.fast_decode` (merged LoRA weights in a separate copy, one prefill per prompt, finished rows dropped) serves
Llama/Mistral/Qwen2 models; any other architecture goes through HF ``generate``. Both sample from the same
distribution: temperature, then top-k (0 = off), then top-p. (Before, top_k=0 was passed to HF as None, which
HF read as its default top-k of 50; now 0 means no top-k filtering on both paths, as the config says.)
The optional vLLM backend lives in `rftune.generation_vllm`.

Prompts arrive as chat messages and are rendered with the tokenizer's chat template. The completion mask covers
each completion up to and including its first EOS; a completion with no EOS within ``max_new_tokens`` is
*truncated*. Sampling is seeded by the caller (`torch.manual_seed`) so a resumed run samples what the
uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from rftune.fast_decode import build_decoder, generate
from rftune.types import RolloutBatch, Sample


@dataclass(frozen=True)
class SamplingParams:
    num_generations: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    bf16: bool = False  # matmuls in bfloat16 (float32 residual stream and logits), as under autocast


def eos_token_ids(tokenizer, model=None) -> list[int]:
    """Every token id that ends a completion (tokenizer EOS plus the model's generation config EOS)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def encode_prompts(tokenizer, prompts: list[list[dict]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat messages -> left-padded ids [P, Tp] and mask [P, Tp]."""
    texts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
             for messages in prompts]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    return encoded["input_ids"], encoded["attention_mask"]


def completion_mask(completion_ids: torch.Tensor, eos_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask [B, Tc] of tokens up to and including the first EOS, and truncated [B] (no EOS at all)."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids))  # [B, Tc]
    # eos_before[t] = number of EOS strictly before position t; a token is kept while that is 0.
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()  # [B, Tc]
    mask = (eos_before == 0).long()  # [B, Tc]
    truncated = ~is_eos.any(dim=1)  # [B]
    return mask, truncated


def sample_completions(model, tokenizer, samples: list[Sample], params: SamplingParams) -> RolloutBatch:
    """Generate ``params.num_generations`` completions for each sample; rows are grouped by prompt."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [s.prompt for s in samples])  # [P, Tp]
    g = params.num_generations
    eos_ids = eos_token_ids(tokenizer, model)
    completion_ids = generate_ids(model, tokenizer, prompt_ids, prompt_mask, params, params.max_new_tokens,
                                  eos_ids)  # [B, Tc]
    return rollout_batch(tokenizer, samples, prompt_ids.repeat_interleave(g, dim=0),
                         prompt_mask.repeat_interleave(g, dim=0), completion_ids, eos_ids, g)


def generate_ids(model, tokenizer, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, params: SamplingParams,
                 max_new_tokens: int, eos_ids: list[int], greedy: bool = False) -> torch.Tensor:
    """``params.num_generations`` completions per left-padded prompt [P, Tp] -> ids [P*G, Tc], grouped by prompt.

    Llama-family models go through `rftune.fast_decode` (merged weights, one prefill per prompt and of the
    prompts' common prefix); any other model through HF ``generate``. Both sample from the same distribution
    (or take the most likely token when ``greedy``), with bfloat16 matmuls when ``params.bf16``. Tokens after a
    row's EOS are padding.
    """
    g = params.num_generations
    decoder = build_decoder(model, torch.bfloat16 if params.bf16 else None)
    if decoder is not None:
        completion_ids = generate(decoder, prompt_ids, prompt_mask, g, max_new_tokens, eos_ids,
                                  tokenizer.pad_token_id, params.temperature, params.top_k, params.top_p, greedy)
        del decoder  # frees the merged weights before training needs the memory
        return completion_ids
    sampling = {"do_sample": False} if greedy else {
        "do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k}
    autocast = torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16) if params.bf16 \
        else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        output = model.generate(input_ids=prompt_ids.repeat_interleave(g, dim=0),
                                attention_mask=prompt_mask.repeat_interleave(g, dim=0),
                                max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
                                pad_token_id=tokenizer.pad_token_id, **sampling)  # [B, Tp+Tc]
    return output[:, prompt_ids.shape[1]:]  # [B, Tc]


def rollout_batch(tokenizer, samples: list[Sample], prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                  completion_ids: torch.Tensor, eos_ids: list[int], num_generations: int) -> RolloutBatch:
    """Completion ids [B, Tc] (grouped by prompt) -> RolloutBatch with masks, truncation flags and texts."""
    mask, truncated = completion_mask(completion_ids, eos_ids)  # [B, Tc], [B]
    completion_ids = completion_ids.masked_fill(mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return RolloutBatch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                        attention_mask=mask.clone(), completion_mask=mask, truncated=truncated,
                        samples=[s for s in samples for _ in range(num_generations)], completions=texts)
