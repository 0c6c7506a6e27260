"""Faults and bad input, as a new user's mistakes and a real machine's accidents come: damaged checkpoints, a
full and a read-only disk, odd data, hanging and failing rewards and judges, damaged repository files, cut logs.

Each test makes the fault for real (bytes cut or flipped in files on disk, a small tmpfs filled up, a read-only
mount, non-UTF-8 bytes, a misbehaving HTTP server on loopback), then reads back from disk: nothing already
computed is lost, no half-written file is left, and the user meets one ``error:`` line naming what and where,
never a traceback and never a silent zero.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rftune import checkpoint
from rftune.cli import main
from rftune.runtime.atomic_io import MANIFEST_NAME, verify_folder
from rftune.runtime.tracking import read_jsonl

REWARDS = '''
import time

def vowels(prompt, completion, example):
    return sum(c in "aeioué" for c in completion) / max(len(completion), 1)

def never(prompt, completion, example):
    return None

def hangs(prompt, completion, example):
    time.sleep(60)
    return 1.0
'''
WORDS = ["café", "naïve", "crème", "über", "✓ yes", "smörgås", "piñata", "façade"]


def write_config(folder: Path, model_dir: str, output_dir: Path, extra: str = "", rewards: str = "vowels",
                 rows: list[str] | None = None) -> Path:
    """A tiny GRPO recipe with non-ASCII prompts: 2 prompts x 2 completions per step, a checkpoint every step."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reward.py").write_text(REWARDS)
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Spell {w}"}, ensure_ascii=False) + "\n"
                                                  for w in rows or WORDS), encoding="utf-8")
    config = folder / "config.yaml"
    config.write_text(f"""
model: {{name_or_path: {model_dir}}}
lora: {{r: 4, alpha: 8}}
generation: {{num_generations: 2, max_new_tokens: 6}}
train: {{output_dir: {output_dir}, max_steps: 3, batch_size: 4, learning_rate: 0.01, save_steps: 1,
        save_total_limit: 3, threads: 1}}
task: {{name: dataset, path: prompts.jsonl}}
rewards:
  functions: [{{name: "reward.py:{rewards}"}}]
repository: {{register: false}}
{extra}
""", encoding="utf-8")
    return config


def train(config: Path, *args: str) -> int:
    return main(["train", str(config), *args])


