"""A tiny, randomly initialised chat model built locally, for tests and examples that must not download anything.

`build_tiny_model(folder)` writes a 2-layer Llama with a character-level tokenizer and a ChatML chat template
(the same template family as SmolLM2) to `folder`, loadable with `rftune.model.loading.load_model_and_tokenizer`.
"""

from __future__ import annotations

import string
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<|im_end|>"]


def build_tiny_tokenizer():
    """A character-level fast tokenizer: one token per printable ASCII character plus the chat specials."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) | {"✓"})
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + ["<unk>"] + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<|im_end|>", bos_token="<|im_start|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(folder: str | Path, seed: int = 0, hidden_size: int = 32, num_layers: int = 2,
                     context: int = 1024) -> Path:
    """Write a tiny random Llama + tokenizer (`context` positions) to `folder` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=context, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_lora_model(folder: str | Path, seed: int, scale: float, r: int = 4):
    """The tiny model at `folder` with LoRA adapters whose B matrices are random (N(0, scale)), not zero.

    A fresh adapter is an identity (B = 0); tests of merging, prefix sharing or adapter-disabled passes need one
    that changes the outputs. Returns (model, tokenizer); the caller picks train or eval mode.
    """
    import torch

    from rftune.model.loading import apply_lora, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(folder))
    model = apply_lora(model, r=r, alpha=2 * r, dropout=0.0, target_modules="all-linear")
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, scale)
    return model, tokenizer


class FirstRowsStream:
    """A stand-in for the trainer's prompt stream that hands out rows 0 .. count-1 at every step (at stream
    positions 0 .. count-1), so a step trains on known rows."""

    position = 0

    def take(self, count: int) -> list[int]:
        return list(range(count))

    def next_positions(self, count: int) -> list[int]:
        return list(range(count))


def report_page_data(page: str) -> dict:
    """The numbers an ``rftune report`` page draws: its embedded JSON block, parsed."""
    import json
    import re

    block = re.search(r'<script type="application/json" id="rftune-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(block.replace("<\\/", "</"))
