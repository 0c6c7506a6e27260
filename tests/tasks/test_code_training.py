"""GRPO on the code task: the trainer sets up the sandbox from the config and logs its per-step counters."""

import math
from pathlib import Path

from rftune import GRPOTrainer, config_from_dict, sandbox
from rftune.cli import main
from rftune.rollout.generation import sample_completions

ROOT = Path(__file__).resolve().parents[2]


def test_code_task_step_logs_sandbox_outcomes(tiny_model_dir, tmp_path):
    config = config_from_dict({
        "model": {"name_or_path": tiny_model_dir},
        "lora": {"r": 4, "alpha": 8},
        "generation": {"num_generations": 4, "max_new_tokens": 12},
        "algorithm": {"beta": 0.0},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 8, "save_steps": 0},
        "task": {"name": "code", "kwargs": {"size": 4}},
        "rewards": {"functions": [{"name": "code_tests"}, {"name": "code_passes"}]},
        "sandbox": {"workers": 2, "timeout_s": 5.0, "cpu_s": 2},
    })
    trainer = GRPOTrainer(config, progress=False)
    assert trainer.resources.sandbox.limits == sandbox.Limits(timeout_s=5.0, cpu_s=2)
    (metrics,) = trainer.train()
    runs = metrics["sandbox/runs"]
    assert runs + metrics["sandbox/cache_hits"] == 16  # 8 completions x 2 rewards; repeats are not run again
    assert sum(metrics[f"sandbox/{status}"] for status in sandbox.STATUSES) == runs
    assert 1 <= runs <= 8
    assert metrics["rewards/code_tests/mean"] >= metrics["rewards/code_passes/mean"] >= 0.0


def test_train_refuses_when_isolation_is_required_but_missing(monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "_isolation", sandbox.Isolation(False, "no namespaces in this test"))
    code = main(["train", str(ROOT / "configs" / "code.yaml"), "sandbox.require_isolation=true"])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("error: sandbox.require_isolation is true but this machine cannot "
                                               "isolate programs: no namespaces in this test")


HOSTILE = {
    "crashed": "import os, signal\nos.kill(os.getpid(), signal.SIGRTMIN + 4)\n",  # a signal Python cannot name
    "memory": "import os\nfds = [os.memfd_create('hoard') for _ in range(40)]\nfor fd in fds:\n"
              "    for _ in range(15):\n        os.write(fd, b'x' * 1024 * 1024)\n",  # 600 MB of shared memory
}


def test_hostile_completions_score_zero_and_training_goes_on(tiny_model_dir, tmp_path, monkeypatch):
    """A batch whose completions include hostile programs trains on (``rewards.on_error: raise``): those programs
    score 0 and their statuses are counted in ``sandbox/*``."""
    config = config_from_dict({
        "model": {"name_or_path": tiny_model_dir},
        "lora": {"r": 4, "alpha": 8},
        "generation": {"num_generations": 4, "max_new_tokens": 8},
        "algorithm": {"beta": 0.0},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 8, "save_steps": 0},
        "task": {"name": "code", "kwargs": {"size": 2}},
        "rewards": {"functions": [{"name": "code_tests"}], "on_error": "raise"},
        "sandbox": {"workers": 2, "timeout_s": 5.0, "cpu_s": 2, "memory_mb": 128},
    })

    def with_hostile_rows(model, tokenizer, samples, params):
        batch = sample_completions(model, tokenizer, samples, params)
        batch.completions[:len(HOSTILE)] = [f"```python\n{code}```" for code in HOSTILE.values()]
        return batch

    seen = {}
    run_many = sandbox.Sandbox.run_many

    def spy(self, jobs):
        results = run_many(self, jobs)
        seen.update({code: result for (code, _), result in zip(jobs, results)})
        return results

    monkeypatch.setattr(sandbox.Sandbox, "run_many", spy)
    trainer = GRPOTrainer(config, rollout_fn=with_hostile_rows, progress=False)
    (metrics,) = trainer.train()
    cgroup = sandbox.detect_isolation().memory_cgroup  # without one, the filter refuses memfd_create at load
    expected = {"crashed": "crashed", "memory": "memory" if cgroup else "error"}
    for name, code in HOSTILE.items():
        result = next(r for source, r in seen.items() if source.strip().endswith(code.strip()))
        assert (result.status, result.fraction) == (expected[name], 0.0)
        assert metrics[f"sandbox/{expected[name]}"] >= 1
    assert sum(metrics[f"sandbox/{status}"] for status in sandbox.STATUSES) == metrics["sandbox/runs"]
    assert math.isfinite(metrics["loss"])
