"""The lean decoder (rftune.cpu.fast_decode) against Hugging Face: same logits, same greedy tokens, same warpers."""

import dataclasses

import pytest
import torch

from rftune.algo import sampling
from rftune.cpu import fast_decode
from rftune.cpu.features import cpu_features
from rftune.model.loading import load_model_and_tokenizer
from rftune.rollout.generation import (
    SamplingParams,
    encode_prompts,
    generate_replies,
    resolve_backend,
    sample_completions,
)
from rftune.testing import tiny_lora_model
from rftune.types import Sample

PROMPTS = [[{"role": "user", "content": "What is 12 + 35?"}], [{"role": "user", "content": "Hi"}]]


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    model, tokenizer = tiny_lora_model(tiny_model_dir, seed=1, scale=0.5)  # non-zero adapter: merging matters
    return model.eval(), tokenizer


def _prompt_tensors(tokenizer):
    return encode_prompts(tokenizer, PROMPTS)  # left-padded [2, Tp]


def _last_logits(model, ids, mask):
    """The PEFT model's own next-token logits [P, V] for left-padded rows (positions count real tokens)."""
    return model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits[:, -1]


def _hf_greedy(model, tokenizer, ids, mask, max_new_tokens: int = 12):
    """HF ``generate``'s greedy completion ids [P, Tc] with the model's own stop token."""
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id)
    return out[:, ids.shape[1]:]


def test_prefill_logits_match_the_peft_model(lora_model):
    model, tokenizer = lora_model
    ids, mask = _prompt_tensors(tokenizer)
    decoder = fast_decode.build_decoder(model)
    cache = decoder.new_cache(4, ids.shape[1] + 4)
    with torch.no_grad():
        logits = decoder.prefill(ids, mask, cache, torch.arange(4).view(2, 2))
        expected = _last_logits(model, ids, mask)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_decode_step_logits_match_a_full_forward(lora_model):
    model, tokenizer = lora_model
    ids, mask = _prompt_tensors(tokenizer)
    decoder = fast_decode.build_decoder(model)
    tp = ids.shape[1]
    cache = decoder.new_cache(2, tp + 2)
    next_tokens = torch.tensor([5, 9])
    with torch.no_grad():
        decoder.prefill(ids, mask, cache, torch.arange(2).view(2, 1))
        key_mask = torch.cat([mask.bool(), torch.ones(2, cache.shape[4] - tp, dtype=torch.bool)], 1)  # [2, Tmax]
        logits = decoder.decode(next_tokens, mask.sum(1), cache, tp, key_mask)
        full_ids, full_mask = torch.cat([ids, next_tokens[:, None]], 1), torch.cat([mask, torch.ones(2, 1).long()], 1)
        expected = _last_logits(model, full_ids, full_mask)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_greedy_tokens_equal_hf_generate(lora_model):
    model, tokenizer = lora_model
    ids, mask = _prompt_tensors(tokenizer)
    eos = [tokenizer.eos_token_id]
    hf = _hf_greedy(model, tokenizer, ids, mask)
    ours = fast_decode.generate(fast_decode.build_decoder(model), ids, mask, 1, 12, eos, tokenizer.pad_token_id,
                                temperature=1e-6)
    assert torch.equal(ours, hf[:, :ours.shape[1]])


def _autocast_logits(model, ids, mask):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return _last_logits(model, ids, mask).float()


