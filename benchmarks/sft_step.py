"""SFT step time: rftune's `sft_loss` against the model's own forward with labels (the loss TRL's SFTTrainer
computes: every position projected to the vocabulary, one float32 cross-entropy), on the same batches.

    .venv/bin/python benchmarks/sft_step.py configs/word_problems.yaml --batches 8

The batches are the config's SFT conversations (``sft.data``, e.g. a task's worked examples), encoded with
``sft.max_length`` and cut into ``sft.batch_size`` rows in order, on a LoRA model of the config (``lora.*``), with
bf16 autocast where ``train.bf16`` resolves to it and rftune's CPU kernels on for both paths. Each batch runs
forward + backward once to warm up, then ``--repeats`` times per path; the median seconds are printed per batch,
with the batch's width and labelled tokens, and the total ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rftune.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    config = load_config(args.config)
    from rftune.runtime.device import autocast, bf16_enabled, resolve_device
    from rftune.train.sft import IGNORE, sft_loss

    device = resolve_device(config.train.device)
    bf16 = bf16_enabled(config.train.bf16, device)
    batches, model = _setup(config, args.batches, device, bf16)
    paths = {"rftune": sft_loss, "model-forward": _model_forward_loss}
    totals = dict.fromkeys(paths, 0.0)
    print(f"{'width':>5} {'labelled':>8} " + " ".join(f"{name:>14}" for name in paths))
    for batch in batches:
        seconds = {name: _time(model, loss, batch, device, bf16, args.repeats, autocast)
                   for name, loss in paths.items()}
        for name, value in seconds.items():
            totals[name] += value
        labelled = int((batch["labels"] != IGNORE).sum())
        print(f"{batch['input_ids'].shape[1]:>5} {labelled:>8} " + " ".join(f"{seconds[n]:>12.2f} s" for n in paths))
    print(f"total: rftune {totals['rftune']:.1f} s, model forward {totals['model-forward']:.1f} s, "
          f"{totals['model-forward'] / totals['rftune']:.2f}x")


def _setup(config, count: int, device: torch.device, bf16: bool):
    from rftune.cpu import enable_training_kernels
    from rftune.model.loading import apply_lora, load_model, load_tokenizer
    from rftune.train.sft import collate, encode_conversation, sft_conversations

    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    cfg = config.sft
    conversations = sft_conversations(config)[:count * cfg.batch_size]
    tokenizer = load_tokenizer(config.model.name_or_path)
    encoded = [encode_conversation(tokenizer, c, cfg.max_length) for c in conversations]
    batches = [collate(encoded[i:i + cfg.batch_size], tokenizer.pad_token_id)
               for i in range(0, len(encoded), cfg.batch_size)]
    torch.manual_seed(0)
    model = apply_lora(load_model(config.model.name_or_path), config.lora.r, config.lora.alpha, 0.0,
                       config.lora.target_modules)
    model.to(device).train()
    if device.type == "cpu":
        enable_training_kernels(model, bf16)
    return [{k: v.to(device) for k, v in b.items()} for b in batches], model


def _model_forward_loss(model, batch):
    return model(**batch).loss


def _time(model, loss_fn, batch, device, bf16, repeats: int, autocast) -> float:
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with autocast(device, bf16):
            loss = loss_fn(model, batch)
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


if __name__ == "__main__":
    main()
