"""Matmul attention (rftune.cpu.attention) equals transformers' SDPA path: values, gradients, padding, caches."""

import pytest
import torch

from rftune.cpu.attention import NAME, matmul_attention, use_matmul_attention
from rftune.testing import tiny_lora_model
from rftune.train.logprobs import completion_logprobs


def _reference(query, key, value, allowed, scale):
    """Per-head softmax attention written out: every query head uses the KV head of its group."""
    group = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)
    scores = (query @ key.transpose(-1, -2)) * scale
    return (scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ value).transpose(1, 2)


@pytest.mark.parametrize("with_mask", [False, True])
def test_grouped_query_attention_matches_the_written_out_formula(with_mask):
    torch.manual_seed(0)
    b, heads, kv_heads, q_len, k_len, d = 2, 6, 2, 3, 5, 4
    query, key, value = (torch.randn(b, n, t, d) for n, t in ((heads, q_len), (kv_heads, k_len), (kv_heads, k_len)))
    causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)  # the last q_len keys are the queries
    mask = causal.expand(b, 1, q_len, k_len).clone()
    mask[1, :, :, 0] = False  # row 1 has a padding key
    out, weights = matmul_attention(torch.nn.Module(), query, key, value, mask if with_mask else None, scaling=0.5)
    expected = _reference(query, key, value, mask if with_mask else causal, 0.5)
    assert weights is None and out.shape == (b, q_len, heads, d)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_a_query_with_nothing_to_attend_to_gets_finite_output():
    query, key, value = torch.randn(1, 2, 1, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    out, _ = matmul_attention(torch.nn.Module(), query, key, value, torch.zeros(1, 1, 1, 3, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_log_probs_and_lora_gradients_equal_the_sdpa_model(tiny_model_dir):
    # Left-padded prompts shared by groups of rows, ragged completions: the prefix cache, padding masks and the
    # length-grouped passes all go through the attention function.
    model, tokenizer = tiny_lora_model(tiny_model_dir, seed=4, scale=0.3)
    model.train()
    encoded = tokenizer(["<|im_start|>user\nwhat is 7 times 6?<|im_end|>", "<|im_start|>user\nhi<|im_end|>"],
                        return_tensors="pt", padding=True, padding_side="left")
    prompt_ids = encoded["input_ids"].repeat_interleave(3, 0)
    prompt_mask = encoded["attention_mask"].repeat_interleave(3, 0)
    torch.manual_seed(1)
    completion_ids = torch.randint(5, 60, (6, 8))
    lengths = torch.tensor([8, 3, 5, 1, 6, 2])
    mask = (torch.arange(8)[None] < lengths[:, None]).long()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]

    def run():
        logprobs, entropy = completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, mask,
                                                temperature=0.7, with_entropy=True)
        return logprobs, entropy, torch.autograd.grad(logprobs.sum(), lora_b)

    expected = run()
    assert use_matmul_attention(model)
    assert model.get_base_model().config._attn_implementation == NAME
    got = run()
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], expected[1], atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(got[2], expected[2]):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_other_architectures_keep_their_attention(tiny_model_dir):
    model, _ = tiny_lora_model(tiny_model_dir, seed=4, scale=0.3)
    model.get_base_model().config.model_type = "gemma2"  # soft-capped attention: not ours to replace
    assert not use_matmul_attention(model)
    assert model.get_base_model().config._attn_implementation != NAME
