"""The Wordle commands end to end: eval on the tiny model, error paths (exit 2, no traceback), play and play --human."""

import json
import os
import subprocess
import sys

import yaml

from rftune.cli import main


def write_config(path, tiny_model_dir, output_dir, **sections):
    config = {"model": {"name_or_path": tiny_model_dir}, "train": {"output_dir": str(output_dir)},
              "task": {"name": "wordle"}, "eval": {"num_games": 2, "max_new_tokens": 3}, **sections}
    path.write_text(yaml.safe_dump(config))
    return path


def rftune(*args, stdin=""):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "rftune.cli", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=120)


def test_eval_writes_the_report_for_every_player(tiny_model_dir, tmp_path, capsys):
    config = write_config(tmp_path / "wordle.yaml", tiny_model_dir, tmp_path / "run")
    assert main(["eval", str(config), "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "base" in out and "solver" in out and "random" in out
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert [row["player"] for row in report["rows"]] == ["base", "solver", "random"]
    assert len(report["secrets"]) == 2 and report["sampled"] is False


def test_bad_config_and_bad_adapter_exit_2_with_a_message(tiny_model_dir, tmp_path, capsys):
    config = write_config(tmp_path / "wordle.yaml", tiny_model_dir, tmp_path / "run", sft={"epoch": 2})
    assert main(["sft", str(config)]) == 2
    assert "unknown config key 'sft.epoch'; did you mean 'sft.epochs'?" in capsys.readouterr().err
    good = write_config(tmp_path / "good.yaml", tiny_model_dir, tmp_path / "run")
    assert main(["eval", str(good), "--adapter", str(tmp_path / "missing")]) == 2
    assert "not a PEFT adapter folder" in capsys.readouterr().err
    assert main(["eval", str(good), "--games", "0"]) == 2
    assert "number of games must be between 1 and 315" in capsys.readouterr().err
    bad_data = write_config(tmp_path / "bad.yaml", tiny_model_dir, tmp_path / "run", sft={"data": "nope.jsonl"})
    assert main(["sft", str(bad_data)]) == 2
    assert "SFT data file not found" in capsys.readouterr().err


def test_cli_error_has_no_traceback(tmp_path):
    config = tmp_path / "wordle.yaml"
    config.write_text("task:\n  name: wordle\n  kwargs:\n    mode: turns\n")
    result = rftune("train", str(config))
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_play_human_with_scripted_input():
    result = rftune("play", "wordle", "--human", "--secret", "crane", "--no-color", stdin="xyz\nslate\ncrane\n")
    assert result.returncode == 0, result.stderr
    assert "'xyz' is not a 5-letter word" in result.stdout
    assert "S(x) L(x) A(✓) T(x) E(✓)" in result.stdout and "Solved in 2!" in result.stdout


def test_play_watch_tiny_model(tiny_model_dir):
    result = rftune("play", "wordle", "--model", tiny_model_dir, "--secret", "crane", "--max-new-tokens", "3",
                    "--no-color")
    assert result.returncode == 0, result.stderr
    assert "--- turn 6/6 ---" in result.stdout and "the word was CRANE" in result.stdout
    assert rftune("play", "wordle", "--secret", "zzzzz", "--human").returncode == 2


def test_play_takes_the_prompts_and_constraint_of_the_adapters_run(tiny_model_dir, tmp_path):
    from rftune.testing import tiny_lora_model

    model, tokenizer = tiny_lora_model(tiny_model_dir, seed=3, scale=0.5)
    model.save_pretrained(tmp_path / "run" / "final")
    tokenizer.save_pretrained(tmp_path / "run" / "final")
    # the whole reply is forced, so the guesses can only be CRANE or SLATE: the constraint took effect
    forced = {"regex": "<think>x</think><guess>(SLATE|CRANE)</guess>"}
    write_config(tmp_path / "run" / "config.yaml", tiny_model_dir, tmp_path / "run",
                 task={"name": "wordle", "kwargs": {"prompt_style": "summary"}}, generation={"constraint": forced})
    args = ["play", "wordle", "--model", tiny_model_dir, "--adapter", str(tmp_path / "run" / "final"),
            "--secret", "crate", "--max-new-tokens", "60", "--no-color"]
    result = rftune(*args)
    assert result.returncode == 0, result.stderr
    assert f"prompts and constraint from {tmp_path / 'run' / 'config.yaml'}" in result.stdout
    assert "prompt style: summary; replies constrained to" in result.stdout
    guesses = [line for line in result.stdout.splitlines() if line.startswith("<think>x</think><guess>")]
    assert len(guesses) == 6 and "(invalid)" not in result.stdout
    free = rftune(*args, "--no-constraint")
    assert free.returncode == 0 and "prompt style: summary; unconstrained" in free.stdout
    write_config(tmp_path / "bad.yaml", tiny_model_dir, tmp_path / "run",
                 task={"name": "wordle", "kwargs": {"prompt_style": "short"}})
    bad = rftune(*args, "--config", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 2 and "task.kwargs.prompt_style: must be one of course, summary" in bad.stderr
    assert "Traceback" not in bad.stderr
