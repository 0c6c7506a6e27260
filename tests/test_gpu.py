"""The device-agnostic trainer on a CUDA device: the same GRPO step as on the CPU, SFT, generation, checkpoints
that move between devices. These run where a GPU is (`scripts/gpu_check.sh`); the CPU side of the same code is
covered in test_device.py."""

import dataclasses

import pytest
import torch

from rftune import GRPOTrainer, config_from_dict
from rftune.model.loading import load_model_and_tokenizer
from rftune.rollout.generation import SamplingParams, encode_prompts, generate_ids, sample_completions
from rftune.testing import FirstRowsStream
from rftune.types import Sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (no GPU on this machine)")
PROMPTS = [{"prompt": f"Say {word}", "word": word} for word in ["cat", "dog", "owl", "bee"]]


def _config(tiny_model_dir, output_dir, device):
    return config_from_dict({
        "model": {"name_or_path": tiny_model_dir}, "lora": {"r": 4, "alpha": 8},
        "generation": {"num_generations": 4, "max_new_tokens": 8}, "algorithm": {"beta": 0.1},
        "train": {"output_dir": str(output_dir), "max_steps": 1, "batch_size": 8, "device": device,
                  "save_steps": 1, "cpu_kernels": "off"}})


def _lengths(prompt, completion, example):
    return len(completion) / 10


def test_a_grpo_step_on_cuda_equals_the_cpu_step(tiny_model_dir, tmp_path):
    fixed = []

    def same_rollout(model, tokenizer, samples, params):
        if not fixed:
            torch.manual_seed(0)
            fixed.append(sample_completions(model, tokenizer, samples, dataclasses.replace(params, backend="hf")))
        return fixed[0]

    grads, losses = {}, {}
    for device in ("cpu", "cuda"):
        trainer = GRPOTrainer(_config(tiny_model_dir, tmp_path / device, device), reward_funcs=[_lengths],
                              dataset=PROMPTS, rollout_fn=lambda m, t, s, p: _moved(same_rollout(m, t, s, p), m),
                              progress=False)
        assert next(trainer.model.parameters()).device.type == device

        def capture(trainer=trainer, device=device):
            grads[device] = {n: p.grad.float().cpu() for n, p in trainer.model.named_parameters()
                             if p.grad is not None}
            trainer.optimizer.zero_grad(set_to_none=True)
            return 0.0

        trainer._optimizer_step = capture
        losses[device] = trainer.step(FirstRowsStream())["loss"]
    assert losses["cuda"] == pytest.approx(losses["cpu"], abs=1e-5)
    for name, grad in grads["cpu"].items():
        torch.testing.assert_close(grads["cuda"][name], grad, atol=1e-5, rtol=1e-3, msg=name)


def test_training_on_cuda_writes_a_checkpoint_that_resumes_on_the_cpu(tiny_model_dir, tmp_path):
    trainer = GRPOTrainer(_config(tiny_model_dir, tmp_path / "run", "cuda"), reward_funcs=[_lengths],
                          dataset=PROMPTS, progress=False)
    trainer.train()
    on_cpu = _config(tiny_model_dir, tmp_path / "run", "cpu")
    on_cpu = dataclasses.replace(on_cpu, train=dataclasses.replace(on_cpu.train, resume=True, max_steps=2))
    resumed = GRPOTrainer(on_cpu, reward_funcs=[_lengths], dataset=PROMPTS, progress=False)
    assert resumed.step_count == 1 and next(resumed.model.parameters()).device.type == "cpu"
    resumed.train()
    assert resumed.step_count == 2


def test_hf_generation_on_cuda_keeps_tensors_on_the_device(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    model.to("cuda")
    ids, mask = encode_prompts(tokenizer, [[{"role": "user", "content": "hi"}]])
    out = generate_ids(model, tokenizer, ids, mask, SamplingParams(2, 6), 6, [tokenizer.eos_token_id])
    assert out.device.type == "cuda" and out.shape[0] == 2
    batch = sample_completions(model, tokenizer, [Sample(prompt="hi", example={}, index=0)], SamplingParams(2, 6))
    assert batch.completion_mask.device.type == "cuda"


def _moved(batch, model):
    device = next(model.parameters()).device
    tensors = {f.name: getattr(batch, f.name).to(device) for f in dataclasses.fields(batch)
               if isinstance(getattr(batch, f.name), torch.Tensor)}
    return dataclasses.replace(batch, **tensors)
