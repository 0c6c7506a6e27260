"""Where a run computes: one device per process, chosen once, and what follows from it.

``train.device`` is ``auto`` (the first CUDA device when there is one, else the CPU), ``cpu``, ``cuda`` or
``cuda:N``; it is resolved before any model is loaded, so asking for a GPU that is not there is a one-line error,
not a traceback minutes later. The model is moved there, and everything rftune makes afterwards is made on the
device of the tensors it comes from. Autocast follows the device type. The CPU speed layer (`rftune.cpu`) is
switched on here and only for CPU runs (``train.cpu_kernels``).

``train.bf16: auto`` is bf16 where the device computes it natively: CUDA devices that support it, CPUs with
AVX512-BF16 or AMX. ``true`` is honoured everywhere (on a CPU without native bf16 it is emulated, and slow).
"""

from __future__ import annotations

import contextlib

import torch

from rftune.config import DEVICE_PATTERN
from rftune.cpu.features import cpu_features
from rftune.errors import ConfigError


def resolve_device(setting: str) -> torch.device:
    """``train.device`` -> the torch device, checked against this machine."""
    if not DEVICE_PATTERN.match(str(setting)):
        raise ConfigError(f"device {setting!r} is not a device; use auto, cpu, cuda or cuda:N")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA device visible"
            raise ConfigError(f"train.device={setting} but this machine has no usable GPU ({build}); "
                              "use train.device=cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"train.device={setting} but this machine has {count} CUDA device(s) "
                              f"(cuda:0..cuda:{count - 1})")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def bf16_enabled(setting: bool | str, device: torch.device | str = "cpu") -> bool:
    """``train.bf16`` resolved for `device`: ``auto`` is on where bf16 is native there (about twice the float32
    matmul rate on CPUs with AVX512-BF16/AMX; elsewhere on CPUs emulated bf16 is several times slower)."""
    if setting != "auto":
        return bool(setting)
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_features().native_bf16


def cpu_kernels_enabled(setting: str, device: torch.device) -> bool:
    """``train.cpu_kernels`` resolved: ``auto`` turns rftune's CPU speed layer on for CPU runs, never on a GPU."""
    return setting == "auto" and torch.device(device).type == "cpu"


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device`'s type when `bf16`, else nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def model_device(model) -> torch.device:
    """The device of a model's parameters."""
    return next(model.parameters()).device


def run_summary(device: torch.device, bf16_setting: bool | str, backend: str | None = None,
                weights: str = "float32") -> str:
    """One line for the start of a run: device, the weights' dtype, bf16 and (for sampling) the generation
    backend."""
    device = torch.device(device)
    bf16 = bf16_enabled(bf16_setting, device)
    if device.type == "cuda":
        where = f"device: {device} ({torch.cuda.get_device_name(device)})"
    else:
        where = f"device: cpu, {cpu_features().describe()}"
    line = f"{where}; weights {weights}; bf16 {'on' if bf16 else 'off'}"
    if bf16_setting is True and device.type == "cpu" and not cpu_features().native_bf16:
        line += (" (train.bf16=true on a CPU without native bf16: emulated, slower than float32; "
                 "train.bf16=auto picks float32 here)")
    return line + (f"; generation: {backend}" if backend else "")
