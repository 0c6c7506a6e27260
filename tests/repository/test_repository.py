"""The model repository: registration of real runs (SFT -> GRPO lineage), references wherever a model path goes,
concurrency and kills (real subprocesses on a real SQLite index), broken files, export/import, tag and rm."""

import hashlib
import inspect
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rftune.cli import main
from rftune.repository import open_repository
from rftune.repository.store import Repository, manifest_of, tree_hash
from rftune.rewards.builtin import format_regex
from rftune.testing import tiny_lora_model

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}]


def rftune(*args, cwd=None, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "rftune.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A PEFT adapter on the tiny model whose LoRA B matrices are random (so it changes the outputs)."""
    model, tokenizer = tiny_lora_model(tiny_model_dir, seed=3, scale=0.5)
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def variant(adapter_dir, folder: Path, note: str) -> Path:
    """A copy of the adapter folder with one extra file, so its files (and tree) differ from the original's, and
    without PEFT's README.md (which `models import` leaves out: an export writes its own model card)."""
    import shutil

    shutil.copytree(adapter_dir, folder, ignore=shutil.ignore_patterns("README.md"))
    (folder / "notes.txt").write_text(note)
    return folder


def chain_config(tmp_path, tiny_model_dir, **extra) -> Path:
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": CONVERSATION}) + "\n")
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "Hi"}) + "\n")
    (tmp_path / "held-out.jsonl").write_text(json.dumps({"prompt": "Hello"}) + "\n")
    config = {"model": {"name_or_path": tiny_model_dir}, "lora": {"r": 2, "alpha": 4},
              "generation": {"num_generations": 2, "max_new_tokens": 4},
              "train": {"output_dir": str(tmp_path / "runs" / "chain"), "max_steps": 1, "batch_size": 2,
                        "save_steps": 0},
              "task": {"name": "dataset", "path": "prompts.jsonl", "eval_path": "held-out.jsonl"},
              "rewards": {"functions": [{"name": "format_regex", "kwargs": {"pattern": ".*"}}]},
              "sft": {"enabled": True, "data": "chat.jsonl", "max_steps": 2, "batch_size": 1, "learning_rate": 0.05},
              **extra}
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def show(ref, capsys) -> dict:
    capsys.readouterr()
    assert main(["models", "show", ref, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_chained_train_registers_sft_then_grpo_with_everything_recorded(tiny_model_dir, tmp_path, capsys):
    config = chain_config(tmp_path, tiny_model_dir)
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    assert "SFT stage: chain@1" in out and "registered chain@2" in out
    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["version", "stage", "base", "parent", "created", "eval", "status"]
    assert table[1].split()[:4] == ["chain@1", "sft", tiny_model_dir, "-"]
    assert table[2].split()[:4] == ["chain@2", "grpo", tiny_model_dir, "chain@1"]

    grpo, sft = show("chain@latest", capsys), show("chain@1", capsys)
    assert grpo["lineage"] == ["chain@2", "chain@1"] and grpo["stage"] == "grpo" and sft["stage"] == "sft"
    weights = {"model.safetensors": sha256(Path(tiny_model_dir) / "model.safetensors")}
    base_sha = hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()
    assert grpo["base_model"] == sft["base_model"] == {"name": tiny_model_dir, "sha256": base_sha}
    assert sft["data"] == {"source": str(tmp_path / "chat.jsonl"), "rows": 1, "sha256": sha256(tmp_path / "chat.jsonl")}
    samples = json.dumps([{"example": {"prompt": "Hi"}, "prompt": [{"content": "Hi", "role": "user"}]}],
                         sort_keys=True, ensure_ascii=False)  # the task's samples: text prompts become chat turns
    assert grpo["data"]["sha256"] == hashlib.sha256(samples.encode()).hexdigest() and grpo["data"]["rows"] == 1
    assert grpo["rewards"] == [{
        "name": "format_regex", "weight": 1.0, "kwargs": {"pattern": ".*"},
        "function": "rftune.rewards.builtin:format_regex",
        "source_sha256": hashlib.sha256(inspect.getsource(format_regex).encode()).hexdigest()}]
    run = tmp_path / "runs" / "chain"
    assert grpo["metrics"] == json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert sft["metrics"] == json.loads((run / "sft" / "metrics.jsonl").read_text().splitlines()[-1])
    assert grpo["run_dir"] == str(run) and sft["run_dir"] == str(run / "sft")
    assert grpo["config"]["model"]["adapter"] == str(run / "sft" / "adapter")
    assert sft["config"]["model"]["adapter"] is None
    assert grpo["config"]["train"]["max_steps"] == 1
    assert sft["started_at"] <= sft["finished_at"] <= grpo["finished_at"] <= grpo["created_at"]
    assert {rel: e["sha256"] for rel, e in grpo["files"].items()} == {
        rel: e["sha256"] for rel, e in manifest_of(run / "final").items()}

    # `rftune eval` on the run's own adapters attaches each player's results to the version with those files
    assert main(["eval", str(config), "eval.max_new_tokens=2", "--no-base"]) == 0
    out = capsys.readouterr().out
    assert "results of sft attached to chain@1" in out and "results of sft+grpo attached to chain@2" in out
    assert [e["summary"]["player"] for e in show("chain@2", capsys)["evals"]] == ["sft+grpo"]

    # a rerun reuses the finished SFT adapter: no new SFT version, the new GRPO version's parent is still chain@1,
    # and its unchanged files cost no space twice
    blobs = sorted((tmp_path / "repository" / "blobs").rglob("*"))
    assert main(["train", str(config), "--resume"]) == 0
    assert "SFT stage: chain@1" in capsys.readouterr().out
    assert show("chain@3", capsys)["lineage"] == ["chain@3", "chain@1"]
    assert sorted((tmp_path / "repository" / "blobs").rglob("*")) == blobs


def test_references_work_as_adapter_in_config_eval_and_play(tiny_model_dir, adapter_dir, tmp_path, capsys):
    assert main(["models", "import", str(adapter_dir), "--name", "arith"]) == 0
    assert "registered arith@1" in capsys.readouterr().out
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "Hi"}) + "\n")
    (tmp_path / "held-out.jsonl").write_text(json.dumps({"prompt": "Hello"}) + "\n")
    config = {"model": {"name_or_path": tiny_model_dir, "adapter": "arith@latest"},
              "generation": {"num_generations": 2, "max_new_tokens": 3},
              "train": {"output_dir": str(tmp_path / "arith-run"), "max_steps": 1, "batch_size": 2, "save_steps": 0},
              "task": {"name": "dataset", "path": str(tmp_path / "prompts.jsonl"),
                       "eval_path": str(tmp_path / "held-out.jsonl")},
              "rewards": {"functions": [{"name": "format_regex", "kwargs": {"pattern": ".*"}}]},
              "repository": {"name": "arith"}, "eval": {"max_new_tokens": 3}}
    path = tmp_path / "arith.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    assert "registered arith@2" in capsys.readouterr().out
    trained = show("arith@2", capsys)
    assert trained["lineage"] == ["arith@2", "arith@1"]
    assert trained["config"]["model"]["adapter"] == str(open_repository().checkout(open_repository().resolve(
        "arith@1")))

    assert main(["eval", str(path), "--adapter", "arith@2", "--no-base"]) == 0
    out = capsys.readouterr().out
    assert "results of arith@2 attached to arith@2" in out
    report = json.loads((tmp_path / "arith-run" / "eval.json").read_text())
    (evaluation,) = show("arith@2", capsys)["evals"]
    (player,) = report["players"]
    assert evaluation["summary"]["reward"] == player["metrics"]["reward"]["mean"] == 1.0  # format_regex '.*'
    assert evaluation["kind"] == "task" and evaluation["seed"] == 0
    assert main(["models", "list"]) == 0
    assert "reward 1" in capsys.readouterr().out.splitlines()[2]

    assert main(["play", "wordle", "--model", "arith@2", "--secret", "crane", "--max-new-tokens", "2",
                 "--no-color"]) == 0
    assert "the word was CRANE" in capsys.readouterr().out


