"""Every fenced ``rftune ...`` command of the README runs as written, on the embedded default model, with short step
counts given through ``$RFTUNE_OVERRIDES`` (not by editing the commands).

Commands run in README order in one scratch folder holding a copy of ``configs/``, with two exceptions: the Wordle
section runs before the model-repository section (whose examples name the versions a Wordle run registers), and a
command that starts a new run where an earlier example left one runs in a fresh folder (the torchrun example's
holding the SFT stage the first example finished: the README says to run that stage in one process first). A command
that cannot run here says why in `NOT_RUN` (a placeholder name or hardware this machine lacks); one whose documented
outcome is a
refusal is in `REFUSED`. Slow: about two dozen processes, each loading the 135M model.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHORT = ("train.max_steps=1 train.batch_size=4 generation.num_generations=2 generation.max_new_tokens=8 "
         "train.threads=1 sft.max_steps=1 sft.batch_size=2 sft.num_examples=4 "
         "eval.num_rows=2 eval.num_samples=2 eval.bootstrap=20 eval.max_new_tokens=8 eval.batch_size=2")
GAMES_SHORT = " sft.kwargs.num_games=2 eval.kwargs.num_games=1"  # the game tasks' own options (sft.kwargs, eval.kwargs)
GAMES = ("wordle", "number_guess")
NOT_RUN = {
    "torchrun --nproc-per-node 8 -m rftune train configs/arithmetic.yaml": "needs 8 GPUs",
    "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m rftune train "
    "configs/arithmetic.yaml": "needs two machines (HOST is a placeholder)",
    "torchrun --nproc-per-node 8 -m rftune train configs/arithmetic.yaml lora.enabled=false train.fsdp=true":
        "needs 8 GPUs",
    "rftune eval configs/summarize.yaml --model other/model": "other/model is a placeholder for a hub model",
}
REFUSED = {"rftune models rm wordle@1": "refused while another version derives from it"}
FRESH = {"rftune train configs/arithmetic.yaml sft.enabled=false train.max_steps=5",  # a new run: runs/arithmetic
         "torchrun --standalone --nproc-per-node 2 -m rftune train configs/arithmetic.yaml train.device=cpu "
         "train.threads=1",  # holds the first example's run, and starting over there is refused
         "rftune train configs/code.yaml task.kwargs.source=humaneval"}  # likewise runs/code
HUMAN_GUESSES = "crane\nslate\nmound\nbrick\nfight\nwaltz\n"


def readme_commands() -> list[tuple[str, str]]:
    """(section, command) for each command line of the README's bash blocks, comments and continuations removed."""
    text = (ROOT / "README.md").read_text()
    commands, section = [], ""
    for block_section, block in _bash_blocks(text):
        section = block_section or section
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] in ("rftune", "torchrun"):
                commands.append((section, shlex.join(words)))
    return commands


def _bash_blocks(text: str):
    section = ""
    for part in re.split(r"(^## [^\n]*$|^```bash\n.*?^```$)", text, flags=re.M | re.S):
        if part.startswith("## "):
            section = part
        elif part.startswith("```bash"):
            yield section, part.removeprefix("```bash\n").removesuffix("```")


def _ordered(commands):
    """README order, the Wordle section moved before the model repository's (whose examples use its versions)."""
    wordle = [c for c in commands if c[0].startswith("## Wordle")]
    rest = [c for c in commands if c not in wordle]
    first_repository = next(i for i, c in enumerate(rest) if c[0].startswith("## Model repository"))
    return [c for _, c in rest[:first_repository] + wordle + rest[first_repository:]]


def _run(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    words = shlex.split(command)
    words = [sys.executable, "-m", "rftune.cli", *words[1:]] if words[0] == "rftune" else \
        [str(Path(sys.executable).with_name("torchrun")), *words[1:]]
    if command.startswith("rftune serve"):
        return _serve_once(words, cwd, env)
    stdin = HUMAN_GUESSES if "--human" in words else ""
    return subprocess.run(words, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=1200)


def _serve_once(words, cwd, env) -> subprocess.CompletedProcess:
    """Start the server, wait for its 'serving' line, stop it with Ctrl-C."""
    process = subprocess.Popen(words + ["--port", "0"], cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        return subprocess.CompletedProcess(words, process.returncode if line.startswith("serving ") else 1,
                                           line + process.stdout.read(), process.stderr.read())
    finally:
        process.kill()


def test_the_readme_lists_the_commands_this_test_expects():
    commands = [c for _, c in readme_commands()]
    assert len(commands) >= 25
    for listed in (*NOT_RUN, *REFUSED, *FRESH):
        assert listed in commands, f"{listed!r} is no longer in the README: update this test"


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    workspace = tmp_path / "work"
    shutil.copytree(ROOT / "configs", workspace / "configs")
    shutil.copytree(ROOT / "examples", workspace / "examples")
    env = {**os.environ, "RFTUNE_REPOSITORY": str(tmp_path / "repository")}
    failures = []
    for number, command in enumerate(_ordered(readme_commands())):
        if command in NOT_RUN:
            continue
        cwd = workspace
        if command in FRESH:
            cwd = tmp_path / f"fresh-{number}"
            shutil.copytree(ROOT / "configs", cwd / "configs")
            if command.startswith("torchrun"):
                shutil.copytree(workspace / "runs" / "arithmetic" / "sft", cwd / "runs" / "arithmetic" / "sft")
        if command.startswith("rftune report runs/a runs/b"):  # the example's two runs: copies of one made above
            for name in ("a", "b"):
                shutil.copytree(workspace / "runs" / "arithmetic", workspace / "runs" / name, dirs_exist_ok=True)
        short = SHORT + (GAMES_SHORT if any(game in command for game in GAMES) else "")
        result = _run(command, cwd, {**env, "RFTUNE_OVERRIDES": short})
        expected = 2 if command in REFUSED else 0
        if result.returncode != expected or "Traceback" in result.stderr:
            failures.append(f"{command}\n  exit {result.returncode}\n  {result.stderr[-2000:]}")
    assert not failures, "\n".join(failures)