def one_error_line(err: str) -> str:
    """The single ``error:`` line a failed command printed (no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------ 1-3: checkpoints and --resume
@pytest.fixture
def trained(tiny_model_dir, tmp_path, capsys):
    """A finished 3-step run with checkpoints step-1..3 (and its config)."""
    out = tmp_path / "run"
    config = write_config(tmp_path, tiny_model_dir, out)
    assert train(config) == 0
    capsys.readouterr()
    return config, out


def test_resume_skips_damaged_checkpoints_and_takes_the_newest_complete(trained, capsys):
    config, out = trained
    step1, step2, step3 = checkpoint.list_checkpoints(out)
    adapter = step3 / "model" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-100])  # cut short, as by a disk that filled up
    state = step2 / "trainer_state.json"
    state.write_bytes(state.read_bytes().replace(b'"step": 2', b'"step": 9'))  # garbled, same size
    assert verify_folder(step1) == []
    assert train(config, "train.max_steps=4", "--resume") == 0
    said = capsys.readouterr().out
    assert f"skipping {step3}: model/adapter_model.safetensors has" in said
    assert f"skipping {step2}: trainer_state.json does not match its sha256" in said
    assert f"resumed from {step1} (step 1)" in said
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert all(verify_folder(p) == [] for p in checkpoint.list_checkpoints(out))  # redone steps replaced them
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert verify_folder(out / "final") == []


def test_a_missing_state_file_is_an_incomplete_checkpoint(trained, capsys):
    config, out = trained
    (checkpoint.list_checkpoints(out)[-1] / "state.pt").unlink()
    path, skipped = checkpoint.find_resumable(out)
    assert path.name == "step-000002" and skipped[0][1] == "state.pt is missing"


def test_resume_errors_only_when_no_checkpoint_is_complete(trained, capsys):
    config, out = trained
    for path in checkpoint.list_checkpoints(out):
        (path / MANIFEST_NAME).unlink() if path.name != "step-000001" else (path / "state.pt").unlink()
    assert train(config, "train.max_steps=4", "--resume") == 2
    captured = capsys.readouterr()
    assert "no manifest.json (its writer did not finish)" in captured.out
    assert one_error_line(captured.err).startswith(f"error: --resume: no complete checkpoint in {out / 'checkpoints'}")


def test_resume_with_a_changed_shape_names_the_keys(trained, capsys):
    config, out = trained
    assert train(config, "train.max_steps=4", "lora.r=8", "lora.target_modules=[q_proj]", "--resume") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "keys that cannot change on resume (lora.r: checkpoint 4, now 8; lora.target_modules: checkpoint " \
           "'all-linear', now ['q_proj'])" in line
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]  # nothing lost


def test_resume_on_a_folder_without_checkpoints_starts_fresh_and_says_so(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "fresh"
    assert train(write_config(tmp_path, tiny_model_dir, out), "train.max_steps=1", "--resume") == 0
    assert f"--resume: {out} holds no checkpoint yet; starting from step 0" in capsys.readouterr().out
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1]


# ------------------------------------------------------------------- 4: logs cut by a kill, read back
def cut_inside_a_character(path: Path, record: dict) -> None:
    """Append `record` as a kill would leave it: cut after the first byte of its last multi-byte character."""
    line = json.dumps(record, ensure_ascii=False).encode("utf-8")
    last = max(i for i, byte in enumerate(line) if byte >= 0xC0)  # the lead byte of a multi-byte character
    with open(path, "ab") as handle:
        handle.write(line[:last + 1])


def test_resume_after_a_kill_that_cut_the_logs_inside_a_multibyte_character(trained, capsys):
    config, out = trained
    for name in ("completions.jsonl", "metrics.jsonl"):  # step 4 was being written when the kill came
        cut_inside_a_character(out / name, {"step": 4, "prompt": "Spell smörgås", "completion": "smörgås ✓"})
    shutil.rmtree(out / "final")
    assert train(config, "train.max_steps=4", "--resume") == 0
    assert "resumed from" in capsys.readouterr().out
    completions = (out / "completions.jsonl").read_bytes().decode("utf-8")  # whole, valid UTF-8 again
    assert [json.loads(line)["step"] for line in completions.splitlines()] == [s for s in (1, 2, 3, 4) for _ in "abcd"]
    assert "Spell smörgås" in completions or "Spell café" in completions
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]


def test_sigkill_mid_run_then_resume_leaves_every_file_whole(tiny_model_dir, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    config = write_config(tmp_path, tiny_model_dir, out, extra="train: {max_steps: 6, output_dir: " + str(out) +
                          ", batch_size: 4, save_steps: 1, save_total_limit: 3, threads: 1}")
    process = subprocess.Popen([sys.executable, "-m", "rftune", "train", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "step-000002").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert train(config, "--resume") == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    rows = (out / "completions.jsonl").read_bytes().decode("utf-8").splitlines()
    assert [json.loads(row)["step"] for row in rows] == [s for s in range(1, 7) for _ in "abcd"]
    assert all(verify_folder(p) == [] for p in checkpoint.list_checkpoints(out)) and verify_folder(out / "final") == []
    assert not list(out.rglob(".tmp-*"))


def test_report_skips_a_cut_last_line_and_names_a_damaged_one(trained, tmp_path, capsys):
    config, out = trained
    cut_inside_a_character(out / "metrics.jsonl", {"step": 4, "note": "é"})
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 1000
    lines = (out / "metrics.jsonl").read_bytes().split(b"\n")
    lines[1] = lines[1][:40]  # a damaged line in the middle is not a kill's doing: named, not skipped
    (out / "metrics.jsonl").write_bytes(b"\n".join(lines))
    assert main(["report", str(out), "-o", str(tmp_path / "r2.html")]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {out / 'metrics.jsonl'}:2: invalid JSON")
    (out / "eval.json").write_text('{"players": [')
    assert main(["report", str(out)]) == 2


# --------------------------------------------------------------------- 5: a full disk, a read-only folder
@pytest.fixture
def tmpfs(tmp_path):
    """A real 8 MB tmpfs mounted for the test (needs root)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(mount: Path, leave: int) -> None:
    """Fill the file system of `mount` up to `leave` free bytes."""
    free = shutil.disk_usage(mount).free
    with open(mount / "filler", "wb") as handle:
        handle.write(b"\0" * (free - leave))


