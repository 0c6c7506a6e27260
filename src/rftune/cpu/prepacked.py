"""Linear layers with weights prepacked once for oneDNN, the library behind PyTorch's CPU matmuls.

A plain weight costs oneDNN extra work in every call, a large share of the product when the input has few rows,
as in a decode step. (In the training passes, at hundreds of rows, a prepacked copy of the frozen LoRA base
weights did not pay: the policy pass got slower, the reference pass no faster.) `prepack` reorders a weight once
into oneDNN's blocked layout; `linear` takes either kind of weight. Measured on a 2-thread CPU with native bf16:
[32 x 576] @ [576 x 3104] ~0.45 -> ~0.3 ms, the [32 x 576] @ [576 x 49152] output projection ~9 -> ~6 ms. The
values are the same products (bit-identical in bf16 without a bias; a bias is added before the rounding).
Elsewhere (a GPU, a torch build without oneDNN, other dtypes, a bf16 weight on a CPU where oneDNN cannot hold
one: AVX2 without AVX512 or AVX-NE-CONVERT, see `rftune.cpu.features`) `prepack` returns the weight as it is, and
`linear` is then plain F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rftune.cpu.features import cpu_features


def onednn_serves(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `prepack` reorders a weight of `dtype` on `device` (else it returns the weight as it is)."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or not torch.backends.mkldnn.is_available():
        return False
    return dtype == torch.float32 or cpu_features().onednn_bf16_weights


def prepack(weight: torch.Tensor) -> torch.Tensor:
    """The weight [out, in] in oneDNN's blocked matmul layout where oneDNN serves it; else the weight itself."""
    if not onednn_serves(weight.device, weight.dtype):
        return weight
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for a plain or a prepacked weight."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")
    return F.linear(x, weight, bias)
