"""Data-parallel GRPO under real torchrun processes (gloo, 1 thread each): the same update as one process, a CLI run
whose files look like a one-process run's, and a run directory that belongs to one run at a time."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rftune import GRPOTrainer, config_from_dict
from rftune.errors import ConfigError
from rftune.runtime.distributed import combine_metrics
from rftune.runtime.run_lock import RunLock

ROOT = Path(__file__).resolve().parents[2]
def env() -> dict[str, str]:  # read at call time: the test's own model repository (conftest) is in os.environ
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def torchrun(nproc: int, *args, timeout=600, cwd=ROOT):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env(), timeout=timeout)


@pytest.fixture(scope="module")
def updates(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("updates")
    found = {}
    for nproc in (1, 2):
        result = torchrun(nproc, str(ROOT / "tests" / "dist" / "fixed_update.py"), tiny_model_dir,
                          str(out / f"world{nproc}.pt"))
        assert result.returncode == 0, result.stderr[-4000:]
        found[nproc] = torch.load(out / f"world{nproc}.pt")
    return found


@pytest.mark.parametrize("setting", ["grpo", "grpo-batch", "dapo", "dapo-batch", "dr_grpo", "bnpo", "fsdp-grpo",
                                     "fsdp-dapo"])
def test_two_ranks_make_the_one_process_update(updates, setting):
    one, two = updates[1][setting], updates[2][setting]
    assert one["grads"].keys() == two["grads"].keys() and one["grads"]
    assert any(g.abs().max() > 1e-4 for g in one["grads"].values())  # a real gradient, not zeros
    for name, grad in one["grads"].items():  # the summed gradients are the one-process gradients
        torch.testing.assert_close(two["grads"][name], grad, atol=1e-7, rtol=1e-5, msg=name)
    # Full fine-tuning moves every weight by AdamW's first step, lr * g / (|g| + eps): where |g| is near eps
    # (1e-8), a gradient rounding difference of 1e-11 moves the weight by up to lr * 1e-3 = 1e-5.
    atol = 1e-5 if setting.startswith("fsdp") else 1e-6
    for name, weight in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], weight, atol=atol, rtol=0, msg=name)
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-6)
    assert one["position"] == two["position"] == 4  # the same global data position


def _write_config(tmp_path, tiny_model_dir) -> Path:
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"prompt": f"say {w}"}) + "\n"
                                                 for w in ("hi", "ho", "ha", "he", "hu", "hy")))
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {{name_or_path: {tiny_model_dir}}}\n"
                    "task: {name: dataset, path: data.jsonl}\n"
                    "rewards: {functions: [{name: format_regex}]}\n"
                    "generation: {num_generations: 2, max_new_tokens: 6}\n"
                    "lora: {r: 4, alpha: 8}\n"
                    "train: {batch_size: 4, max_steps: 3, save_steps: 1, threads: 1, device: cpu}\n")
    return path


def test_a_two_process_cli_run_leaves_the_files_of_one_run(tmp_path, tiny_model_dir):
    config, out = _write_config(tmp_path, tiny_model_dir), tmp_path / "run"
    result = torchrun(2, "-m", "rftune", "train", str(config), f"train.output_dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert len((out / "completions.jsonl").read_text().splitlines()) == 3 * 4  # both ranks' rows, each step
    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    assert result.stderr.count("step 3/3 | reward") == 1  # one progress line per step: rank 0's
    assert result.stdout.count("done: 3 steps") == 1 and result.stdout.count("registered ") == 1  # one version
    # Each group is seeded by its place in the prompt stream: one process samples the same completions.
    alone = subprocess.run([sys.executable, "-m", "rftune", "train", str(config), f"train.output_dir={out}-1",
                            "repository.register=false"], capture_output=True, text=True, cwd=tmp_path, env=env(),
                           timeout=600)
    assert alone.returncode == 0, alone.stderr[-4000:]
    rows = {name: [(r["step"], r["prompt"][-1]["content"], r["completion"]) for r in map(
        json.loads, (tmp_path / name / "completions.jsonl").read_text().splitlines())] for name in ("run", "run-1")}
    assert rows["run"] == rows["run-1"] and len(set(rows["run"])) > 6
    # The checkpoint resumes in one process, which says that sampling will differ.
    resumed = subprocess.run([sys.executable, "-m", "rftune", "train", str(config), f"train.output_dir={out}",
                              "train.max_steps=4", "--resume"], capture_output=True, text=True, cwd=tmp_path,
                             env=env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "made by 2 process(es) and this run has 1" in resumed.stdout
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_a_sharded_full_fine_tuning_run_checkpoints_full_weights_and_resumes_sharded(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    config, out = _write_config(tmp_path, tiny_model_dir), tmp_path / "run"
    sharded = ["lora.enabled=false", "train.fsdp=true", "train.max_steps=2", "algorithm.beta=0.1",
               "rewards.functions=[{name: length_penalty, kwargs: {target: 1}}]"]  # rewards that differ
    result = torchrun(2, "-m", "rftune", "train", str(config), f"train.output_dir={out}", *sharded, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "train.fsdp: weights, gradients and optimizer state sharded over 2 processes" in result.stdout
    assert "generation: hf" in result.stdout  # the one backend that generates from a sharded model
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    final = load_file(out / "final" / "model.safetensors")  # whole weights, named as in the unsharded model
    assert set(base) - set(final) <= {"lm_head.weight"} and set(final) <= set(base)
    assert final["model.layers.0.mlp.up_proj.weight"].shape == base["model.layers.0.mlp.up_proj.weight"].shape
    assert not torch.equal(final["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
    # A sharded checkpoint resumes sharded, and only so.
    unsharded = subprocess.run([sys.executable, "-m", "rftune", "train", str(config), f"train.output_dir={out}",
                                "lora.enabled=false", "train.max_steps=3", "--resume"], capture_output=True,
                               text=True, cwd=tmp_path, env=env(), timeout=600)
    assert unsharded.returncode == 2
    assert "step-000002 was saved with sharding (train.fsdp under torchrun); resume it with sharding too" in \
        unsharded.stderr
    resumed = torchrun(2, "-m", "rftune", "train", str(config), f"train.output_dir={out}", *sharded,
                       "train.max_steps=3", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_sharding_a_lora_adapter_is_a_config_error(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match=r"train.fsdp shards full fine-tuning: set lora.enabled: false"):
        config_from_dict({"model": {"name_or_path": tiny_model_dir}, "train": {"fsdp": True}})


def test_prompts_that_do_not_split_over_the_processes_are_a_config_error(tmp_path, tiny_model_dir):
    config, out = _write_config(tmp_path, tiny_model_dir), tmp_path / "run"
    result = torchrun(2, "-m", "rftune", "train", str(config), "train.batch_size=6", f"train.output_dir={out}",
                      cwd=tmp_path)
    assert result.returncode != 0
    assert ("error: 3 prompts per step (train.batch_size=6 / generation.num_generations=2) cannot be split into "
            "whole groups over 2 processes") in result.stderr


PROMPTS = [{"prompt": "Say hi"}, {"prompt": "Say ho"}]


def _trainer(tiny_model_dir, out):
    config = config_from_dict({"model": {"name_or_path": tiny_model_dir}, "lora": {"r": 4, "alpha": 8},
                               "generation": {"num_generations": 2, "max_new_tokens": 4},
                               "train": {"output_dir": str(out), "batch_size": 4, "max_steps": 1, "device": "cpu"}})
    return GRPOTrainer(config, reward_funcs=[lambda p, c, e: len(c)], dataset=PROMPTS, progress=False)


def test_a_second_run_on_a_busy_folder_stops_with_the_holder(tmp_path, tiny_model_dir):
    holder = RunLock(tmp_path / "run")
    with pytest.raises(ConfigError, match=rf"train.output_dir {tmp_path / 'run'} is in use by another run "
                                          rf"\(pid {os.getpid()} on .*, started .*\)"):
        _trainer(tiny_model_dir, tmp_path / "run")
    holder.release()
    trainer = _trainer(tiny_model_dir, tmp_path / "run")  # free again
    trainer.train()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, tiny_model_dir):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "started": 0}))
    lock = RunLock(tmp_path / "run")  # no process holds it any more
    assert lock.stale_holder == {"pid": 999999, "host": "gone", "started": 0}
    lock.release()


def test_metrics_combine_across_ranks():
    ranks = [{"reward/mean": 0.2, "completion_len/min": 3, "completion_len/max": 9, "time/step": 2.0, "loss": 0.25,
              "judge/calls": 4, "step": 7},
             {"reward/mean": 0.6, "completion_len/min": 1, "completion_len/max": 5, "time/step": 3.0, "loss": -0.5,
              "judge/calls": 6, "step": 7, "rewards/f/errors": 2}]
    assert combine_metrics(ranks) == {"reward/mean": pytest.approx(0.4), "completion_len/min": 1,
                                      "completion_len/max": 9, "time/step": 3.0, "loss": -0.25, "judge/calls": 10,
                                      "step": 7, "rewards/f/errors": 2}


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "final" / "adapter_model.safetensors")


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_resume_ends_where_an_uninterrupted_run_does(tmp_path, tiny_model_dir):
    import time

    import psutil

    config = _write_config(tmp_path, tiny_model_dir)
    steps = ["train.max_steps=30", "generation.max_new_tokens=24", "train.save_total_limit=1"]
    straight = torchrun(2, "-m", "rftune", "train", str(config), f"train.output_dir={tmp_path / 'straight'}", *steps,
                        cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "rftune",
               "train", str(config), f"train.output_dir={out}", "train.dist_timeout=60", *steps]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                           env=env())
    deadline = time.monotonic() + 300
    while not ((out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3):
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before it could be killed"
        time.sleep(0.05)
    rank1 = [p for p in psutil.Process(job.pid).children(recursive=True) if p.environ().get("RANK") == "1"]
    assert len(rank1) == 1
    rank1[0].kill()  # SIGKILL
    started = time.monotonic()
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0 and time.monotonic() - started < 90
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in rank1)
    done = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert done[-1] < 30, "the job was killed too late to test anything"
    resumed = torchrun(2, "-m", "rftune", "train", str(config), f"train.output_dir={out}", *steps, "--resume",
                       cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = json.loads((out / "checkpoints" / "step-000030" / "trainer_state.json").read_text())
    expected = json.loads((tmp_path / "straight" / "checkpoints" / "step-000030" / "trainer_state.json").read_text())
    assert state["step"] == expected["step"] == 30 and state["stream_position"] == expected["stream_position"]
    ours, theirs = _final_weights(out), _final_weights(tmp_path / "straight")
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=0, msg=name)
