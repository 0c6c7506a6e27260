"""The fused LoRA linear (rftune.cpu.lora_fused) equals PEFT's forward: values and every gradient, fp32 and bf16."""

import pytest
import torch

from rftune.cpu import store_frozen_linears_in
from rftune.cpu.lora_fused import fuse_lora_layers
from rftune.testing import tiny_lora_model
from rftune.train.logprobs import completion_logprobs


def _batch(tokenizer):
    encoded = tokenizer(["<|im_start|>user\nwhat is 7 times 6?<|im_end|>", "<|im_start|>user\nhi<|im_end|>"],
                        return_tensors="pt", padding=True, padding_side="left")
    torch.manual_seed(1)
    completion_ids = torch.randint(5, 60, (4, 6))
    mask = (torch.arange(6)[None] < torch.tensor([6, 2, 4, 1])[:, None]).long()
    return (encoded["input_ids"].repeat_interleave(2, 0), encoded["attention_mask"].repeat_interleave(2, 0),
            completion_ids, mask)


def _logprobs_and_grads(model, batch, bf16: bool):
    trainable = [p for p in model.parameters() if p.requires_grad]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logprobs, _ = completion_logprobs(model, *batch)
    return logprobs, torch.autograd.grad((logprobs * torch.linspace(-1, 2, logprobs.numel()).view_as(logprobs)).sum(),
                                         trainable)


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_layers_give_peft_values_and_gradients(tiny_model_dir, bf16):
    model, tokenizer = tiny_lora_model(tiny_model_dir, seed=5, scale=0.3)
    model.train()
    if bf16:
        store_frozen_linears_in(model, torch.bfloat16)
    batch = _batch(tokenizer)
    expected, expected_grads = _logprobs_and_grads(model, batch, bf16)
    assert fuse_lora_layers(model) == 2 * 7  # every linear of both layers (the output head has no adapter)
    got, got_grads = _logprobs_and_grads(model, batch, bf16)
    tolerance = dict(atol=3e-2, rtol=3e-2) if bf16 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, expected, **tolerance)
    assert len(got_grads) == len(expected_grads) == 2 * 2 * 7  # A and B of every layer
    for ours, theirs in zip(got_grads, expected_grads):
        assert ours.dtype == theirs.dtype == torch.float32
        if bf16:  # bf16 rounds each matmul: compare directions and sizes, not digits
            cosine = torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0)
            assert cosine > 0.99 and 0.9 < ours.norm() / theirs.norm() < 1.1
        else:
            torch.testing.assert_close(ours, theirs, **tolerance)


def test_disabled_adapters_run_the_base_layer_only(tiny_model_dir):
    model, tokenizer = tiny_lora_model(tiny_model_dir, seed=5, scale=0.3)
    batch = _batch(tokenizer)
    with torch.no_grad(), model.disable_adapter():
        expected, _ = completion_logprobs(model, *batch)
    fuse_lora_layers(model)
    with torch.no_grad(), model.disable_adapter():
        got, _ = completion_logprobs(model, *batch)
    with torch.no_grad():
        with_adapter, _ = completion_logprobs(model, *batch)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    assert (with_adapter - got).abs().max() > 1e-2  # the adapter does change the outputs


def test_layers_with_dropout_keep_peft_forward(tiny_model_dir):
    from rftune.model.loading import apply_lora, load_model

    model = apply_lora(load_model(tiny_model_dir), r=4, alpha=8, dropout=0.1, target_modules="all-linear")
    assert fuse_lora_layers(model) == 0
