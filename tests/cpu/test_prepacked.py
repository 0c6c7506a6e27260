"""Prepacked oneDNN weights (rftune.cpu.prepacked) give the plain products."""

import pytest
import torch
import torch.nn.functional as F

from rftune.cpu.features import cpu_features
from rftune.cpu.prepacked import linear, prepack

BF16_WEIGHTS = pytest.mark.skipif(not cpu_features().onednn_bf16_weights,
                                  reason="this CPU has no oneDNN bf16 weights (needs AVX512 BW/VL/DQ or "
                                         "AVX-NE-CONVERT); test_bf16_weights_stay_plain_where_onednn_cannot_pack_them "
                                         "covers the fallback")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
@pytest.mark.parametrize("dtype, rtol", [pytest.param(torch.bfloat16, 2 ** -8, marks=BF16_WEIGHTS),
                                         (torch.float32, 1e-6)])
def test_prepacked_weights_give_the_plain_products(dtype, rtol):
    torch.manual_seed(0)
    weight, bias = torch.randn(40, 24).to(dtype), torch.randn(40).to(dtype)
    packed = prepack(weight)
    assert packed.is_mkldnn and torch.equal(packed.to_dense(), weight)
    x = torch.randn(3, 7, 24).to(dtype)[:, 2:5]  # a strided view, as the decoder's slices are
    exact = F.linear(x.double(), weight.double(), bias.double())
    got = linear(x, packed, bias)
    assert got.dtype == dtype and got.shape == (3, 3, 40)
    torch.testing.assert_close(got.double(), exact, atol=1e-5, rtol=rtol)  # one rounding to dtype
    torch.testing.assert_close(linear(x, packed).double(), exact - bias.double(), atol=1e-5, rtol=rtol)


def test_bf16_weights_stay_plain_where_onednn_cannot_pack_them(cpu_without):
    # As on an AVX2-only CPU, where PyTorch raises for a bf16 oneDNN weight: prepack hands back the weight itself
    # and linear is plain F.linear.
    cpu_without("avx512")
    torch.manual_seed(0)
    weight, bias = torch.randn(40, 24).to(torch.bfloat16), torch.randn(40).to(torch.bfloat16)
    assert prepack(weight) is weight
    x = torch.randn(3, 7, 24).to(torch.bfloat16)[:, 2:5]
    assert torch.equal(linear(x, prepack(weight), bias), F.linear(x, weight, bias))
    assert prepack(weight.float()).is_mkldnn == torch.backends.mkldnn.is_available()  # fp32 packing is kept
