"""What this CPU can do, asked once: the one place where rftune's CPU fast paths look up a CPU feature.

CPUs differ between the machines rftune runs on (a laptop, a CI runner, a cloud VM), so no fast path may assume
a feature of the machine it was written on. Each fast path asks `cpu_features()` and takes the plain PyTorch path
where its feature is missing:

- ``native_bf16`` (AVX512-BF16 or AMX): bfloat16 matmuls at about twice the float32 rate; elsewhere bf16 is
  emulated and slower than float32. ``train.bf16: auto`` turns bf16 on only here.
- ``onednn_bf16_weights``: oneDNN can hold a bfloat16 weight in its blocked layout (`rftune.cpu.prepacked`); it needs
  AVX512 BW/VL/DQ or AVX-NE-CONVERT, and PyTorch raises on other CPUs. Asked of oneDNN itself, by packing a tiny
  weight once, so the answer is the library's own rule, not a copy of it.

The environment variable ``RFTUNE_CPU_FEATURES_OFF`` (comma-separated names, or ``all``) reports features absent,
so the plain paths can be run and tested on a CPU that has the fast ones. Hiding ``avx512`` also hides what an
AVX2-only CPU lacks with it (``avx512_bf16``, ``amx``, ``onednn_bf16_weights``): ``RFTUNE_CPU_FEATURES_OFF=avx512``
makes rftune behave as on such a CPU.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from rftune.errors import ConfigError

ENV_OFF = "RFTUNE_CPU_FEATURES_OFF"
FEATURES = ("avx2", "avx512", "avx512_bf16", "amx", "onednn_bf16_weights")
_HIDDEN_WITH = {"avx512": ("avx512_bf16", "amx", "onednn_bf16_weights"), "avx2": ("avx512",)}


@dataclass(frozen=True)
class CpuFeatures:
    avx2: bool
    avx512: bool  # AVX512 F/BW/VL/DQ
    avx512_bf16: bool
    amx: bool  # AMX tiles (bf16 matrix units)
    onednn_bf16_weights: bool
    model: str = ""

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx

    def describe(self) -> str:
        """E.g. ``AMD EPYC (AVX2, AVX512, AVX512-BF16; native bf16)``."""
        names = {"avx2": "AVX2", "avx512": "AVX512", "avx512_bf16": "AVX512-BF16", "amx": "AMX"}
        present = [label for key, label in names.items() if getattr(self, key)]
        bf16 = "native bf16" if self.native_bf16 else "no native bf16"
        return f"{self.model or 'unknown CPU'} ({', '.join(present) or 'none of AVX2/AVX512'}; {bf16})"


@functools.cache
def cpu_features() -> CpuFeatures:
    """The features of this CPU, less those hidden by ``RFTUNE_CPU_FEATURES_OFF`` (read here and nowhere else)."""
    hidden = hidden_features(os.environ.get(ENV_OFF, ""))
    detected = {
        "avx2": _torch_check("_is_avx2_supported"),
        "avx512": _torch_check("_is_avx512_supported"),
        "avx512_bf16": _torch_check("_is_avx512_bf16_supported"),
        "amx": _torch_check("_is_amx_tile_supported"),
        "onednn_bf16_weights": _onednn_packs_bf16(),
    }
    return CpuFeatures(**{name: present and name not in hidden for name, present in detected.items()},
                       model=_cpu_model())


def hidden_features(setting: str) -> set[str]:
    """The feature names that ``RFTUNE_CPU_FEATURES_OFF=setting`` hides, with those that go with them."""
    requested = {name.strip().lower().replace("-", "_") for name in setting.split(",") if name.strip()}
    if "all" in requested:
        return set(FEATURES)
    unknown = requested - set(FEATURES)
    if unknown:
        raise ConfigError(f"{ENV_OFF}={setting!r}: unknown feature(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(FEATURES)}, all")
    hidden, todo = set(), list(requested)
    while todo:
        name = todo.pop()
        if name not in hidden:
            hidden.add(name)
            todo.extend(_HIDDEN_WITH.get(name, ()))
    return hidden


def _torch_check(name: str) -> bool:
    check = getattr(torch.cpu, name, None)
    return bool(check and check())


def _onednn_packs_bf16() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), None)
    except RuntimeError:  # "bf16 path needs the cpu support avx_ne_convert or avx512bw, avx512vl and avx512dq"
        return False
    return True


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()
