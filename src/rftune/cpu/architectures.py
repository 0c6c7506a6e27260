"""The one table of architectures rftune's CPU speed layer serves, and which of its parts fit each.

Parts: ``decoder`` (the lean decoder of `rftune.cpu.fast_decode`, generation backend ``cpu-fast``), ``attention``
(matmul attention, `rftune.cpu.attention`), ``rms_norm`` (torch's fused RMS norm, `rftune.cpu.rms_norm`). The
fused LoRA linear (`rftune.cpu.lora_fused`) works on any PEFT LoRA linear and needs no entry here. A part also
checks the details of a model's config that it cannot serve (e.g. a sliding window for the decoder).
"""

from __future__ import annotations

_ALL = frozenset({"decoder", "attention", "rms_norm"})
ARCHITECTURES: dict[str, frozenset[str]] = {
    "llama": _ALL,
    "mistral": _ALL,  # the decoder: without a sliding window
    "qwen2": _ALL,  # biased q|k|v
    "qwen3": frozenset({"attention", "rms_norm"}),  # per-head q/k norms: not in the lean decoder
}


def model_type(model) -> str | None:
    """The ``model_type`` of a transformers model (or of the model inside a PEFT wrapper); None if it has none."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(getattr(inner, "config", None), "model_type", None)


def fits(model, part: str) -> bool:
    """Whether `part` of the CPU layer serves `model`'s architecture."""
    return part in ARCHITECTURES.get(model_type(model), frozenset())


def supported_for(part: str) -> list[str]:
    """The architectures `part` serves (for error messages)."""
    return sorted(name for name, parts in ARCHITECTURES.items() if part in parts)
