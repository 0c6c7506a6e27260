"""The run report: the numbers in the page are the run's files, several runs overlay, nothing is fetched."""

import json
import re

import yaml

from rftune.cli import main
from rftune.testing import report_page_data as page_data


def metrics(step, scale):
    return {"step": step, "reward/mean": scale * step, "reward/std": 0.1, "rewards/exact/mean": 0.5 * step,
            "kl": 0.01 * step, "entropy": 2.0 - 0.1 * step, "completion_len/mean": 10.0 + step,
            "clip/low": 0.0, "clip/high": 0.01, "clip/region": 0.01, "time/step": 3.0}


def completion(step, reward, text):
    return {"step": step, "prompt": [{"role": "user", "content": f"Q{step}"}], "completion": text,
            "rewards": {"exact": reward, "fmt": None}, "reward": reward, "advantage": reward - 0.5}


def write_run(folder, scale, evaluation=None):
    folder.mkdir(parents=True)
    records = [metrics(step, scale) for step in range(1, 6)] + [{"step": 5, "eval/accuracy": 0.25}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = [completion(step, r, f"step {step} reward {r} <b>") for step in range(1, 6) for r in (0.0, 1.0, 0.5,
                                                                                                   0.25, 0.75)]
    (folder / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": "base-model", "adapter": None},
                                                        "sft": {"enabled": False}}))
    if evaluation:
        (folder / "eval.json").write_text(json.dumps(evaluation))


EVAL = {"task": "arithmetic", "rows": 4, "baseline": "base", "players": [
    {"player": "base", "metrics": {"accuracy": {"mean": 0.25, "low": 0.0, "high": 0.75, "n": 4}}},
    {"player": "grpo", "metrics": {"accuracy": {"mean": 0.5, "low": 0.25, "high": 1.0, "n": 4}},
     "difference": {"accuracy": {"mean": 0.25, "low": 0.0, "high": 0.5, "n": 4}}}]}


def test_report_numbers_are_the_runs_files(tmp_path, capsys):
    write_run(tmp_path / "a", 1.0, EVAL)
    write_run(tmp_path / "b", 2.0)
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "page.html")]) == 0
    assert "report written to" in capsys.readouterr().out
    page = (tmp_path / "page.html").read_text()
    data = page_data(page)
    charts = {c["title"]: c["lines"] for c in data["charts"]}
    assert charts["Reward (total)"] == {"a: reward/mean": [[s, 1.0 * s] for s in range(1, 6)],
                                        "b: reward/mean": [[s, 2.0 * s] for s in range(1, 6)]}
    assert charts["Reward per function"]["b: rewards/exact/mean"] == [[s, 0.5 * s] for s in range(1, 6)]
    assert set(charts["Clip fractions"]) == {f"{r}: clip/{k}" for r in "ab" for k in ("low", "high", "region")}
    assert charts["Held-out evaluation during training"]["a: eval/accuracy"] == [[5, 0.25]]
    assert set(charts) == {"Reward (total)", "Reward per function", "KL to the reference", "Entropy",
                           "Completion length", "Clip fractions", "Step time", "Held-out evaluation during training"}
    assert page.count("<svg") == len(charts) + 1  # the curves and the eval figure
    # evaluation: the figures and intervals of eval.json
    assert data["eval"]["a"]["grpo"]["difference"] == EVAL["players"][1]["difference"]
    assert "0.500 [0.250, 1.000]" in page and "+0.250 [+0.000, +0.500]" in page
    # completions: first, middle and last step; the two best and two worst of each, escaped
    assert list(data["completions"]["a"]) == ["1", "3", "5"]
    assert [r["reward"] for r in data["completions"]["a"]["3"]] == [1.0, 0.75, 0.25, 0.0]
    assert "step 3 reward 0.75 &lt;b&gt;" in page and "step 3 reward 0.5 " not in page
    assert "base-model" in page and "resolved config" in page
    # nothing is fetched: no external source, link, stylesheet or import (SVG references stay inside the page)
    assert not re.search(r'(src|href)="(?!#)|url\((?!#)|<link|@import|<script(?! type="application/json")', page)


def test_report_shows_the_intervals_of_a_tasks_own_evaluation(tmp_path):
    # a task's own evaluation (e.g. games played): its summary rows, then each player's figures with their intervals
    # and the later players' paired differences against the first
    def figure(mean, low, high):
        return {"mean": mean, "low": low, "high": high, "n": 4}

    games = {"rows": [{"player": "base", "solved": 1}, {"player": "grpo", "solved": 3}], "intervals": {
        "base": {"solved": {"estimate": figure(0.25, 0.0, 0.75), "difference": None, "reason": "the baseline"},
                 "avg_guesses": {"estimate": figure(4.0, 4.0, 4.0), "difference": None, "reason": "the baseline"}},
        "grpo": {"solved": {"estimate": figure(0.75, 0.25, 1.0), "difference": figure(0.5, 0.25, 0.75)},
                 "avg_guesses": {"estimate": figure(3.5, 3.0, 4.0), "difference": None, "reason": "1 game"}}}}
    write_run(tmp_path / "games", 1.0, games)
    write_run(tmp_path / "old", 1.0, {"rows": games["rows"], "intervals": {  # the form before every figure had one
        "base": {"solved": figure(0.25, 0.0, 0.75), "difference": None}}})
    assert main(["report", str(tmp_path / "games"), str(tmp_path / "old"), "-o", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    data = page_data(page)
    assert data["eval"]["games"]["intervals"] == games["intervals"] and data["eval"]["old"]["intervals"] is None
    assert "<th>player</th><th>solved</th><th>avg_guesses</th>" in page
    assert "<td>grpo</td><td>0.750 [0.250, 1.000]</td><td>3.500 [3.000, 4.000]</td>" in page
    assert "paired differences against base" in page
    assert "<td>grpo</td><td>+0.500 [+0.250, +0.750]</td><td>-</td>" in page
    assert page.count("paired differences against base") == 1  # the older report: its rows only


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder (no metrics.jsonl)" in capsys.readouterr().err


def test_the_page_renders_in_headless_chromium(tmp_path):
    import shutil
    import subprocess

    import pytest
    from PIL import Image

    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    write_run(tmp_path / "a", 1.0, EVAL)
    assert main(["report", str(tmp_path / "a"), "-o", str(tmp_path / "page.html")]) == 0
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
               "--window-size=1280,1800"]
    result = subprocess.run([*command, f"--screenshot={tmp_path / 'shot.png'}", f"file://{tmp_path / 'page.html'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "CONSOLE" not in result.stderr  # no console message at all, let alone an error
    dom = subprocess.run([*command, "--dump-dom", f"file://{tmp_path / 'page.html'}"], capture_output=True,
                         text=True, timeout=120).stdout
    assert dom.count("<svg") == (tmp_path / "page.html").read_text().count("<svg") == 9  # 8 curves, 1 eval chart
    image = Image.open(tmp_path / "shot.png").convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    blue = sum(count for count, (r, g, b) in colours if abs(r - 0x1f) < 8 and abs(g - 0x77) < 8 and abs(b - 0xb4) < 8)
    assert blue > 500  # matplotlib's first line and bar colour is on screen: the charts were drawn
