"""Attention as plain matmul-softmax-matmul, registered with transformers for rftune's CPU passes.

For the short sequences of RL training passes (a prompt cache plus a few dozen completion tokens per row), torch's
fused CPU attention kernel is slow in bfloat16, and slowest in its backward: forward + backward of one layer at
8 rows x 40 queries x 90 keys take ~7 ms with it and ~3 ms with two matmuls (2 threads, bf16). This module
computes the same attention with two batched matmuls and a float32 softmax. Grouped-query attention folds the
query heads that share a key/value head into the query axis, so keys and values are never copied per head.

`use_matmul_attention(model)` switches a transformers model to it; the boolean masks are the ones transformers
builds for its SDPA path (so padding, caches and sliding windows are handled there). A query row that may attend
to nothing (a padding position) gets uniform weights instead of NaN; its output is never used.
"""

from __future__ import annotations

import torch

from rftune.cpu.architectures import fits

NAME = "rftune_matmul"


def matmul_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """query [b, h, q, d], key/value [b, kv, k, d], boolean mask [b|1, 1, q, k] or None (causal) -> [b, q, h, d]."""
    if kwargs.get("softcap") is not None or kwargs.get("sinks") is not None:
        raise ValueError(f"{NAME} attention does not support logit soft-capping or attention sinks")
    b, heads, q_len, d = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = scaling if scaling is not None else d ** -0.5
    folded = query.reshape(b, kv_heads, group * q_len, d)  # query heads of one KV head stacked along the queries
    scores = torch.matmul(folded, key.transpose(-1, -2)).view(b, kv_heads, group, q_len, k_len).float() * scale
    if attention_mask is None:
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
    else:
        allowed = attention_mask.unsqueeze(2)  # [b|1, 1, 1, q, k]
    weights = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(-1)  # [b, kv, group, q, k]
    if dropout and module.training:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    out = torch.matmul(weights.to(value.dtype).view(b, kv_heads, group * q_len, k_len), value)  # [b, kv, g*q, d]
    return out.view(b, heads, q_len, d).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, matmul_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_matmul_attention(model) -> bool:
    """Run the attention of `model` (a transformers model, or a PEFT model around one) through `matmul_attention`
    when its architecture has plain softmax attention (no soft-capping, no sinks) and it is on the CPU; returns
    whether it was switched."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not fits(inner, "attention") or next(inner.parameters()).device.type != "cpu":
        return False
    _register()
    inner.set_attn_implementation(NAME)
    return True


def matmul_attention_in_force(model) -> bool | None:
    """Whether `model`'s attention runs through `matmul_attention`; None when its architecture is not served."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not fits(inner, "attention"):
        return None
    return getattr(inner.config, "_attn_implementation", None) == NAME
