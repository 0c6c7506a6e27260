"""Supervised fine-tuning (the warm start before GRPO): LoRA on chat conversations, loss on assistant tokens only.

Data is chat JSONL, one ``{"messages": [{"role", "content"}, ...]}`` per line, or the task's own SFT data
(``data: task``, the default for a task that has some: its generated traces, with options from ``sft.kwargs``, or
its worked examples; see `rftune.tasks.Task` and `sft_data`). Each conversation is rendered with the chat
template and cut into segments at the assistant turns: an assistant segment is the reply's content plus its
end-of-turn token (what the model generates at inference), everything else (system, user, the generation prompt
``<|im_start|>assistant\\n`` and the newline after the end-of-turn token) is context with label -100. Segments are
tokenized separately, exactly as at generation time, where the prompt is tokenized through its generation prompt and
the reply's tokens follow. Conversations longer than ``max_length`` are cut from the right; one with no assistant
token left is skipped (counted in the log).

Training: AdamW on the LoRA parameters, loss = mean cross-entropy over the batch's assistant tokens, seeded
shuffling per epoch, linear warm-up then constant learning rate. Each step is logged to ``metrics.jsonl``; the
adapter is written in PEFT format under a temporary name and renamed to ``<output_dir>/adapter``, so a finished
adapter is always complete and a chained `rftune train` can reuse it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rftune.cpu import enable_training_kernels, parts_in_force, report_parts
from rftune.cpu.fast_decode import MIN_SHARED_PREFIX, common_prefix_length
from rftune.errors import ConfigError, DataError
from rftune.runtime.atomic_io import verify_folder, write_folder, write_text_atomic
from rftune.runtime.device import autocast, bf16_enabled, cpu_kernels_enabled, model_device, resolve_device, run_summary
from rftune.runtime.jsonl import jsonl_rows
from rftune.runtime.tracking import JsonlLog
from rftune.tasks.data import ROLES
from rftune.train.logprobs import final_states, position_ids_from_mask, selected_logprobs

IGNORE = -100
ADAPTER = "adapter"


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE except on assistant tokens


def encode_conversation(tokenizer, messages: list[dict], max_length: int) -> Encoded:
    """Token ids and labels of one conversation (see the module docstring for which tokens are labelled)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = _assistant_spans(tokenizer, messages, text)
    input_ids: list[int] = []
    labels: list[int] = []
    cursor = 0
    for start, end in spans + [(len(text), len(text))]:
        context = _encode(tokenizer, text[cursor:start])
        reply = _encode(tokenizer, text[start:end])
        input_ids += context + reply
        labels += [IGNORE] * len(context) + reply
        cursor = end
    return Encoded(input_ids[:max_length], labels[:max_length])


