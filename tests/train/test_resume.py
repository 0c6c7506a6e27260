"""Kill a training process with SIGKILL, resume it, and compare with an uninterrupted run.

The resumed run must end at the same step and data position, with every step recorded exactly once and the same
final adapter weights as the run that was never interrupted.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rftune.runtime.tracking import read_jsonl

REWARD = '''
def vowels(prompt, completion, example):
    return sum(c in "aeiou" for c in completion) / max(len(completion), 1)
'''


def write_setup(tmp_path: Path, model_dir: str, output_dir: Path) -> Path:
    (tmp_path / "reward.py").write_text(REWARD)
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Name a {w}"}) + "\n"
                                                    for w in ["cat", "dog", "owl", "bee", "ant", "elk", "fox"]))
    config = tmp_path / f"{output_dir.name}.yaml"
    config.write_text(f"""
model: {{name_or_path: {model_dir}}}
lora: {{r: 4, alpha: 8}}
generation: {{num_generations: 2, max_new_tokens: 8}}
train: {{output_dir: {output_dir}, max_steps: 8, batch_size: 4, learning_rate: 0.01, save_steps: 1, threads: 1}}
task: {{name: dataset, path: prompts.jsonl}}
rewards:
  functions: [{{name: "reward.py:vowels"}}]
""")
    return config


def rftune(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "rftune.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def state(output_dir: Path) -> dict:
    final = sorted((output_dir / "checkpoints").glob("step-*"))[-1]
    return json.loads((final / "trainer_state.json").read_text())


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight = rftune("train", str(write_setup(tmp_path, tiny_model_dir, straight_dir)))
    killed = rftune("train", str(write_setup(tmp_path, tiny_model_dir, killed_dir)))
    deadline = time.time() + 120
    while not (killed_dir / "checkpoints" / "step-000003").exists():
        assert killed.poll() is None and time.time() < deadline, killed.stdout.read() if killed.poll() else "timeout"
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    steps_before_kill = state(killed_dir)["step"]
    assert steps_before_kill < 8

    resumed = rftune("train", str(tmp_path / "killed.yaml"), "--resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resumed from" in out
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out

    expected = {"step": 8, "stream_position": 16, "world_size": 1, "fsdp": False}
    assert state(killed_dir) == state(straight_dir) == expected
    assert [r["step"] for r in read_jsonl(killed_dir / "metrics.jsonl")] == list(range(1, 9))
    completion_steps = [r["step"] for r in read_jsonl(killed_dir / "completions.jsonl")]
    assert completion_steps == [s for s in range(1, 9) for _ in range(4)]
    a = load_file(killed_dir / "final" / "adapter_model.safetensors")
    b = load_file(straight_dir / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_killed_at_ten_random_moments_and_resumed_each_time(tiny_model_dir, tmp_path):
    # Kills land in generation, scoring, the update and checkpoint writing (save_steps: 1 writes one every step).
    rng = random.Random(1234)
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    steps = "train.max_steps=40"  # long enough for ten kills on a fast machine
    straight = rftune("train", str(write_setup(tmp_path, tiny_model_dir, straight_dir)), steps)
    config = write_setup(tmp_path, tiny_model_dir, killed_dir)
    kills = 0
    while kills < 10:
        run = rftune("train", str(config), steps, "--resume")
        metrics = killed_dir / "metrics.jsonl"
        before = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        deadline = time.time() + 120
        while run.poll() is None and (len(metrics.read_text().splitlines()) if metrics.exists() else 0) <= before:
            assert time.time() < deadline, "no step was made"
            time.sleep(0.02)
        if run.poll() is not None:  # finished before a kill could land: every step is done
            break
        time.sleep(rng.uniform(0.0, 0.4))  # somewhere in the next step
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        kills += 1
    final = rftune("train", str(config), steps, "--resume")
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out
    assert kills >= 3, "the run was too fast to be killed"
    assert state(killed_dir) == state(straight_dir)
    assert [r["step"] for r in read_jsonl(killed_dir / "metrics.jsonl")] == list(range(1, 41))
    a = load_file(killed_dir / "final" / "adapter_model.safetensors")
    b = load_file(straight_dir / "final" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