def test_a_full_disk_while_checkpointing_is_a_clear_error_that_keeps_the_previous_checkpoint(
        tiny_model_dir, tmp_path, tmpfs, capsys):
    out = tmpfs / "run"
    config = write_config(tmp_path, tiny_model_dir, out, rows=WORDS[:4])
    assert train(config, "train.max_steps=1") == 0
    fill(tmpfs, leave=48_000)  # the logs of one more step fit, its checkpoint does not
    assert train(config, "train.max_steps=2", "--resume") == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write checkpoint {out / 'checkpoints' / 'step-000002'}: the disk is full")
    assert line.endswith("free there")
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step-000001"]
    assert verify_folder(out / "checkpoints" / "step-000001") == []
    assert not [p for p in out.rglob(".tmp-*")], "a half-written temporary folder was left behind"
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    (tmpfs / "filler").unlink()  # space again: the run resumes from step 1 and finishes
    assert train(config, "train.max_steps=2", "--resume") == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]


def test_a_read_only_output_folder_is_a_clear_error(tiny_model_dir, tmp_path, tmpfs, capsys):
    out = tmpfs / "run"
    config = write_config(tmp_path, tiny_model_dir, out, rows=WORDS[:4])
    assert train(config, "train.max_steps=1") == 0
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    assert train(config, "train.max_steps=2", "--resume") == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write to the run folder (train.output_dir) {out}: the file system is "
                           "read-only")
    assert train(config, f"train.output_dir={tmpfs / 'new'}") == 2
    assert "read-only" in one_error_line(capsys.readouterr().err)
    (tmp_path / "chat.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, '
                                         '{"role": "assistant", "content": "hé"}]}\n', encoding="utf-8")
    assert main(["sft", str(config), "sft.data=chat.jsonl", f"sft.output_dir={tmpfs / 'sft'}", "sft.max_steps=1"]) == 2
    assert "the file system is read-only" in one_error_line(capsys.readouterr().err)
    assert verify_folder(out / "checkpoints" / "step-000001") == []


@pytest.mark.parametrize("output_dir", ["a-file", "a-file/run"])
def test_a_file_where_the_run_folder_goes_is_a_clear_error(tiny_model_dir, tmp_path, capsys, output_dir):
    config = write_config(tmp_path, tiny_model_dir, tmp_path / "run", rows=WORDS[:4])
    (tmp_path / "a-file").write_text("notes")
    assert train(config, f"train.output_dir={tmp_path / output_dir}", "train.max_steps=1") == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write to the run folder (train.output_dir) {tmp_path / output_dir}: a "
                           "file is in the way where a folder is needed")
    assert (tmp_path / "a-file").read_text() == "notes"