def test_bad_references_give_one_line_errors_listing_what_exists(adapter_dir, tiny_model_dir, tmp_path, capsys):
    for _ in range(3):
        assert main(["models", "import", str(adapter_dir), "--name", "arith"]) == 0
    assert main(["models", "tag", "arith@2", "best"]) == 0
    capsys.readouterr()
    expected = {
        "nosuch@3": "error: no model named 'nosuch' in the repository {root}; it has: arith (versions 1-3)",
        "arith@99": "error: arith has no version 99; arith has versions 1-3, tags best (@2); or use arith@latest",
        "arith@": "error: 'arith@' names no version; arith has versions 1-3, tags best (@2); or use arith@latest",
        "arith@worst": "error: arith has no tag 'worst'; arith has versions 1-3, tags best (@2); or use arith@latest",
    }
    root = tmp_path / "repository"
    for ref, message in expected.items():
        assert main(["models", "show", ref]) == 2
        assert capsys.readouterr().err == message.format(root=root) + "\n"
        assert main(["play", "wordle", "--model", tiny_model_dir, "--adapter", ref, "--secret", "crane"]) == 2
        assert capsys.readouterr().err == message.format(root=root) + "\n"


def test_two_processes_registering_at_the_same_moment_get_distinct_versions(adapter_dir, tmp_path):
    """Four real processes wait on the index's write lock (held here) with their files stored, then all go."""
    repository = open_repository()
    repository.register("seed", adapter_dir, kind="adapter", info={"base_model": {"name": "x"}})
    folders = [variant(adapter_dir, tmp_path / f"v{i}", f"variant {i}") for i in range(4)]
    blobs = [repository.blob_path(e["sha256"]) for f in folders for e in manifest_of(f).values()]
    lock = sqlite3.connect(repository.index_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    processes = [rftune("models", "import", str(folder), "--name", "race") for folder in folders]
    _wait_for(lambda: all(blob.is_file() for blob in blobs), processes)
    time.sleep(0.5)
    lock.execute("COMMIT")  # released: the four race for the lock now
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, results
    versions = repository.versions("race")
    assert sorted(v.version for v in versions) == [1, 2, 3, 4]
    assert {v.tree for v in versions} == {tree_hash(manifest_of(f)) for f in folders}
    assert sorted(out.strip() for out, _ in results) == [f"registered race@{n}" for n in range(1, 5)]


def test_a_kill_between_files_and_index_row_leaves_a_consistent_repository(adapter_dir, tmp_path, capsys):
    repository = open_repository()
    repository.register("seed", adapter_dir, kind="adapter", info={"base_model": {"name": "x"}})
    folder = variant(adapter_dir, tmp_path / "killed", "killed mid-registration")
    blobs = [repository.blob_path(e["sha256"]) for e in manifest_of(folder).values()]
    lock = sqlite3.connect(repository.index_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the registering process writes its files, then blocks before the row
    process = rftune("models", "import", str(folder), "--name", "killed")
    _wait_for(lambda: all(blob.is_file() for blob in blobs), [process])
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    lock.execute("ROLLBACK")
    lock.close()
    assert process.returncode == -signal.SIGKILL
    with sqlite3.connect(repository.index_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert [v.ref for v in repository.versions()] == ["seed@1"]
    assert main(["models", "list"]) == 0 and "BROKEN" not in capsys.readouterr().out
    assert main(["models", "import", str(folder), "--name", "killed"]) == 0  # the number was not used up
    assert "registered killed@1" in capsys.readouterr().out
    assert repository.missing_files(repository.resolve("killed@1")) == []


def _wait_for(condition, processes, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        if any(p.poll() is not None for p in processes):
            raise AssertionError([p.communicate() for p in processes])
        assert time.monotonic() < deadline, "the registering processes did not store their files in time"
        time.sleep(0.05)


def test_hand_deleted_files_are_reported_as_broken_not_a_crash(adapter_dir, tiny_model_dir, tmp_path, capsys):
    repository = open_repository()
    intact = repository.register("ok", variant(adapter_dir, tmp_path / "a", "a"), kind="adapter",
                                 info={"base_model": {"name": tiny_model_dir}})
    broken = repository.register("gone", variant(adapter_dir, tmp_path / "b", "b"), kind="adapter",
                                 info={"base_model": {"name": tiny_model_dir}})
    repository.checkout(broken)
    blob = repository.blob_path(broken.manifest["notes.txt"]["sha256"])
    blob.chmod(0o644)
    blob.unlink()
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("gone@1") and lines[1].endswith("BROKEN: 1 file(s) missing (notes.txt)")
    assert lines[2].startswith("ok@1") and lines[2].endswith("ok")
    assert main(["models", "show", "gone@1"]) == 0
    assert "status:     BROKEN: 1 file(s) missing (notes.txt)" in capsys.readouterr().out
    assert main(["play", "wordle", "--model", "gone@1", "--secret", "crane"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: gone@1 is broken: its stored files notes.txt are missing") and "\n" not in err[:-1]
    assert repository.missing_files(intact) == []


def test_export_merged_loads_with_plain_transformers_and_matches_the_adapter(adapter_dir, tiny_model_dir, tmp_path,
                                                                             capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert main(["models", "import", str(adapter_dir), "--name", "arith"]) == 0
    assert main(["models", "export", "arith@1", str(tmp_path / "merged"), "--merged"]) == 0
    assert main(["models", "export", "arith@1", str(tmp_path / "adapter")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    prompt = torch.tensor([[1, 40, 41, 42, 2, 1, 50]])
    settings = {"max_new_tokens": 12, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    with torch.no_grad():
        expected = adapted.generate(input_ids=prompt, **settings)
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval().generate(input_ids=prompt, **settings)
        assert torch.equal(merged.generate(input_ids=prompt, **settings), expected)
        assert not torch.equal(plain, expected)  # the adapter changes the greedy output, so the match means something
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "# arith@1" in card and "full-weight model" in card and tiny_model_dir in card
    record = json.loads((tmp_path / "adapter" / "rftune.json").read_text())
    assert record["lineage"] == ["arith@1"] and record["kind"] == "adapter"
    assert main(["models", "export", "arith@1", str(tmp_path / "adapter")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["models", "import", str(tmp_path / "adapter")]) == 0  # the export's record names it arith
    assert "registered arith@2" in capsys.readouterr().out
    assert open_repository().resolve("arith@2").tree == open_repository().resolve("arith@1").tree


def test_rm_is_refused_for_a_parent_unless_forced_and_frees_unshared_files(adapter_dir, tmp_path, capsys):
    repository = open_repository()
    info = {"base_model": {"name": "x"}}
    parent = repository.register("m", variant(adapter_dir, tmp_path / "p", "parent"), kind="adapter", info=info)
    child = repository.register("m", variant(adapter_dir, tmp_path / "c", "child"), kind="adapter",
                                info={**info, "parent_ref": "m@1"}, parent_id=parent.id)
    repository.tag(parent, "best")
    parent_note = repository.blob_path(parent.manifest["notes.txt"]["sha256"])
    shared = repository.blob_path(parent.manifest["adapter_model.safetensors"]["sha256"])
    capsys.readouterr()
    assert main(["models", "rm", "m@1"]) == 2
    assert capsys.readouterr().err == "error: m@1 is the parent of m@2; remove those first or pass --force\n"
    assert main(["models", "rm", "m@best", "--force"]) == 0
    assert capsys.readouterr().out == "removed m@1 (parent of m@2)\n"
    assert not parent_note.exists() and shared.is_file()  # the child still uses the weights
    assert [v.ref for v in repository.versions()] == ["m@2"] and repository.lineage(child)[-1].ref == "m@2"
    assert main(["models", "list"]) == 0 and "(m@1, removed)" in capsys.readouterr().out
    again = repository.register("m", adapter_dir, kind="adapter", info=info)
    assert again.version == 3  # numbers are never reused


def test_diff_shows_config_and_metric_changes(adapter_dir, capsys):
    repository = open_repository()
    common = {"base_model": {"name": "x"}}
    repository.register("d", adapter_dir, kind="adapter", info={
        **common, "config": {"train": {"max_steps": 2, "seed": 1}}, "metrics": {"loss": 0.5, "step": 2}})
    repository.register("d", adapter_dir, kind="adapter", info={
        **common, "config": {"train": {"max_steps": 5, "seed": 1}}, "metrics": {"loss": 0.25, "step": 5}})
    capsys.readouterr()
    assert main(["models", "diff", "d@1", "d@latest"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "d@1 -> d@2", "config:", "  train.max_steps: 2 -> 5", "final metrics:", "  loss: 0.5 -> 0.25  (-0.25)",
        "  step: 2 -> 5  (+3)"]


def test_repository_config_switches_and_name_checks(tiny_model_dir, tmp_path, capsys):
    from rftune.config import load_config
    from rftune.errors import ConfigError

    with pytest.raises(ConfigError, match="repository.name 'a b'"):
        load_config(None, ["repository.name=a b"])
    with pytest.raises(ConfigError, match="did you mean 'repository.register'"):
        load_config(None, ["repository.registr=false"])
    config = chain_config(tmp_path, tiny_model_dir, repository={"register": False})
    assert main(["train", str(config)]) == 0
    assert "registered" not in capsys.readouterr().out and open_repository().versions() == []
    elsewhere = chain_config(tmp_path, tiny_model_dir, repository={"path": "elsewhere", "name": "mine"})
    assert main(["sft", str(elsewhere), "sft.output_dir=" + str(tmp_path / "sft2")]) == 0
    assert "registered mine@1" in capsys.readouterr().out
    assert [v.ref for v in Repository(tmp_path / "elsewhere").versions()] == ["mine@1"]
    assert open_repository().versions() == []


def test_serve_a_reference_answers_like_the_adapter_it_names(adapter_dir, tiny_model_dir):
    import urllib.request

    from rftune.serve import load_service

    repository = open_repository()
    repository.register("arith", adapter_dir, kind="adapter", info={"base_model": {"name": tiny_model_dir}})
    request = {"model": "arith@latest", "messages": [{"role": "user", "content": "count"}], "max_tokens": 8,
               "temperature": 0}
    process = subprocess.Popen([sys.executable, "-m", "rftune.cli", "serve", "arith@latest", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    try:
        line = process.stdout.readline()
        assert line.startswith("serving 'arith@latest' on http://127.0.0.1:"), line
        post = urllib.request.Request(line.split()[3] + "/chat/completions", data=json.dumps(request).encode(),
                                      headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(post, timeout=60) as response:
            served = json.loads(response.read())["choices"][0]["message"]["content"]
    finally:
        process.kill()
        process.wait()
    direct = load_service(tiny_model_dir, adapter=str(adapter_dir), device="cpu", served_name="arith@latest")
    base = load_service(tiny_model_dir, device="cpu", served_name="arith@latest")
    expected = direct.chat_completion(request)["choices"][0]["message"]["content"]
    assert served == expected and expected != base.chat_completion(request)["choices"][0]["message"]["content"]


def test_location_and_what_counts_as_a_reference(tmp_path, monkeypatch):
    from rftune.repository import is_reference, repository_location

    monkeypatch.delenv("RFTUNE_REPOSITORY")
    monkeypatch.setenv("RFTUNE_CACHE", str(tmp_path / "cache"))
    assert repository_location() == tmp_path / "cache" / "repository"
    monkeypatch.setenv("RFTUNE_REPOSITORY", str(tmp_path / "moved"))
    assert repository_location() == tmp_path / "moved" and repository_location("given") == Path("given")
    assert is_reference("wordle@latest") and is_reference("arith@") and is_reference("a.b-c_1@best")
    assert not any(is_reference(text) for text in ["runs/x@1", "HuggingFaceTB/SmolLM2-135M", "plain", "a@b@c"])
    (tmp_path / "odd@1").mkdir()
    monkeypatch.chdir(tmp_path)
    assert not is_reference("odd@1")  # an existing folder of that name is a path
