"""One autograd node per LoRA linear layer in rftune's training passes: y = x W^T + b + (x A^T)(s B)^T.

PEFT runs a LoRA layer as the base layer, then dropout, A, B and the scaling as separate modules: under autocast
that is three casts of the input, three matmuls, a multiply and an add in the forward pass, and as many autograd
nodes in the backward pass, for every linear layer and every pass. With no dropout, one adapter and no DoRA, the
same function is two matmuls and one fused multiply-add forward (the scale folded into B), and its gradients are
written out below:

    g = dL/dy,  u = x A^T,  v = g (s B)
    dL/dB = s g^T u,   dL/dA = v^T x,   dL/dx = g W + v A

Values match PEFT up to where bf16 rounds (the scale is applied to B before rounding, PEFT applies it after).
`fuse_lora_layers(model)` switches every eligible PEFT LoRA linear of a model to it; layers with dropout, DoRA,
several active adapters or trainable base weights keep PEFT's forward. Disabling adapters (the reference pass)
and merging work as in PEFT: the layer then runs its base layer only.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scale: float):
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        with torch.autocast("cpu", enabled=False):
            xc = x.to(dtype)
            w, a, bs = weight.to(dtype), lora_a.to(dtype), (lora_b * scale).to(dtype)
            flat = xc.reshape(-1, xc.shape[-1])  # [N, in]
            u = flat @ a.t()  # [N, r]
            y = torch.addmm(F.linear(flat, w, None if bias is None else bias.to(dtype)), u, bs.t())  # [N, out]
        ctx.save_for_backward(flat, u, w, a, bs)
        ctx.scale, ctx.x_shape, ctx.x_dtype = scale, x.shape, x.dtype
        ctx.param_dtypes = (lora_a.dtype, lora_b.dtype)
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        flat, u, w, a, bs = ctx.saved_tensors
        with torch.autocast("cpu", enabled=False):
            g = grad_y.reshape(-1, grad_y.shape[-1]).to(flat.dtype)  # [N, out]
            v = g @ bs  # [N, r]
            grad_b = (g.t() @ u).to(ctx.param_dtypes[1]) * ctx.scale  # [out, r]
            grad_a = (v.t() @ flat).to(ctx.param_dtypes[0])  # [r, in]
            grad_x = torch.addmm(g @ w, v, a) if ctx.needs_input_grad[0] else None  # [N, in]
        if grad_x is not None:
            grad_x = grad_x.view(ctx.x_shape).to(ctx.x_dtype)
        return grad_x, None, None, grad_a, grad_b, None


def _fused_forward(self, x, *args, **kwargs):
    if self.disable_adapters or self.merged:
        return self.base_layer(x, *args, **kwargs)
    (name,) = self.active_adapters
    base = self.base_layer
    return _LoraLinear.apply(x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight,
                             self.scaling[name])


def _eligible(module) -> bool:
    from peft.tuners.lora import Linear as LoraLinear

    if type(module) is not LoraLinear or len(module.active_adapters) != 1:
        return False
    name = module.active_adapters[0]
    base = module.base_layer
    return (name in module.lora_A and isinstance(module.lora_dropout[name], torch.nn.Identity)
            and not module.use_dora.get(name, False) and not getattr(module, "fan_in_fan_out", False)
            and isinstance(base, torch.nn.Linear) and not base.weight.requires_grad)


def fuse_lora_layers(model) -> int:
    """Give every eligible PEFT LoRA linear of `model` the fused forward; returns how many were switched."""
    count = 0
    for module in model.modules():
        if _eligible(module):
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count


def fused_lora_in_force(model) -> bool | None:
    """Whether every eligible LoRA linear of `model` runs the fused forward; None when it has none to fuse."""
    eligible = [module for module in model.modules() if _eligible(module)]
    if not eligible:
        return None
    return all(getattr(module.forward, "__func__", None) is _fused_forward for module in eligible)
