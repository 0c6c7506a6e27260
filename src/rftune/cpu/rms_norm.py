"""Llama-family RMS norms through torch's fused kernel in rftune's training passes.

transformers writes the norm out as tensor operations: widen to float32, square, mean, add eps, rsqrt, multiply,
narrow, multiply by the weight. Each is a pass over the activations and a node of the autograd graph, and a
training pass runs two norms per layer. For a float32 input and weight (the residual stream under autocast, or a
float32 model) ``torch.nn.functional.rms_norm`` computes the same function, w * x / sqrt(mean(x^2) + eps), in one
kernel with one backward kernel. Other dtypes keep the original forward, whose rounding steps differ.

`use_fused_rms_norm(model)` switches the RMS norms of a Llama-family model (layer norms, the final norm, and
Qwen3's per-head query/key norms, which share the formula).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from rftune.cpu.architectures import fits


def _fused_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if hidden_states.dtype == torch.float32 and self.weight.dtype == torch.float32:
        return F.rms_norm(hidden_states, self.weight.shape, self.weight, self.variance_epsilon)
    return type(self).forward(self, hidden_states)


def use_fused_rms_norm(model) -> int:
    """Give every RMS norm of `model` (transformers, or PEFT around it) the fused forward; returns how many.
    Only architectures whose norm is w * x / rms(x) with the weight as stored (no 1 + w) are switched."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not fits(inner, "rms_norm"):
        return 0
    count = 0
    for module in _norms(inner):
        module.forward = types.MethodType(_fused_forward, module)
        count += 1
    return count


def fused_rms_norm_in_force(model) -> bool | None:
    """Whether every RMS norm of `model` runs the fused forward; None when its architecture is not served."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    norms = list(_norms(inner)) if fits(inner, "rms_norm") else []
    if not norms:
        return None
    return all(getattr(module.forward, "__func__", None) is _fused_forward for module in norms)


def _norms(inner):
    return (module for module in inner.modules()
            if type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon"))