def test_a_full_disk_under_the_model_repository_is_a_clear_error(trained, tmpfs, monkeypatch, capsys):
    config, out = trained
    monkeypatch.setenv("RFTUNE_REPOSITORY", str(tmpfs / "repository"))
    assert main(["models", "list"]) == 0  # the (empty) index exists
    fill(tmpfs, leave=4_000)
    capsys.readouterr()
    assert main(["models", "import", str(out / "final"), "--name", "v"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write to the model repository {tmpfs / 'repository'}: the disk is full")
    (tmpfs / "filler").unlink()
    assert not list((tmpfs / "repository").rglob(".tmp-*"))
    assert main(["models", "list"]) == 0 and "no versions" in capsys.readouterr().out


# ------------------------------------------------------------------------------ 6: data it cannot use
@pytest.mark.parametrize("name, content, expected", [
    ("bad.jsonl", b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n',
     "bad.jsonl:2: not UTF-8 text (byte 0xe9 at column 16); convert the file to UTF-8"),
    ("bad.csv", b'prompt\nfine\n"caf\xe9"\n',
     "bad.csv:3: not UTF-8 text (byte 0xe9 at column 5); convert the file to UTF-8"),
    ("empty.jsonl", b"", "empty.jsonl (the file is empty) has no rows"),
    ("blank.csv", b"prompt\n", "blank.csv has no rows"),
])
def test_unreadable_data_files_are_named(tiny_model_dir, tmp_path, capsys, name, content, expected):
    config = write_config(tmp_path, tiny_model_dir, tmp_path / "run")
    (tmp_path / name).write_bytes(content)
    assert train(config, f"task.path={name}") == 2
    assert one_error_line(capsys.readouterr().err) == f"error: {tmp_path / expected}"


def test_fewer_rows_than_one_step_takes_is_an_error(tiny_model_dir, tmp_path, capsys):
    config = write_config(tmp_path, tiny_model_dir, tmp_path / "run", rows=["one"])
    assert train(config) == 2
    assert "the task has 1 training rows, fewer than the 2 prompts of one step" in \
        one_error_line(capsys.readouterr().err)


def test_prompts_longer_than_the_context_are_named_truncated_or_dropped_by_policy(tiny_model_dir, tmp_path, capsys):
    # the tiny model's context is 1024 tokens, one per character: 2000 characters cannot fit
    rows = WORDS[:4] + ["x" * 2000]
    config = write_config(tmp_path, tiny_model_dir, tmp_path / "run", rows=rows)
    assert train(config) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"error: {tmp_path / 'prompts.jsonl'}:5 (prompt 'Spell xxx" in line
    assert "more than 1018 (the model's context of 1024 tokens less the 6 tokens of a completion)" in line
    config.write_text(config.read_text() + "task: {name: dataset, path: prompts.jsonl, on_long_prompt: drop}\n")
    assert train(config, "train.max_steps=1") == 0
    assert "task.on_long_prompt=drop: left out 1 rows whose prompt is longer than 1018" in capsys.readouterr().out
    assert train(config, "train.max_steps=1", "task.max_prompt_tokens=20", f"train.output_dir={tmp_path / 'r2'}",
                 "task.on_long_prompt=error") == 2
    assert "more than 20 (task.max_prompt_tokens)" in one_error_line(capsys.readouterr().err)
    (tmp_path / "heldout.jsonl").write_text(json.dumps({"prompt": "y" * 2000}) + "\n")
    assert main(["eval", str(config), f"task.eval_path={tmp_path / 'heldout.jsonl'}", "eval.max_new_tokens=2",
                 "--no-base", "--adapter", str(tmp_path / "run" / "final")]) == 2  # drop is for training rows
    assert f"{tmp_path / 'heldout.jsonl'}:1 (prompt 'yyy" in one_error_line(capsys.readouterr().err)
    run = tmp_path / "r3"
    assert train(config, "train.max_steps=1", "task.max_prompt_tokens=40", f"train.output_dir={run}",
                 "task.on_long_prompt=truncate") == 0
    assert "task.on_long_prompt=truncate: truncated 1 rows whose prompt is longer than 40 tokens " \
           "(task.max_prompt_tokens)" in capsys.readouterr().out
    prompts = {row["prompt"][-1]["content"] for row in read_jsonl(run / "completions.jsonl")}
    assert all(len(text) < 40 for text in prompts)  # one token per character, the chat template's share aside


def test_truncation_keeps_the_instructions_and_the_end_of_the_last_message(tiny_model_dir):
    from rftune.model.loading import load_tokenizer
    from rftune.rollout.generation import prompt_lengths, truncate_prompt

    tokenizer = load_tokenizer(tiny_model_dir)
    text = "é" * 50 + "a" * 50 + " question?"  # é is not in the tiny vocabulary: the text kept is the original's
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    (length,) = prompt_lengths(tokenizer, [messages])
    cut = truncate_prompt(tokenizer, messages, length - 70)
    assert prompt_lengths(tokenizer, [cut]) == [length - 70]
    assert cut[0] == messages[0] and cut[1]["content"] == "a" * 30 + " question?"
    assert truncate_prompt(tokenizer, messages, 10) is None  # the system message alone is longer


# ------------------------------------------------------------- 7: rewards and judges that hang or fail
def strict_records(path: Path) -> list[dict]:
    """metrics.jsonl read as strict JSON: a bare NaN or Infinity token fails."""
    def refuse(token):
        raise AssertionError(f"{path} holds a bare {token}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_a_hanging_reward_is_stopped_by_rewards_timeout_and_named(tiny_model_dir, tmp_path, capsys):
    config = write_config(tmp_path, tiny_model_dir, tmp_path / "run", rewards="hangs",
                          extra="rewards: {functions: [{name: 'reward.py:hangs'}], timeout: 0.2}")
    assert train(config, "train.max_steps=1") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "reward function 'hangs' failed on sample 0" in line
    assert "did not return within rewards.timeout=0.2 s" in line


def test_a_timed_out_reward_under_skip_is_counted_and_logged_as_no_value(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    config = write_config(tmp_path, tiny_model_dir, out, rewards="hangs")
    assert train(config, "train.max_steps=1", "rewards.timeout=0.2", "rewards.on_error=skip",
                 "rewards.on_unavailable=continue") == 0
    assert "rewards unavailable: reward function 'hangs' had no value for any of the 4 completions; trained on " \
           "anyway (rewards.on_unavailable=continue)" in capsys.readouterr().err
    (record,) = strict_records(out / "metrics.jsonl")
    assert record["rewards/hangs/errors"] == 4  # one wait of 0.2 s, then the rest of the batch counted as failed
    assert record["reward/mean"] is None and record["rewards/hangs/mean"] is None
    assert record["rewards/unavailable"] == 1 and "update_skipped" not in record


def test_rewards_never_applicable_stop_the_run_by_default_after_n_steps(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    config = write_config(tmp_path, tiny_model_dir, out, rewards="never")
    assert train(config, "train.max_steps=5") == 2
    err = capsys.readouterr().err
    assert err.count("warning: step") == 2 and "its update skipped (rewards.on_unavailable=stop)" in err
    assert one_error_line(err).startswith("error: step 3: rewards unavailable for 3 steps in a row (reward function "
                                          "'never' had no value for any of the 4 completions); stopping")
    records = strict_records(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["reward/mean"] is None and r["update_skipped"] == 1 for r in records)
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step-000001", "step-000002"]


def test_skip_step_leaves_the_weights_alone_and_continue_trains(tiny_model_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    config = write_config(tmp_path, tiny_model_dir, tmp_path / "skip", rewards="never",
                          extra="rewards: {functions: [{name: 'reward.py:never'}], on_unavailable: skip_step}")
    assert train(config, "train.max_steps=2") == 0
    assert capsys.readouterr().err.count("its update skipped (rewards.on_unavailable=skip_step)") == 2
    weights = load_file(tmp_path / "skip" / "final" / "adapter_model.safetensors")
    assert all(not tensor.any() for name, tensor in weights.items() if "lora_B" in name)  # as initialised
    assert train(config, "train.max_steps=1", "rewards.on_unavailable=continue",
                 f"train.output_dir={tmp_path / 'cont'}") == 0
    assert "update_skipped" not in strict_records(tmp_path / "cont" / "metrics.jsonl")[0]


class MisbehavingJudge:
    """An OpenAI-compatible endpoint on loopback: of every 4 requests one gets a score, one an HTTP 500, two a
    reply with no score in it."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    server.requests += 1
                    turn = server.requests % 4
                if turn == 1:
                    return self._send(500, {"error": {"message": "overloaded"}})
                text = "<score>7</score>" if turn == 0 else "I would rather not say."
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_judge_that_mostly_fails_stops_the_run_loudly(tiny_model_dir, tmp_path, capsys):
    judge = MisbehavingJudge()
    try:
        config = write_config(tmp_path, tiny_model_dir, tmp_path / "run", extra=f"""
rewards:
  max_unavailable_steps: 1
  functions:
    - name: judge_score
      kwargs: {{judge: {{backend: openai, model: m, base_url: "{judge.base_url}", api_key_env: null,
                max_retries: 0, timeout: 5, concurrency: 1}}}}
""")
        assert train(config, "train.max_steps=3") == 2
    finally:
        judge.close()
    assert judge.requests == 4
    assert one_error_line(capsys.readouterr().err).startswith(
        "error: step 1: rewards unavailable for 1 steps in a row (3 of 4 judgments failed or could not be read)")
    (record,) = strict_records(tmp_path / "run" / "metrics.jsonl")
    assert record["judge/failures"] == 1 and record["judge/parse_failures"] == 2
    assert record["rewards/judge_score/mean"] == pytest.approx(0.7) and record["update_skipped"] == 1


def test_an_unreachable_judge_is_named_not_scored_zero(tiny_model_dir, tmp_path, capsys):
    import socket

    with socket.socket() as probe:  # a loopback port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path, tiny_model_dir, tmp_path / "run", extra=f"""
rewards:
  functions:
    - name: judge_score
      kwargs: {{judge: {{backend: openai, model: m, base_url: "http://127.0.0.1:{port}/v1", api_key_env: null,
                max_retries: 0, timeout: 5}}}}
""")
    assert train(config, "train.max_steps=3", "rewards.max_unavailable_steps=1") == 2
    assert one_error_line(capsys.readouterr().err).startswith(
        "error: step 1: rewards unavailable for 1 steps in a row (reward function 'judge_score' had no value for any "
        "of the 4 completions; 4 of 4 judgments failed or could not be read)")
    (record,) = strict_records(tmp_path / "run" / "metrics.jsonl")
    assert record["reward/mean"] is None and record["judge/failures"] == 4


# ----------------------------------------------------------------------- 8: damage in the repository
@pytest.fixture
def registered(trained, capsys):
    config, out = trained
    assert main(["models", "import", str(out / "final"), "--name", "v"]) == 0
    capsys.readouterr()
    from rftune.repository import open_repository

    repository = open_repository()
    return repository, repository.resolve("v@1"), config, out


def test_a_flipped_byte_in_a_stored_file_is_found_and_refused(registered, tmp_path, capsys):
    repository, version, config, out = registered
    blob = repository.blob_path(version.manifest["adapter_model.safetensors"]["sha256"])
    with open(blob, "r+b") as handle:  # the same size, one byte different
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0xFF]))
    damaged = "BROKEN: 1 file(s) damaged, not matching their sha256 (adapter_model.safetensors)"
    assert main(["models", "list"]) == 0 and capsys.readouterr().out.splitlines()[1].endswith(damaged)
    assert main(["models", "verify"]) == 1
    assert capsys.readouterr().out == f"v@1: {damaged}\n0 of 1 version(s) verified, 1 broken\n"
    assert main(["models", "export", "v@1", str(tmp_path / "exported")]) == 2
    assert "v@1 is broken: its stored files adapter_model.safetensors" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "exported").exists()
    (tmp_path / "heldout.jsonl").write_text('{"prompt": "Spell déjà"}\n')
    assert main(["eval", str(config), f"task.eval_path={tmp_path / 'heldout.jsonl'}", "--no-base", "--adapter",
                 "v@1"]) == 2
    assert "do not match their sha256" in one_error_line(capsys.readouterr().err)


def test_models_verify_passes_an_intact_repository(registered, capsys):
    assert main(["models", "verify", "v@latest"]) == 0
    assert capsys.readouterr().out == "v@1: ok\n1 of 1 version(s) verified\n"


def test_import_refuses_a_folder_that_could_never_load(trained, tmp_path, capsys):
    config, out = trained
    folder = tmp_path / "to-import"
    shutil.copytree(out / "final", folder)
    (folder / "adapter_config.json").write_text("{not json")
    assert main(["models", "import", str(folder)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {folder / 'adapter_config.json'}: not valid JSON")
    shutil.copyfile(out / "final" / "adapter_config.json", folder / "adapter_config.json")
    (folder / "adapter_model.safetensors").unlink()
    assert main(["models", "import", str(folder)]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {folder}: no weights")
    assert main(["models", "list"]) == 0 and "no versions" in capsys.readouterr().out


# --------------------------------------------------------------------------- 9: eval on a damaged adapter
def test_eval_of_an_adapter_cut_mid_write_names_the_file(trained, tmp_path, capsys):
    config, out = trained
    adapter = out / "final" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:1000])
    (tmp_path / "heldout.jsonl").write_text('{"prompt": "Spell déjà"}\n{"prompt": "Spell voilà"}\n')
    args = ["eval", str(config), f"task.eval_path={tmp_path / 'heldout.jsonl'}", "eval.max_new_tokens=2",
            "--no-base", "--adapter", str(out / "final")]
    assert main(args) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: adapter {out / 'final'} is damaged: adapter_model.safetensors has 1000 bytes, "
        f"{verify_size(out / 'final')} were written")
    (out / "final" / MANIFEST_NAME).unlink()  # a foreign adapter, with no manifest: the loader's error, named
    assert main(args) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: cannot load the adapter {out / 'final'}: ")


def verify_size(folder: Path) -> int:
    return json.loads((folder / MANIFEST_NAME).read_text())["adapter_model.safetensors"]["size"]


# --------------------------------------------------------------------------------- 10: torchrun ranks
def test_a_rank_other_than_0_waits_then_names_itself(tmp_path, capsys, monkeypatch):
    import rftune.cli

    monkeypatch.setattr(rftune.cli, "RANK_GRACE_S", 0.0)
    monkeypatch.setenv("RANK", "1")
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"error: rank 1: config file not found: {tmp_path / 'missing.yaml'}"


@pytest.mark.slow
def test_under_torchrun_a_config_error_is_printed_once(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "rftune", "train",
                             str(tmp_path / "missing.yaml")], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.count(f"error: config file not found: {tmp_path / 'missing.yaml'}") == 1, result.stderr
    assert "rank 1:" not in result.stderr


# ------------------------------------------------------------------- the new keys, in YAML and as overrides
def test_new_config_keys_load_from_yaml_and_overrides_and_are_checked(tmp_path):
    from rftune.config import load_config
    from rftune.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("rewards: {timeout: 2.5, on_unavailable: skip_step, max_unavailable_steps: 5}\n"
                    "task: {max_prompt_tokens: 300, on_long_prompt: drop}\n")
    config = load_config(path)
    assert (config.rewards.timeout, config.rewards.on_unavailable, config.rewards.max_unavailable_steps) == \
        (2.5, "skip_step", 5)
    assert (config.task.max_prompt_tokens, config.task.on_long_prompt) == (300, "drop")
    config = load_config(path, ["rewards.timeout=1", "rewards.on_unavailable=continue",
                                "rewards.max_unavailable_steps=2", "task.max_prompt_tokens=null",
                                "task.on_long_prompt=error"])
    assert (config.rewards.timeout, config.rewards.on_unavailable, config.rewards.max_unavailable_steps) == \
        (1.0, "continue", 2)
    assert (config.task.max_prompt_tokens, config.task.on_long_prompt) == (None, "error")
    for override, message in [("rewards.on_unavailable=off", "must be one of 'stop', 'skip_step', 'continue', "
                                                              "got 'off'"),  # as the user wrote it, not YAML's False
                              ("rewards.timeout=0", "rewards.timeout: must be >= 0.001"),
                              ("rewards.max_unavailable_steps=0", "must be >= 1"),
                              ("task.on_long_prompt=no", "must be one of 'error', 'truncate', 'drop', got 'no'"),
                              ("task.max_prompt_tokens=0", "task.max_prompt_tokens: must be >= 1")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(path, [override])


def test_sft_data_that_is_not_utf8_is_named(tmp_path):
    from rftune.errors import DataError
    from rftune.train.sft import load_chat_jsonl

    path = tmp_path / "chat.jsonl"
    path.write_bytes(b'{"messages": [{"role": "user", "content": "\xff"}]}\n')
    with pytest.raises(DataError, match=re.escape(f"{path}:1: not UTF-8 text (byte 0xff at column 44)")):
        load_chat_jsonl(path)


def test_pruning_never_removes_the_checkpoint_just_written_next_to_a_damaged_newer_one(trained):
    config, out = trained
    step1, step2, step3 = checkpoint.list_checkpoints(out)
    (step3 / "state.pt").unlink()
    shutil.rmtree(step2)
    assert train(config, "train.max_steps=2", "train.save_total_limit=1", "--resume") == 0
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step-000002", "step-000003"]
    assert checkpoint.find_resumable(out)[0].name == "step-000002"
