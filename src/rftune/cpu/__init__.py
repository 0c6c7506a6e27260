"""rftune's CPU speed layer: faster generation and training passes for Llama-family models on CPUs.

A backend the core can run without: with ``train.cpu_kernels: off`` (and always on a GPU) none of it is used and
the plain PyTorch/PEFT path runs, which is what this layer is tested against (same loss, log-probs and LoRA
gradients in float32). The trainer and SFT switch it on in one place, `enable_training_kernels`; generation uses
the lean decoder when the backend is ``cpu-fast`` (``generation.backend: auto`` on a CPU picks it where it fits).

Parts (the architectures each serves: `rftune.cpu.architectures`, the one table):
    fast_decode   lean decoder: merged/fused weights, one prefill per prompt, finished rows dropped
    prepacked     decoder weights prepacked once for oneDNN
    lora_fused    one autograd node per LoRA linear in the training passes
    attention     matmul attention registered with transformers for the training passes
    rms_norm      torch's fused RMS norm for Llama-family norms
    features      what this CPU can do (asked once; ``RFTUNE_CPU_FEATURES_OFF`` hides features)

What `enable_training_kernels` changes on a model (in place, values unchanged): under bf16 the frozen base weights
of LoRA linears are stored in bf16 once (the passes then run under bf16 autocast); LoRA linears get the fused
forward; attention is set to the matmul kernel (``config._attn_implementation``); RMS norms get the fused forward.
"""

from __future__ import annotations

import torch

from rftune.cpu.attention import use_matmul_attention
from rftune.cpu.lora_fused import fuse_lora_layers
from rftune.cpu.rms_norm import use_fused_rms_norm


def enable_training_kernels(model, bf16: bool) -> None:
    """Switch a CPU model (in place) to the layer's training passes; each part leaves alone what it does not fit."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("rftune's CPU kernels are for models on the CPU")
    if bf16:
        store_frozen_linears_in(model, torch.bfloat16)
    fuse_lora_layers(model)  # one autograd node per adapted linear instead of PEFT's chain of modules
    use_matmul_attention(model)  # faster than the fused CPU kernel for these short passes
    use_fused_rms_norm(model)  # one kernel per norm instead of eight written-out operations


def store_frozen_linears_in(model, dtype: torch.dtype) -> int:
    """Store the frozen base weights of adapter-wrapped linear layers in `dtype`; returns how many were cast.

    Under LoRA those weights never change, so autocast would cast the same tensors again at every call; casting
    them once gives the same values without that traffic. Embeddings, norms and the output projection (often
    tied to the embedding) keep their dtype, so the residual stream stays as it was. The model must then run
    under autocast to `dtype`.
    """
    count = 0
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, torch.nn.Linear) and not base.weight.requires_grad:
            base.weight.data = base.weight.data.to(dtype)
            if base.bias is not None:
                base.bias.data = base.bias.data.to(dtype)
            count += 1
    return count