def _assistant_spans(tokenizer, messages: list[dict], text: str) -> list[tuple[int, int]]:
    """Character spans of each assistant reply's content plus its end-of-turn token in the rendered text."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i == 0:
            continue
        start = len(tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True))
        end = start + len(message["content"]) + len(tokenizer.eos_token)
        if text[start:end] != message["content"] + tokenizer.eos_token:
            raise ConfigError("the chat template does not render an assistant turn as generation prompt + content "
                              f"+ {tokenizer.eos_token!r}; cannot tell which tokens to train on")
        spans.append((start, end))
    return spans


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def load_chat_jsonl(path: str | Path) -> list[list[dict]]:
    """Conversations from a chat JSONL file; a bad line raises `DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SFT data file not found: {path}")
    conversations = [_check_messages(row.record, row.where) for row in jsonl_rows(path)]
    if not conversations:
        raise DataError(f"{path}: no conversations")
    return conversations


def _check_messages(row, where: str) -> list[dict]:
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: expected {{\"messages\": [...]}} with a non-empty list of chat messages")
    for i, message in enumerate(messages):
        if not (isinstance(message, dict) and message.get("role") in ROLES and isinstance(message.get("content"), str)):
            raise DataError(f"{where}: message {i} must be {{'role': one of {sorted(ROLES)}, 'content': text}}")
    if not any(m["role"] == "assistant" for m in messages[1:]):
        raise DataError(f"{where}: no assistant message after the first message, so nothing to learn")
    return messages


def collate(batch: list[Encoded], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids [N, T], attention_mask [N, T] and labels [N, T] (IGNORE on padding)."""
    width = max(len(e.input_ids) for e in batch)
    return {
        "input_ids": torch.tensor([e.input_ids + [pad_token_id] * (width - len(e.input_ids)) for e in batch]),
        "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]),
        "labels": torch.tensor([e.labels + [IGNORE] * (width - len(e.labels)) for e in batch]),
    }


def sft_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the batch's labelled (assistant) tokens, with the one-position shift.

    Only the labelled positions are projected to the vocabulary (Llama-family models; others project every
    position from just before the first labelled token on), and their log-softmax is computed a block of rows at a
    time (`rftune.train.logprobs.selected_logprobs`). Tokens that every conversation of the batch starts with (a system
    prompt) run once: their keys and values, computed with gradient, are shared by all rows, and only the rest of
    each conversation runs per row. The loss and its gradient are those of running every row in full through the
    model's own forward (the prefix's gradient is the sum over its rows).
    """
    labelled = batch["labels"] != IGNORE  # [N, T]
    first = int(labelled.float().argmax(dim=1).min())  # earliest labelled position in the batch
    keep = batch["input_ids"].shape[1] - first + 1  # states from position first-1 on (the prompt needs none)
    shared = min(common_prefix_length(batch["input_ids"], batch["attention_mask"]), first - 1)
    if shared >= MIN_SHARED_PREFIX:
        states = _states_after_shared_prefix(model, batch, shared, keep)
    else:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        states = final_states(model, ids, mask, position_ids_from_mask(mask), None, keep)  # [N, keep, *]
    targets = batch["labels"][:, first:]  # [N, keep-1]: position first-1+j predicts token first+j
    scored = targets != IGNORE
    logprobs, _ = selected_logprobs(model, states[:, :-1][scored], targets[scored])
    return -logprobs.mean()


def _states_after_shared_prefix(model, batch: dict[str, torch.Tensor], shared: int, keep: int) -> torch.Tensor:
    """`final_states` [N, keep, *] of the last `keep` positions, the first `shared` tokens run once for all rows."""
    from transformers import DynamicCache

    ids, mask = batch["input_ids"], batch["attention_mask"]  # [N, T], right-padded: position = column
    rows, width = ids.shape
    config = model.config
    prefix = DynamicCache(config=config)
    final_states(model, ids[:1, :shared], mask[:1, :shared], None, prefix, 1)
    cache = DynamicCache([(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1))
                          for layer in prefix.layers], config=config)  # [N, nkv, shared, d] views
    positions = torch.arange(shared, width, device=ids.device).expand(rows, -1)  # [N, T - shared]
    return final_states(model, ids[:, shared:], mask, positions, cache, keep)


def train_sft(model, tokenizer, conversations: list[list[dict]], output_dir: str | Path, *, epochs: int = 1,
              max_steps: int = 0, batch_size: int = 4, learning_rate: float = 2e-4, weight_decay: float = 0.0,
              warmup_steps: int = 0, max_length: int = 1024, seed: int = 0, bf16: bool = False,
              cpu_kernels: bool = True, progress: bool = True) -> Path:
    """Train `model`'s trainable (LoRA) parameters on `conversations`, on the model's device; save and return
    ``<output_dir>/adapter``.

    ``bf16``: matmuls in bfloat16 under autocast. ``cpu_kernels``: a model on the CPU runs rftune's CPU training
    kernels (`rftune.cpu`; under bf16 they store the frozen base weights in bfloat16 once).
    """
    output_dir = Path(output_dir)
    encoded = [e for e in (encode_conversation(tokenizer, m, max_length) for m in conversations)
               if any(label != IGNORE for label in e.labels)]
    if not encoded:
        raise DataError(f"no conversation keeps an assistant token within sft.max_length={max_length}")
    per_epoch = math.ceil(len(encoded) / batch_size)
    total = min(epochs * per_epoch, max_steps) if max_steps else epochs * per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))
    log = JsonlLog(output_dir / "metrics.jsonl", keep_through_step=0)
    device = model_device(model)
    if cpu_kernels and device.type == "cpu":
        enable_training_kernels(model, bf16)
    model.train()
    if cpu_kernels and device.type == "cpu":  # read back after train(), which may re-bind forwards
        in_force = report_parts(parts_in_force(model, bf16))
        if progress:
            print(f"sft: cpu kernels: {in_force}", file=sys.stderr, flush=True)
    step = 0
    try:
        for epoch in range(epochs):
            order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            for first in range(0, len(encoded), batch_size):
                if step >= total:
                    break
                step += 1
                start = time.perf_counter()
                batch = {key: value.to(device) for key, value in collate(
                    [encoded[i] for i in order[first:first + batch_size].tolist()], tokenizer.pad_token_id).items()}
                with autocast(device, bf16):
                    loss = sft_loss(model, batch)
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                record = {"step": step, "epoch": epoch + 1, "loss": loss.item(), "grad_norm": grad_norm,
                          "lr": scheduler.get_last_lr()[0], "tokens": int((batch["labels"] != IGNORE).sum()),
                          "time/step": time.perf_counter() - start, "skipped": len(conversations) - len(encoded)}
                log.write([record])
                if progress:
                    print(f"sft step {step}/{total} | epoch {epoch + 1} | loss {record['loss']:.4f} "
                          f"| {record['time/step']:.1f} s/step", file=sys.stderr, flush=True)
    finally:
        log.close()
    return save_adapter(model, tokenizer, output_dir)


def save_adapter(model, tokenizer, output_dir: Path) -> Path:
    """Write the PEFT adapter (and tokenizer) with its manifest to ``<output_dir>/adapter``, atomically."""
    def fill(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    return write_folder(output_dir / ADAPTER, fill, "the SFT adapter")


def sft_output_dir(config) -> Path:
    """``sft.output_dir``, or ``<train.output_dir>/sft`` when unset."""
    return Path(config.sft.output_dir or Path(config.train.output_dir) / "sft")


def finished_adapter(config) -> Path | None:
    """The SFT adapter of this config when a finished one exists (every file verifying against its manifest)."""
    adapter = sft_output_dir(config) / ADAPTER
    return adapter if (adapter / "adapter_config.json").is_file() and not verify_folder(adapter) else None


TASK_DATA = "task"  # sft.data value: the task's own SFT data, generated into <sft output>/traces.jsonl


def sft_data(config, task=None) -> str:
    """``sft.data`` (``task`` also when it names the config's task), or when unset ``task`` for a task with SFT data
    of its own (`rftune.tasks.Task.sft_traces` or `worked_examples`). `task`: the config's task when already built."""
    data = config.sft.data
    if data == config.task.name:
        return TASK_DATA
    if data is not None:
        return data
    task = task or _task(config)
    if task.sft_traces is not None or task.worked_examples is not None:
        return TASK_DATA
    raise ConfigError(f"sft.data: task {config.task.name!r} has no generated SFT data; set sft.data to a chat JSONL "
                      'file of {"messages": [...]} rows')


def _task(config):
    from rftune.tasks import task_from_config

    return task_from_config(config)


def sft_data_path(config) -> Path:
    """The SFT data file: ``sft.data`` (relative to the config's folder unless it exists as given), or the
    generated ``<sft output>/traces.jsonl`` for ``data: task``."""
    data = sft_data(config)
    if data == TASK_DATA:
        return sft_output_dir(config) / "traces.jsonl"
    path = Path(data)
    return path if path.is_absolute() or path.exists() else Path(config.base_dir) / path


def sft_conversations(config) -> list[list[dict]]:
    """The config's SFT data: a chat JSONL file, or the task's own (also written to traces.jsonl)."""
    task = _task(config) if config.sft.data in (None, TASK_DATA, config.task.name) else None
    if sft_data(config, task) != TASK_DATA:
        if config.sft.kwargs:
            raise ConfigError(f"sft.kwargs: options of the task's own SFT data, but sft.data is the file "
                              f"{config.sft.data}; drop sft.kwargs or set sft.data: task")
        return load_chat_jsonl(sft_data_path(config))
    conversations = task_conversations(task, config.task.name, config.sft)
    write_text_atomic(sft_data_path(config), "".join(json.dumps({"messages": messages}, ensure_ascii=False) + "\n"
                                                     for messages in conversations))
    return conversations


def task_conversations(task, name: str, cfg) -> list[list[dict]]:
    """The task's SFT conversations: its generated traces (options ``sft.kwargs``) or ``sft.num_examples`` worked
    examples."""
    if task.sft_traces is not None:
        return task.sft_traces(dict(cfg.kwargs), cfg.seed)
    if task.worked_examples is None:
        raise ConfigError(f"sft.data=task: task {name!r} has no SFT data of its own; set sft.data to a chat JSONL "
                          "file")
    if cfg.kwargs:
        raise ConfigError(f"sft.kwargs: task {name!r} takes no SFT options (its worked examples are sized by "
                          f"sft.num_examples); got {sorted(cfg.kwargs)}")
    return task.worked_examples(cfg.num_examples, cfg.seed)


def run_sft(config, progress: bool = True) -> Path:
    """Run the config's SFT stage from the base model with fresh LoRA adapters; returns the adapter folder."""
    from rftune.model.loading import apply_lora, load_model, load_tokenizer

    if not config.lora.enabled:
        raise ConfigError("SFT trains a LoRA adapter: set lora.enabled: true")
    if config.model.adapter:
        raise ConfigError(f"model.adapter ({config.model.adapter}) and sft.enabled are both set: SFT starts from the "
                          "base model; drop one of them")
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)  # before the model is loaded
    cfg = config.sft
    conversations = sft_conversations(config)
    tokenizer = load_tokenizer(config.model.name_or_path)
    torch.manual_seed(cfg.seed)
    model = load_model(config.model.name_or_path, dtype=config.model.dtype)
    model = apply_lora(model, config.lora.r, config.lora.alpha, config.lora.dropout, config.lora.target_modules)
    model.to(device)
    if progress:
        print(f"sft: {len(conversations)} conversations -> {sft_output_dir(config)}; "
              f"{run_summary(device, config.train.bf16, weights=config.model.dtype)}", file=sys.stderr, flush=True)
    return train_sft(model, tokenizer, conversations, sft_output_dir(config), epochs=cfg.epochs,
                     max_steps=cfg.max_steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                     weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, max_length=cfg.max_length,
                     seed=cfg.seed, bf16=bf16_enabled(config.train.bf16, device),
                     cpu_kernels=cpu_kernels_enabled(config.train.cpu_kernels, device), progress=progress)


def with_sft_adapter(config, progress: bool = True):
    """The config for GRPO after its SFT stage: runs SFT unless its finished adapter exists, then points
    ``model.adapter`` at that adapter."""
    adapter = finished_adapter(config)
    if adapter is None:
        adapter = run_sft(config, progress)
    elif progress:
        print(f"sft: reusing the finished adapter {adapter}", file=sys.stderr, flush=True)
    return replace(config, model=replace(config.model, adapter=str(adapter)))
