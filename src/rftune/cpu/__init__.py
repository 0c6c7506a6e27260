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
It first switches off transformers' hub kernels on the model (``use_kernels``, on by default from transformers
5.25 when the ``kernels`` package is installed): they re-bind the forward of every hub-decorated layer (the RMS
norms among them) at each ``train()``/``eval()``, which silently undid the fused norm; on a CPU they have no
kernels to offer offline, so the torch forward they fall back to is what the parts here replace.

The layer never switches off silently: `parts_in_force` reads back from the model (and the generation backend)
which parts are in force, and `report_parts` warns (`SpeedLayerWarning`) for each part that fits the model but is
not in force. Runs print the parts in force on their start line; the test suite turns the warning into an error.
"""

from __future__ import annotations

import warnings

import torch

from rftune.cpu.architectures import fits
from rftune.cpu.attention import matmul_attention_in_force, use_matmul_attention
from rftune.cpu.fast_decode import decoder_supports
from rftune.cpu.lora_fused import fuse_lora_layers, fused_lora_in_force
from rftune.cpu.prepacked import onednn_serves, prepack
from rftune.cpu.rms_norm import fused_rms_norm_in_force, use_fused_rms_norm


class SpeedLayerWarning(UserWarning):
    """A part of the CPU speed layer fits the model but is not in force (e.g. an upstream release undid it)."""


def enable_training_kernels(model, bf16: bool) -> None:
    """Switch a CPU model (in place) to the layer's training passes; each part leaves alone what it does not fit."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("rftune's CPU kernels are for models on the CPU")
    switch_off_hub_kernels(model)
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


def switch_off_hub_kernels(model) -> bool:
    """Turn off transformers' hub kernelization of `model` (see the module docstring); returns whether it was on."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(inner, "use_kernels", False):
        return False
    inner.use_kernels = False  # transformers resets the hub-decorated layers to their torch forward
    return True


def parts_in_force(model, bf16: bool, backend: str | None = None) -> dict[str, bool | None]:
    """Each part of the layer -> True (in force), False (fits `model` but is not in force), None (does not fit).

    Read back from the model after `enable_training_kernels` (and after ``train()``, which may re-bind forwards).
    ``backend``: the resolved generation backend, to check the lean decoder and its prepacked weights too.
    """
    parts = {"bf16_weights": _bf16_weights_in_force(model) if bf16 else None,
             "lora_fused": fused_lora_in_force(model),
             "matmul_attention": matmul_attention_in_force(model),
             "rms_norm": fused_rms_norm_in_force(model)}
    if backend is not None:
        parts.update(decoder_parts(model, backend, bf16))
    return parts


def decoder_parts(model, backend: str, bf16: bool) -> dict[str, bool | None]:
    """The lean decoder (fits the architecture table: in force when the backend is cpu-fast) and its weights
    prepacked for oneDNN (checked on a probe weight: this torch build and CPU must reorder one)."""
    if not fits(model, "decoder"):
        return {"decoder": None, "prepacked": None}
    in_force = backend == "cpu-fast" and decoder_supports(model)
    dtype = torch.bfloat16 if bf16 else next(model.parameters()).dtype
    prepacked = None
    if in_force and onednn_serves(torch.device("cpu"), dtype):
        prepacked = bool(prepack(torch.zeros(8, 8, dtype=dtype)).is_mkldnn)
    return {"decoder": in_force, "prepacked": prepacked}


def report_parts(parts: dict[str, bool | None]) -> str:
    """Warn for each part that fits but is not in force; returns the parts in force, for a run's start line."""
    for name, in_force in parts.items():
        if in_force is False:
            warn_not_in_force(name)
    return ", ".join(name for name, in_force in parts.items() if in_force) or "none"


def warn_not_in_force(part: str) -> None:
    warnings.warn(f"rftune CPU speed layer: part {part!r} fits this model but is not in force, so this run is "
                  "slower than it should be (a transformers/peft/torch release may have changed what the layer "
                  "patches; check the versions against the lock file)", SpeedLayerWarning, stacklevel=2)


def _bf16_weights_in_force(model) -> bool | None:
    frozen = [module.base_layer.weight for module in model.modules()
              if isinstance(getattr(module, "base_layer", None), torch.nn.Linear)
              and not module.base_layer.weight.requires_grad]
    return all(weight.dtype == torch.bfloat16 for weight in frozen) if frozen else None
