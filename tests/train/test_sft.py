"""SFT: exact assistant-only labels, loading chat JSONL, loss going down, the saved adapter, and the SFT -> GRPO
chain."""

import json

import pytest
import torch

import rftune.train.sft as sft_module
from rftune.config import config_from_dict
from rftune.errors import DataError
from rftune.model.loading import apply_lora, load_model, load_tokenizer
from rftune.train.sft import (
    IGNORE,
    collate,
    encode_conversation,
    load_chat_jsonl,
    sft_loss,
    train_sft,
    with_sft_adapter,
)

CONVERSATION = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Yo!"}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def chars(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_labels_are_exactly_the_assistant_replies_and_their_end_of_turn(tokenizer):
    encoded = encode_conversation(tokenizer, CONVERSATION, max_length=1000)
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert encoded.input_ids == chars(tokenizer, text)
    eos = tokenizer.eos_token_id
    context1 = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    context2 = "\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    expected = ([IGNORE] * len(chars(tokenizer, context1)) + chars(tokenizer, "Yo!") + [eos]
                + [IGNORE] * len(chars(tokenizer, context2)) + chars(tokenizer, "4") + [eos]
                + [IGNORE] * len(chars(tokenizer, "\n")))
    assert encoded.labels == expected
    assert tokenizer.decode([t for t in encoded.labels if t != IGNORE]) == "Yo!<|im_end|>4<|im_end|>"


def test_long_conversations_are_cut_from_the_right(tokenizer):
    encoded = encode_conversation(tokenizer, CONVERSATION, max_length=60)
    full = encode_conversation(tokenizer, CONVERSATION, max_length=1000)
    assert encoded.input_ids == full.input_ids[:60] and encoded.labels == full.labels[:60]


def test_chat_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"messages": CONVERSATION}) + "\n" + json.dumps({"messages": [{"role": "user"}]}) + "\n")
    with pytest.raises(DataError, match=r"data.jsonl:2: message 0"):
        load_chat_jsonl(path)
    path.write_text(json.dumps({"messages": CONVERSATION[:2]}) + "\n")
    with pytest.raises(DataError, match="no assistant message"):
        load_chat_jsonl(path)


@pytest.mark.parametrize("bf16", [False, True])
def test_sft_steps_reduce_the_loss_and_save_the_adapter(tiny_model_dir, tokenizer, tmp_path, bf16):
    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_model_dir), r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    batch = collate([encode_conversation(tokenizer, CONVERSATION, 200)], tokenizer.pad_token_id)
    with torch.no_grad():
        before = sft_loss(model, batch).item()
    adapter = train_sft(model, tokenizer, [CONVERSATION] * 4, tmp_path / "sft", epochs=8, batch_size=4,
                        learning_rate=3e-2, bf16=bf16, progress=False)
    if bf16:  # frozen base weights stored in bf16 once; the adapters train in float32
        dtypes = {n: p.dtype for n, p in model.named_parameters()}
        assert {d for n, d in dtypes.items() if "base_layer" in n} == {torch.bfloat16}
        assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        after = sft_loss(model, batch).item()
    assert after < before - 0.25
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "sft").glob(".tmp-*"))
    records = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9)) and records[-1]["loss"] < records[0]["loss"]
    assert records[0]["tokens"] == 4 * (len("Yo!") + len("4") + 2)


SYSTEM = {"role": "system", "content": "You are a terse assistant; answer in one word."}  # > 16 shared tokens


def test_sft_loss_equals_the_models_own_cross_entropy_with_and_without_the_shared_prompt(tiny_model_dir, tokenizer,
                                                                                         monkeypatch):
    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_model_dir), r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # an active adapter, so the prefix's keys depend on it
    conversations = [[SYSTEM, {"role": "user", "content": question}, {"role": "assistant", "content": reply}]
                     for question, reply in (("Hi", "Yo!"), ("What is 2+2, exactly?", "4"), ("Sky?", "Blue."))]
    batch = collate([encode_conversation(tokenizer, c, 200) for c in conversations], tokenizer.pad_token_id)
    assert batch["attention_mask"].sum(1).unique().numel() == 3  # rows of three lengths: right padding

    def loss_and_grads():
        model.zero_grad()
        loss = sft_module.sft_loss(model, batch)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    def plain_loss(model, batch):  # the model's own forward and cross-entropy over every labelled position
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE)

    calls = []
    real = sft_module._states_after_shared_prefix
    monkeypatch.setattr(sft_module, "_states_after_shared_prefix", lambda *a: calls.append(a[2]) or real(*a))
    shared_loss, shared_grads = loss_and_grads()
    monkeypatch.setattr(sft_module, "MIN_SHARED_PREFIX", 10_000)  # every row runs in full
    full_loss, full_grads = loss_and_grads()
    monkeypatch.setattr(sft_module, "sft_loss", plain_loss)
    plain, plain_grads = loss_and_grads()
    system_tokens = len(chars(tokenizer, tokenizer.apply_chat_template([SYSTEM], tokenize=False)))
    assert len(calls) == 1 and calls[0] >= system_tokens  # the shared path ran, over the whole system turn
    for loss, grads in ((shared_loss, shared_grads), (full_loss, full_grads)):
        torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-6)
        for name, grad in plain_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_chain_grpo_starts_from_the_sft_adapter(tiny_model_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    from rftune.train.trainer import GRPOTrainer

    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": CONVERSATION}) + "\n")
    config = config_from_dict({
        "model": {"name_or_path": tiny_model_dir}, "lora": {"r": 2, "alpha": 4},
        "generation": {"num_generations": 2, "max_new_tokens": 4},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2},
        "task": {"name": "dataset", "path": str(tmp_path / "prompts.jsonl")},
        "rewards": {"functions": [{"name": "format_regex", "kwargs": {"pattern": ".*"}}]},
        "sft": {"enabled": True, "data": str(data), "max_steps": 2, "batch_size": 1, "learning_rate": 0.05},
    })
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "Hi"}) + "\n")
    chained = with_sft_adapter(config, progress=False)
    adapter = tmp_path / "run" / "sft" / "adapter"
    assert chained.model.adapter == str(adapter)
    saved = load_file(adapter / "adapter_model.safetensors")
    trainer = GRPOTrainer(chained, progress=False)
    lora = {n: p for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert len(lora) == len(saved) and all(p.requires_grad for p in lora.values())
    for name, param in lora.items():
        key = name.replace(".default", "")
        assert torch.equal(param.detach(), saved[key]), name
    assert any(t.abs().sum() > 0 for k, t in saved.items() if "lora_B" in k)  # SFT moved the adapter
    mtime = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    assert with_sft_adapter(config, progress=True).model.adapter == str(adapter)  # finished: reused, not retrained
    assert "reusing" in capsys.readouterr().err
    assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == mtime