def test_bf16_prefill_and_decode_match_the_peft_model_under_autocast(lora_model, cpu_kind):
    # bf16 matmuls round differently in the two implementations (and with the thread count); both must sit within
    # bf16 rounding (up to ~0.04 on these logits) of each other and of the float32 model. A wrong layer, a lost
    # adapter or a swapped factor moves the logits by ~0.1-0.7 here.
    model, tokenizer = lora_model
    ids, mask = _prompt_tensors(tokenizer)
    decoder = fast_decode.build_decoder(model, torch.bfloat16)
    tp = ids.shape[1]
    cache = decoder.new_cache(2, tp + 1)
    assert cache.dtype == torch.bfloat16
    with torch.no_grad():
        prefill = decoder.prefill(ids, mask, cache, torch.arange(2).view(2, 1))
        key_mask = torch.cat([mask.bool(), torch.ones(2, cache.shape[4] - tp, dtype=torch.bool)], 1)  # [2, Tmax]
        step = decoder.decode(torch.tensor([5, 9]), mask.sum(1), cache, tp, key_mask)
        full_ids = torch.cat([ids, torch.tensor([[5], [9]])], 1)
        full_mask = torch.cat([mask, torch.ones(2, 1).long()], 1)
    for ours, (i, m) in ((prefill, (ids, mask)), (step, (full_ids, full_mask))):
        assert ours.dtype == torch.float32
        with torch.no_grad():
            exact = _last_logits(model, i, m)
        autocast = _autocast_logits(model, i, m)
        torch.testing.assert_close(ours, autocast, atol=5e-2, rtol=0)
        torch.testing.assert_close(ours, exact, atol=5e-2, rtol=0)


def test_bf16_decoder_keeps_the_adapter_apart_from_the_rounded_base_weights(lora_model, cpu_kind):
    # A bf16 merge W + s*B@A would round away an adapter update below W's bf16 spacing (early in training, all
    # of it); the decoder keeps W (rounded, as autocast does) and the factors A and s*B as separate matmuls.
    model, _ = lora_model
    decoder = fast_decode.build_decoder(model, torch.bfloat16)
    layer, attn = decoder.layers[0], model.get_base_model().model.layers[0].self_attn
    q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
    out_rows = q.base_layer.weight.shape[0] + k.base_layer.weight.shape[0] + v.base_layer.weight.shape[0]
    r = q.lora_A["default"].weight.shape[0]
    assert layer["qkv"].is_mkldnn == cpu_features().onednn_bf16_weights  # prepacked only where oneDNN can
    stacked = _plain(layer["qkv"])
    assert stacked.shape[0] == out_rows + 3 * r and layer["qkv_up"].shape == (out_rows, 3 * r)
    assert torch.equal(stacked[:q.out_features], q.base_layer.weight.to(torch.bfloat16))
    assert torch.equal(stacked[out_rows:out_rows + r], q.lora_A["default"].weight.to(torch.bfloat16))
    scaled_b = (q.lora_B["default"].weight * q.scaling["default"]).to(torch.bfloat16)
    assert torch.equal(layer["qkv_up"][:q.out_features, :r], scaled_b)
    assert not layer["qkv_up"][:q.out_features, r:].any()  # block-diagonal: q's rows see only q's factors
    x = torch.randn(1, 3, q.in_features).to(torch.bfloat16)
    x_a = (x @ q.lora_A["default"].weight.to(torch.bfloat16).T).float()  # rounded to bf16, as the decoder's is
    expected = x.float() @ q.base_layer.weight.to(torch.bfloat16).float().T + x_a @ scaled_b.float().T
    got = decoder._project(layer, "qkv", x)[..., :q.out_features].float()
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-2)  # one bf16 rounding of the output


def test_float32_decoder_merges_the_adapter(lora_model):
    model, _ = lora_model
    decoder = fast_decode.build_decoder(model)
    q = model.get_base_model().model.layers[0].self_attn.q_proj
    merged = q.base_layer.weight + q.scaling["default"] * q.lora_B["default"].weight @ q.lora_A["default"].weight
    assert "qkv_up" not in decoder.layers[0]
    torch.testing.assert_close(_plain(decoder.layers[0]["qkv"])[:q.out_features], merged, atol=1e-6, rtol=0)


def _plain(weight: torch.Tensor) -> torch.Tensor:
    return weight.to_dense() if weight.is_mkldnn else weight


def test_building_the_decoder_leaves_the_trained_model_unmerged(lora_model):
    model, _ = lora_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fast_decode.build_decoder(model)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    assert not any(getattr(m, "merged", False) for m in model.modules())


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 5, 1.0), (1.3, 0, 0.8),
                                                     (0.9, 7, 0.6)])
