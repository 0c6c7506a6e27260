"""One device per run (rftune.runtime.device), the generation backends behind one interface, and the CPU speed layer
as a switch: the layer on and off give the same GRPO step."""

import dataclasses

import pytest
import torch

from rftune import GRPOTrainer, config_from_dict
from rftune.config import load_config
from rftune.errors import ConfigError
from rftune.model.loading import load_model_and_tokenizer
from rftune.rollout.generation import in_process_backend, resolve_backend
from rftune.runtime.device import autocast, bf16_enabled, cpu_kernels_enabled, resolve_device
from rftune.testing import FirstRowsStream
from rftune.train.checkpoint import restore_rng_states, rng_states
from rftune.types import RolloutBatch

PROMPTS = [{"prompt": f"Say {word}", "word": word} for word in ["cat", "dog", "owl", "bee"]]
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without CUDA")


def test_cpu_and_auto_resolve_to_the_cpu_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@needs_no_gpu
@pytest.mark.parametrize("setting", ["cuda", "cuda:1"])
def test_asking_for_a_gpu_that_is_not_there_is_a_clear_error(setting):
    with pytest.raises(ConfigError, match=rf"train.device={setting} but this machine has no usable GPU \(.*\); "
                                          r"use train.device=cpu or auto"):
        resolve_device(setting)


def test_a_malformed_device_is_rejected_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"train.device: 'gpu0' is not a device; use auto, cpu, cuda or cuda:N"):
        load_config(None, ["train.device=gpu0"])


def test_the_cpu_layer_is_never_switched_on_for_a_gpu():
    assert cpu_kernels_enabled("auto", torch.device("cpu"))
    assert not cpu_kernels_enabled("off", torch.device("cpu"))
    assert not cpu_kernels_enabled("auto", torch.device("cuda", 0))


def test_bf16_settings_and_autocast_follow_the_device():
    assert bf16_enabled(True, "cuda") and not bf16_enabled(False, "cpu")
    assert isinstance(autocast(torch.device("cpu"), False), type(autocast(torch.device("cpu"), False)))
    with autocast(torch.device("cpu"), True):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


def test_backends_resolve_or_say_why_not(tiny_model_dir):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    assert resolve_backend("auto", model) == "cpu-fast"
    assert resolve_backend("auto", model, cpu_kernels=False) == "hf"
    assert resolve_backend("hf", model) == "hf"
    with pytest.raises(ConfigError, match="generation.backend=vllm needs the model on a CUDA GPU"):
        resolve_backend("vllm", model)
    with pytest.raises(ConfigError, match="must be one of auto, cpu-fast, hf, vllm, got 'tgi'"):
        resolve_backend("tgi", model)
    model.config.model_type = "gpt2-like"
    assert resolve_backend("auto", model) == "hf"
    with pytest.raises(ConfigError, match=r"cpu-fast does not serve this model \(model_type 'gpt2-like'; it serves "
                                          r"llama, mistral, qwen2"):
        resolve_backend("cpu-fast", model)
    assert in_process_backend("vllm", True) == "auto" and in_process_backend("auto", False) == "hf"


def test_rng_states_made_on_a_gpu_resume_on_a_cpu():
    states = rng_states()
    assert ("cuda" in states) == (torch.cuda.is_available() and torch.cuda.is_initialized())
    expected = torch.rand(3)
    restore_rng_states({**states, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 9})  # 9 GPUs elsewhere: ignored
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------ the CPU layer on and off
def _config(tiny_model_dir, tmp_path, kernels: str):
    return config_from_dict({
        "model": {"name_or_path": tiny_model_dir}, "lora": {"r": 4, "alpha": 8},
        "generation": {"num_generations": 4, "max_new_tokens": 8},
        "algorithm": {"beta": 0.1},
        "train": {"output_dir": str(tmp_path / kernels), "max_steps": 1, "batch_size": 8, "device": "cpu",
                  "gradient_accumulation_steps": 2, "cpu_kernels": kernels, "save_steps": 0}})


def _lengths(prompt, completion, example):
    return len(completion) / 10


def test_one_grpo_step_is_the_same_with_the_cpu_layer_on_and_off(tiny_model_dir, tmp_path):
    fixed: list[RolloutBatch] = []

    def same_rollout(model, tokenizer, samples, params):  # the layer's sampler draws its own tokens: fix them
        if not fixed:
            from rftune.rollout.generation import sample_completions

            torch.manual_seed(0)
            fixed.append(sample_completions(model, tokenizer, samples, dataclasses.replace(params, backend="hf")))
        return fixed[0]

    results = {}
    for kernels in ("auto", "off"):
        trainer = GRPOTrainer(_config(tiny_model_dir, tmp_path, kernels), reward_funcs=[_lengths], dataset=PROMPTS,
                              rollout_fn=same_rollout, progress=False)
        inner = trainer.model.get_base_model()
        assert (inner.config._attn_implementation == "rftune_matmul") == (kernels == "auto")
        grads = {}

        def capture(trainer=trainer, grads=grads):
            grads.update({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
            trainer.optimizer.zero_grad(set_to_none=True)
            return 0.0

        trainer._optimizer_step = capture
        metrics = trainer.step(FirstRowsStream())
        results[kernels] = (metrics, grads)
    (on, grads_on), (off, grads_off) = results["auto"], results["off"]
    assert grads_on and grads_on.keys() == grads_off.keys() and all("lora_" in n for n in grads_on)
    assert any(g.abs().max() > 0 for g in grads_on.values())
    for name in grads_on:
        torch.testing.assert_close(grads_on[name], grads_off[name], atol=1e-6, rtol=1e-5, msg=name)
    for key in ("loss", "kl", "entropy"):
        assert on[key] == pytest.approx(off[key], abs=1e-6), key
    assert on["time/update"] >= 0 and on["time/reference"] >= 0
