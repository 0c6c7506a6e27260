"""LoRA merge maths: what an adapted linear layer applies, W + sum(scale * B @ A), read from a PEFT module
without touching it. The lean CPU decoder and the vLLM weight sync both build merged weights from it."""

from __future__ import annotations

import torch


def effective_weight(module) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, float]],
                                     torch.Tensor | None]:
    """What a linear module applies now: (base weight, LoRA factors [(B, A, scale)] of active adapters, bias)."""
    base = getattr(module, "base_layer", None)
    if base is None:
        return module.weight, [], module.bias
    factors = []
    if not module.merged and not module.disable_adapters:
        factors = [(module.lora_B[name].weight, module.lora_A[name].weight, module.scaling[name])
                   for name in module.active_adapters if name in module.lora_A]
    return base.weight, factors, base.bias


def merged_weight(weight: torch.Tensor, factors, out: torch.Tensor | None = None) -> torch.Tensor:
    """W + sum(scale * B @ A) in W's dtype, formed in `out` (a fresh tensor if None) with no temporary of W's size."""
    out = weight.detach().clone() if out is None else out.copy_(weight)
    for lora_b, lora_a, scale in factors:
        out.addmm_(lora_b.to(out.dtype), lora_a.to(out.dtype), alpha=scale)
    return out
