"""Prepacked oneDNN weights (rftune.prepacked) give the plain products."""

import pytest
import torch
import torch.nn.functional as F

from rftune.prepacked import linear, prepack


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
@pytest.mark.parametrize("dtype, rtol", [(torch.bfloat16, 2 ** -8), (torch.float32, 1e-6)])
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
