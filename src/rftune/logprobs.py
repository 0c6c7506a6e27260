"""Per-token log-probabilities (and entropy) of completions under a model.

log pi(o_t | q, o_<t) is read from the logits at the position *before* each token (the one-position shift),
divided by the sampling temperature so that it is the log-probability of the distribution that was sampled.
Only the completion's positions are projected to the vocabulary (``logits_to_keep``), and the softmax is done
one row at a time, so memory grows with B*Tc*V for one row, not the whole batch.
Position ids follow the attention mask (left padding does not shift positions), as in generation.
"""

from __future__ import annotations

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[R, T] mask -> [R, T] positions counting only real tokens (padding gets 0)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def completion_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                        attention_mask: torch.Tensor, temperature: float = 1.0,
                        with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logprobs [R, Tc] of `completion_ids` given the prompts, and (optionally, no grad) entropy [R, Tc]."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [R, Tp+Tc]
    full_mask = torch.cat([prompt_mask, attention_mask], dim=1)  # [R, Tp+Tc]
    tc = completion_ids.shape[1]
    logits = model(input_ids=input_ids, attention_mask=full_mask, position_ids=position_ids_from_mask(full_mask),
                   logits_to_keep=tc + 1, use_cache=False).logits  # [R, Tc+1, V]
    logits = logits[:, :-1, :]  # [R, Tc, V]: position t predicts completion token t
    if temperature != 1.0:
        logits = logits / temperature
    logprobs, entropy = [], []
    for row_logits, row_ids in zip(logits, completion_ids):  # one row at a time bounds peak memory
        row_logits = row_logits.float()  # [Tc, V]
        lse = torch.logsumexp(row_logits, dim=-1)  # [Tc]
        logprobs.append(row_logits.gather(1, row_ids.unsqueeze(1)).squeeze(1) - lse)  # [Tc]
        if with_entropy:
            with torch.no_grad():
                probs = torch.softmax(row_logits, dim=-1)  # [Tc, V]
                entropy.append(lse - (probs * row_logits).sum(-1))  # [Tc]
    return torch.stack(logprobs), (torch.stack(entropy) if with_entropy else None)
