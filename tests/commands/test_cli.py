"""The command line as a user types it: clear errors with exit status 2, and (slow) a real run on the default model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def rftune(*args, cwd=ROOT, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "rftune.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=None if env is None else {**os.environ, **env})


@pytest.mark.parametrize("args, message", [
    (["train", "configs/arithmetic.yaml", "train.max_step=3"], "did you mean 'train.max_steps'"),
    (["train", "configs/arithmetic.yaml", "train.batch_size=30"], "not a multiple of generation.num_generations=8"),
    (["train", "configs/missing.yaml"], "config file not found"),
    (["train", "configs/arithmetic.yaml", "rewards.functions=[{name: exact_answr}]"], "Did you mean 'exact_answer'"),
])
def test_user_mistakes_exit_2_without_traceback(args, message):
    result = rftune(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_dataset_row_names_file_and_line(tmp_path, tiny_model_dir):
    (tmp_path / "data.jsonl").write_text('{"prompt": "fine"}\n{"promt": "typo"}\n')
    (tmp_path / "c.yaml").write_text(f"model: {{name_or_path: {tiny_model_dir}}}\n"
                                     "task: {name: dataset, path: data.jsonl}\n"
                                     "rewards: {functions: [{name: format_regex}]}\n")
    result = rftune("train", str(tmp_path / "c.yaml"), f"train.output_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "data.jsonl:2: missing 'prompt' (columns: promt)" in result.stderr
    assert "Traceback" not in result.stderr


def _tiny_config(tmp_path, tiny_model_dir) -> Path:
    (tmp_path / "data.jsonl").write_text('{"prompt": "say hi"}\n{"prompt": "say ho"}\n')
    (tmp_path / "c.yaml").write_text(f"model: {{name_or_path: {tiny_model_dir}}}\n"
                                     "task: {name: dataset, path: data.jsonl}\n"
                                     "rewards: {functions: [{name: format_regex}]}\n"
                                     "generation: {num_generations: 2, max_new_tokens: 4}\n"
                                     "train: {batch_size: 4, max_steps: 1, threads: 1}\n")
    return tmp_path / "c.yaml"


def test_bf16_true_trains_on_a_cpu_without_native_bf16(tmp_path, tiny_model_dir):
    # As on an AVX2-only CPU: no oneDNN bf16 weights, no native bf16. The run takes the plain bf16 path and says so.
    result = rftune("train", str(_tiny_config(tmp_path, tiny_model_dir)), "train.bf16=true",
                    f"train.output_dir={tmp_path / 'run'}", cwd=tmp_path, env={"RFTUNE_CPU_FEATURES_OFF": "avx512"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no native bf16); weights float32; bf16 on (train.bf16=true on a CPU without native bf16: emulated" \
        in result.stdout
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()


def test_a_bad_cpu_feature_override_is_a_one_line_error(tmp_path, tiny_model_dir):
    result = rftune("train", str(_tiny_config(tmp_path, tiny_model_dir)), f"train.output_dir={tmp_path / 'run'}",
                    cwd=tmp_path, env={"RFTUNE_CPU_FEATURES_OFF": "avx9000"})
    assert result.returncode == 2
    assert "error: RFTUNE_CPU_FEATURES_OFF='avx9000': unknown feature(s) avx9000" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_fails_before_any_model_is_loaded():
    result = rftune("train", "configs/arithmetic.yaml", "train.device=cuda", "model.name_or_path=/no/such/model")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: train.device=cuda but this machine has no usable GPU (a CPU-only build of torch); "
        "use train.device=cpu or auto"]


@pytest.mark.slow
def test_two_steps_on_the_default_model(tmp_path):
    out = tmp_path / "run"
    result = rftune("train", "configs/arithmetic.yaml", "train.device=cpu", "train.max_steps=2",
                    "generation.num_generations=4", "sft.num_examples=8", "sft.batch_size=4", "sft.epochs=1",
                    "train.batch_size=8", "generation.max_new_tokens=32", f"train.output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sft: 8 conversations" in result.stderr and "sft step 2/2" in result.stderr  # the warm start first
    assert "step 2/2 | reward" in result.stderr
    assert "device: cpu, " in result.stdout and "; generation: cpu-fast" in result.stdout
    in_force = "lora_fused, matmul_attention, rms_norm, decoder, prepacked"  # every part fits SmolLM2 (fp32 here)
    assert f"; cpu kernels: {in_force}" in result.stdout or f"cpu kernels: bf16_weights, {in_force}" in result.stdout
    assert "sft: cpu kernels: " in result.stderr and "not in force" not in result.stderr
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["completion_len/max"] <= 32 for m in metrics)
    assert len((out / "completions.jsonl").read_text().splitlines()) == 16
    assert (out / "final" / "adapter_config.json").is_file()
    assert (out / "config.yaml").is_file()
