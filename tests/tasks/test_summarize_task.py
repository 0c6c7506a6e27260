"""The summarisation task: demo data, prompts, and GRPO steps scored by a judge over real HTTP."""

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rftune import GRPOTrainer, config_from_dict
from rftune.errors import DataError
from rftune.serve import load_service, make_server
from rftune.tasks import build_task

ROOT = Path(__file__).resolve().parents[2]


def test_demo_documents_and_prompt():
    task = build_task("summarize", {"max_document_chars": 1000})
    assert len(task.samples) == 12
    sample = task.samples[0]
    assert len(sample.example["document"]) == 1000
    assert sample.prompt[0]["role"] == "system"
    assert sample.example["document"] in sample.prompt[1]["content"]
    copied = task.completion_metrics["copy_fraction"](sample.prompt, sample.example["document"][:400], sample.example)
    assert copied == pytest.approx(1.0)
    assert task.completion_metrics["copy_fraction"](sample.prompt, "a b c d e f", sample.example) == 0.0
    assert [r.name for r in task.default_rewards] == ["quiz", "length_penalty"]


def test_rows_without_document_are_rejected(tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"document": "fine text"}\n{"title": "no body"}\n')
    with pytest.raises(DataError, match=r"docs.jsonl:2: needs a non-empty 'document'"):
        build_task("summarize", {}, path="docs.jsonl", base_dir=str(tmp_path))


@pytest.fixture()
def judge_url(tiny_model_dir):
    server = make_server(load_service(tiny_model_dir, served_name="judge"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_grpo_step_with_an_openai_compatible_judge(tiny_model_dir, judge_url, tmp_path):
    judge = {"backend": "openai", "model": "judge", "base_url": judge_url, "api_key_env": None, "max_tokens": 8,
             "cache_path": str(tmp_path / "cache.sqlite")}
    config = config_from_dict({
        "model": {"name_or_path": tiny_model_dir},
        "generation": {"num_generations": 2, "max_new_tokens": 8},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2},
        "task": {"name": "summarize", "kwargs": {"max_document_chars": 300}},
        "rewards": {"functions": [
            {"name": "quiz", "kwargs": {"judge": judge, "num_questions": 1, "max_rounds": 1}},
            {"name": "length_penalty", "kwargs": {"target": 4}}]},
    })
    (metrics,) = GRPOTrainer(config, progress=False).train()
    assert metrics["judge/calls"] >= 1  # the quiz was requested over HTTP from the served model
    assert 0.0 <= metrics["task/copy_fraction"] <= 1.0
    # A random tiny judge writes no valid quiz: the quiz reward is "not applicable", never a silent zero.
    assert math.isnan(metrics["rewards/quiz/mean"])
    assert metrics["rewards/length_penalty/mean"] < 0


@pytest.mark.slow
def test_summarize_config_runs_with_the_default_model_as_policy_and_judge(tmp_path):
    out = tmp_path / "run"
    rewards = [{"name": "quiz", "kwargs": {"num_questions": 1, "max_rounds": 1, "judge": {
                   "backend": "local", "max_tokens": 64, "cache_path": str(tmp_path / "cache.sqlite")}}},
               {"name": "length_penalty", "kwargs": {"target": 60}}]
    result = subprocess.run(
        [sys.executable, "-m", "rftune.cli", "train", "configs/summarize.yaml", "train.max_steps=2",
         "generation.max_new_tokens=24", "task.kwargs.max_document_chars=600", f"train.output_dir={out}",
         f"rewards.functions={json.dumps(rewards)}"],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all("task/copy_fraction" in m and "judge/calls" in m for m in metrics)