def test_warpers_equal_transformers(temperature, top_k, top_p):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    expected = logits.clone()
    warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    warpers += [TopKLogitsWarper(top_k)] if top_k else []
    warpers += [TopPLogitsWarper(top_p)] if top_p < 1.0 else []
    for warper in warpers:
        expected = warper(None, expected)
    assert torch.equal(sampling.warp_logits(logits, temperature, top_k, top_p), expected)


def test_sampled_frequencies_follow_the_warped_distribution():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).repeat(40_000, 1)
    tokens = sampling.sample_tokens(logits, 0.8, 0, 0.9)
    frequencies = torch.bincount(tokens, minlength=5).float() / tokens.numel()
    expected = sampling.warp_logits(logits[:1], 0.8, 0, 0.9).softmax(-1)[0]
    torch.testing.assert_close(frequencies, expected, atol=0.01, rtol=0)


@pytest.mark.parametrize("draw,expected", [(0.0, 1), (1.0, 3)])
def test_sampling_never_picks_a_removed_token_at_the_ends_of_the_draw(monkeypatch, draw, expected):
    # top-k 3 keeps tokens 1, 2, 3 of 6: a draw of 0 must give the first kept token, a draw at the total (what
    # rounding can produce) the last kept one, never a removed token at either end.
    logits = torch.tensor([[0.0, 5.0, 4.0, 3.0, 1.0, 2.0]]).repeat(2, 1)
    monkeypatch.setattr(sampling.torch, "rand", lambda *shape, dtype=None: torch.full(shape, draw, dtype=dtype))
    assert sampling.sample_tokens(logits, 1.0, 3, 1.0).tolist() == [expected, expected]


def test_fast_and_hf_paths_give_the_same_rollout_layout(lora_model):
    model, tokenizer = lora_model
    samples = [Sample(prompt=p, example={}, index=i) for i, p in enumerate(PROMPTS)]
    params = SamplingParams(num_generations=3, max_new_tokens=10)
    torch.manual_seed(0)
    fast = sample_completions(model, tokenizer, samples, params)
    torch.manual_seed(0)
    slow = sample_completions(model, tokenizer, samples, dataclasses.replace(params, backend="hf"))
    for batch in (fast, slow):
        assert batch.size == 6 and batch.completion_ids.shape[1] <= 10
        assert [s.index for s in batch.samples] == [0, 0, 0, 1, 1, 1]
        lengths = batch.completion_mask.sum(1)
        ends_with_eos = batch.completion_ids[torch.arange(6), (lengths - 1).clamp(min=0)] == tokenizer.eos_token_id
        assert torch.equal(ends_with_eos, ~batch.truncated)
        assert torch.equal(batch.prompt_ids, slow.prompt_ids)


@pytest.mark.parametrize("backend", ["cpu-fast", "hf"])
def test_a_seeded_group_samples_the_same_whatever_else_is_in_the_batch(lora_model, backend):
    model, tokenizer = lora_model
    samples = [Sample(prompt=p, example={}, index=i) for i, p in enumerate(PROMPTS)]
    params = SamplingParams(num_generations=3, max_new_tokens=10, backend=backend)
    torch.manual_seed(0)
    both = sample_completions(model, tokenizer, samples, dataclasses.replace(params, seeds=(11, 22)))
    torch.manual_seed(1)  # torch's global generator plays no part
    alone = sample_completions(model, tokenizer, samples[1:], dataclasses.replace(params, seeds=(22,)))
    assert both.completions[3:] == alone.completions  # the second prompt's group, alone or beside the first
    other = sample_completions(model, tokenizer, samples[1:], dataclasses.replace(params, seeds=(23,)))
    assert other.completions != alone.completions
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        sample_completions(model, tokenizer, samples[1:], dataclasses.replace(params, seeds=(1, 2)))


def test_seeded_sampling_draws_the_same_tokens_on_both_backends(lora_model):
    model, tokenizer = lora_model
    samples = [Sample(prompt=p, example={}, index=i) for i, p in enumerate(PROMPTS)]
    params = SamplingParams(num_generations=3, max_new_tokens=10, temperature=0.9, top_k=20, top_p=0.95,
                            seeds=(5, 6))
    fast = sample_completions(model, tokenizer, samples, params)
    slow = sample_completions(model, tokenizer, samples, dataclasses.replace(params, backend="hf"))
    assert fast.completions == slow.completions and len(set(fast.completions)) > 1


