"""One GRPO update on a fixed rollout, for several loss settings, in however many processes torchrun starts.

    torchrun --nproc-per-node N tests/dist/fixed_update.py TINY_MODEL_DIR OUT.pt

Every rank builds the same model (same seed) and the same global rollout (the same seeded sampling of every
prompt); each rank then trains on its own groups. Rank 0 saves, per setting, the summed gradients the optimizer
saw, the trained weights after the step (gathered whole for the FSDP settings) and the loss, for
test_distributed.py to compare across world sizes. The ``fsdp-*`` settings fully fine-tune with ``train.fsdp``:
sharded over 2 ranks, unsharded in 1 process.
"""

import dataclasses
import sys

import torch

from rftune import GRPOTrainer, config_from_dict
from rftune.tasks.data import PromptStream, RankShard
from rftune.rollout.generation import SamplingParams, sample_completions
from rftune.runtime.sharding import full_tensor
from rftune.types import Sample

SETTINGS = [  # (name, algorithm overrides, gradient accumulation)
    ("grpo", {"loss_type": "grpo"}, 1),
    ("grpo-batch", {"loss_type": "grpo", "scale_rewards": "batch"}, 1),
    ("dapo", {"loss_type": "dapo"}, 2),
    ("dapo-batch", {"loss_type": "dapo", "scale_rewards": "batch"}, 1),
    ("dr_grpo", {"loss_type": "dr_grpo", "scale_rewards": "none"}, 2),
    ("bnpo", {"loss_type": "bnpo"}, 1),
    ("fsdp-grpo", {"loss_type": "grpo"}, 1),
    ("fsdp-dapo", {"loss_type": "dapo", "scale_rewards": "batch"}, 2),
]
FULL = {"lora": {"enabled": False}, "generation": {"backend": "hf"}, "train": {"fsdp": True, "max_grad_norm": 0.05}}
PROMPTS = [{"prompt": f"Say {word}", "word": word} for word in ["cat", "dog", "owl", "bee"]]


def length_reward(prompt, completion, example):
    return len(completion) / 10 + (example["word"][0] in completion)


def main(model_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    results = {}
    for name, algorithm, accum in SETTINGS:
        full = FULL if name.startswith("fsdp") else {"lora": {}, "generation": {}, "train": {}}
        config = config_from_dict({
            "model": {"name_or_path": model_dir}, "lora": {"r": 4, "alpha": 8, **full["lora"]},
            "generation": {"num_generations": 4, "max_new_tokens": 8, **full["generation"]},
            "algorithm": {"beta": 0.1, **algorithm},
            "train": {"output_dir": f"{out}.runs/{name}", "max_steps": 1, "batch_size": 16, "device": "cpu",
                      "gradient_accumulation_steps": accum, "learning_rate": 1e-2, "save_steps": 0,
                      "log_completions": False, **full["train"]}})
        fixed = {}

        def rollout(model, tokenizer, samples, params: SamplingParams):
            if not fixed:  # the whole batch, sampled the same way on every rank
                torch.manual_seed(0)
                every = [Sample(prompt=s.prompt, example=s.example, index=s.index) for s in trainer.task.samples]
                batch = sample_completions(model, tokenizer, every, dataclasses.replace(params, seeds=None))
                fixed.update({s.index: batch.select(list(range(i * 4, i * 4 + 4))) for i, s in enumerate(every)})
            from rftune.types import concat_batches

            return concat_batches([fixed[s.index] for s in samples], tokenizer.pad_token_id)

        trainer = GRPOTrainer(config, reward_funcs=[length_reward], dataset=PROMPTS, rollout_fn=rollout,
                              progress=False)
        seen = {}
        step = trainer.optimizer.step

        def recording_step(*args, **kwargs):
            seen.update({n: full_tensor(p.grad).clone() for n, p in trainer.model.named_parameters()
                         if p.grad is not None})
            return step(*args, **kwargs)

        trainer.optimizer.step = recording_step
        stream = RankShard(PromptStream(len(PROMPTS), 0), trainer.world.rank, trainer.world.size)
        metrics = trainer.step(stream)
        weights = {n: full_tensor(p.detach()).clone() for n, p in trainer.model.named_parameters()
                   if p.requires_grad}
        results[name] = {"grads": seen, "weights": weights, "loss": metrics["loss"], "position": stream.position}
    if trainer.world.is_main:
        torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
