"""GRPO on the code task: the trainer sets up the sandbox from the config and logs its per-step counters."""

from pathlib import Path

from rftune import GRPOTrainer, config_from_dict, sandbox
from rftune.cli import main

ROOT = Path(__file__).resolve().parents[1]


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