def test_unknown_architectures_fall_back(tiny_model_dir):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    model.config.model_type = "not-a-llama"
    assert fast_decode.build_decoder(model) is None


SYSTEM = {"role": "system", "content": "You are a careful assistant. Answer briefly and check your arithmetic "
                                       "twice before you reply to the user."}
SHARED_PREFIX_PROMPTS = [[SYSTEM, {"role": "user", "content": text}]
                         for text in ("What is 12 + 35?", "Hi", "Name three colours of the rainbow, please.")]


def test_common_prefix_and_remainders_by_hand():
    ids = torch.tensor([[0, 0, 7, 8, 9, 4], [7, 8, 9, 5, 6, 1], [0, 7, 8, 9, 5, 2]])
    mask = (ids != 0).long()
    assert fast_decode.common_prefix_length(ids, mask) == 3  # 7 8 9
    rest, rest_mask = fast_decode.drop_prefix(ids, mask, 3)
    assert rest.tolist() == [[0, 0, 4], [5, 6, 1], [0, 5, 2]] \
        and rest_mask.tolist() == [[0, 0, 1], [1, 1, 1], [0, 1, 1]]
    same = torch.tensor([[7, 8, 9], [7, 8, 9]])
    assert fast_decode.common_prefix_length(same, torch.ones_like(same)) == 2  # one token left for each remainder
    assert fast_decode.common_prefix_length(same[:1], torch.ones(1, 3).long()) == 0  # one prompt: nothing to share


def test_shared_prefix_generation_equals_hf_greedy(lora_model):
    model, tokenizer = lora_model
    ids, mask = encode_prompts(tokenizer, SHARED_PREFIX_PROMPTS)
    assert fast_decode.common_prefix_length(ids, mask) >= fast_decode.MIN_SHARED_PREFIX  # the shared path runs
    eos = [tokenizer.eos_token_id]
    hf = _hf_greedy(model, tokenizer, ids, mask)
    ours = fast_decode.generate(fast_decode.build_decoder(model), ids, mask, 2, 12, eos, tokenizer.pad_token_id,
                                greedy=True)  # [6, Tc], two rows per prompt
    assert torch.equal(ours[::2], hf[:, :ours.shape[1]]) and torch.equal(ours[1::2], ours[::2])


def test_shared_prefix_prefill_logits_match_the_peft_model(lora_model):
    model, tokenizer = lora_model
    ids, mask = encode_prompts(tokenizer, SHARED_PREFIX_PROMPTS)
    shared = fast_decode.common_prefix_length(ids, mask)
    rest, rest_mask = fast_decode.drop_prefix(ids, mask, shared)
    decoder = fast_decode.build_decoder(model)
    cache = decoder.new_cache(3, shared + rest.shape[1])
    first = int(mask[0].nonzero()[0])
    with torch.no_grad():
        decoder.prefill(ids[:1, first:first + shared], mask[:1, first:first + shared], cache, torch.arange(3)[None])
        logits = decoder.prefill(rest, rest_mask, cache, torch.arange(3)[:, None], past=shared)
        expected = _last_logits(model, ids, mask)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_replies_take_the_lean_path_and_match_hf(lora_model):
    model, tokenizer = lora_model
    contexts = [tokenizer.apply_chat_template(m, add_generation_prompt=True) for m in SHARED_PREFIX_PROMPTS]
    contexts = [list(c["input_ids"] if hasattr(c, "keys") else c) for c in contexts]
    params = SamplingParams(num_generations=1, max_new_tokens=10)
    assert resolve_backend("auto", model) == "cpu-fast"
    lean = generate_replies(model, tokenizer, contexts, params, 10, greedy=True)
    hf = generate_replies(model, tokenizer, contexts, dataclasses.replace(params, backend="hf"), 10, greedy=True)
    assert lean == hf and all(len(reply) > 0 for reply in lean)
