"""The run report: one self-contained HTML page (no scripts, no network) for looking at one or more runs.

Sections: training curves over steps (reward total and per function, KL, entropy, completion length, clip
fractions, step time; one line per run, with a legend), held-out evaluation (``eval/<metric>`` curves logged
during training, and the players of the run's ``eval.json`` with their 95% intervals and paired differences, also
those of a task's own evaluation, e.g. games played), the best and worst completions of chosen steps with their
per-function rewards and advantages, and each run's resolved config and lineage (base model, SFT stage or starting
adapter, repository version).

Charts are matplotlib figures embedded as inline SVG. The numbers every chart is drawn from are also embedded, as
a JSON block (``<script type="application/json" id="rftune-data">``, data only: browsers do not run it), so the
page can be checked against the run's files.
"""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import yaml

from rftune.errors import ConfigError, DataError
from rftune.runtime.tracking import extremes, read_jsonl

CURVES = (  # (title, metric keys or a prefix ending in "/", y label)
    ("Reward (total)", ["reward/mean"], "reward"),
    ("Reward per function", "rewards/", "mean reward"),
    ("KL to the reference", ["kl"], "KL"),
    ("Entropy", ["entropy"], "nats / token"),
    ("Completion length", ["completion_len/mean"], "tokens"),
    ("Clip fractions", ["clip/low", "clip/high", "clip/region"], "share of tokens"),
    ("Step time", ["time/step"], "seconds"),
    ("Held-out evaluation during training", "eval/", "value"),
)
SHOWN = 2  # best and worst completions per chosen step, each


def load_run(folder: str | Path) -> dict[str, Any]:
    """A run folder's files: metrics, completions (if logged), config, eval report (if any)."""
    folder = Path(folder)
    metrics_path = folder / "metrics.jsonl"
    if not metrics_path.is_file():
        raise ConfigError(f"{folder}: not a run folder (no metrics.jsonl)")
    completions = folder / "completions.jsonl"
    config = folder / "config.yaml"
    evaluation = folder / "eval.json"
    return {"name": folder.name, "path": str(folder), "metrics": read_jsonl(metrics_path),
            "completions": read_jsonl(completions) if completions.is_file() else [],
            "config": _read_file(config, yaml.safe_load) or {},
            "eval": _read_file(evaluation, json.loads)}


def _read_file(path: Path, parse) -> Any:
    """`parse` of the text of `path` (None when there is no such file); a damaged file is a `DataError`."""
    if not path.is_file():
        return None
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as exc:  # JSON, YAML and UTF-8 errors
        raise DataError(f"{path}: damaged, cannot be read ({type(exc).__name__}: {exc})") from exc


def series(records: list[dict], key: str) -> list[list[float]]:
    """[[step, value], ...] of the finite values of `key`."""
    return [[r["step"], float(r[key])] for r in records
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def curve_data(runs: Sequence[dict]) -> list[dict]:
    """For each chart: its title and, per run, the series of each of its keys (charts with no data left out)."""
    charts = []
    for title, keys, unit in CURVES:
        lines = {}
        for run in runs:
            names = keys if isinstance(keys, list) else sorted(
                {k for r in run["metrics"] for k in r if k.startswith(keys) and k.endswith(_suffix(keys))})
            for key in names:
                points = series(run["metrics"], key)
                if points:
                    lines[f"{run['name']}: {key}" if len(runs) > 1 or len(names) > 1 else run["name"]] = points
        if lines:
            charts.append({"title": title, "unit": unit, "lines": lines})
    return charts


def _suffix(prefix: str) -> str:
    return "/mean" if prefix == "rewards/" else ""


def chosen_steps(completions: list[dict], count: int = 3) -> list[int]:
    """The first, middle and last logged steps (or all, when there are fewer)."""
    steps = sorted({r["step"] for r in completions})
    if len(steps) <= count:
        return steps
    return sorted({steps[0], steps[len(steps) // 2], steps[-1]})


def completion_data(run: dict, steps: Sequence[int] | None = None) -> dict[int, list[dict]]:
    """step -> its best and worst completions (by total reward)."""
    steps = chosen_steps(run["completions"]) if steps is None else steps
    return {step: extremes([r for r in run["completions"] if r["step"] == step], SHOWN) for step in steps}


def lineage(run: dict) -> dict[str, Any]:
    """Base model, SFT stage / starting adapter, and the repository version of the run's final adapter."""
    config = run["config"]
    info = {"base model": config.get("model", {}).get("name_or_path"),
            "started from adapter": config.get("model", {}).get("adapter"),
            "SFT stage": "yes" if config.get("sft", {}).get("enabled") else "no"}
    final = Path(run["path"]) / "final"
    if (final / "adapter_config.json").is_file() and config:
        info["repository version"] = _version_of(config, final)
    return info


def _version_of(config: dict, folder: Path) -> str | None:
    from rftune.config import config_from_dict
    from rftune.repository.runs import repository_for, version_of_folder

    try:
        repository = repository_for(config_from_dict(config))
    except ConfigError:
        return None
    version = version_of_folder(repository, folder)
    if version is None:
        return None
    return " <- ".join(v.ref for v in repository.lineage(version))


def render(run_folders: Sequence[str | Path], steps: Sequence[int] | None = None) -> str:
    """The report page for `run_folders` (one or more runs)."""
    runs = [load_run(folder) for folder in run_folders]
    charts = curve_data(runs)
    data = {"runs": [r["name"] for r in runs], "charts": charts,
            "eval": {r["name"]: _eval_summary(r["eval"]) for r in runs if r["eval"]},
            "completions": {r["name"]: completion_data(r, steps) for r in runs}}
    body = ["<h1>rftune report: " + html.escape(", ".join(data["runs"])) + "</h1>",
            "<h2>Training</h2>", '<div class="grid">', *(_figure(c) for c in charts), "</div>",
            "<h2>Held-out evaluation</h2>", *(_eval_section(r) for r in runs if r["eval"]),
            "" if data["eval"] else "<p>No eval.json in these runs (run <code>rftune eval CONFIG</code>).</p>",
            "<h2>Completions: best and worst of chosen steps</h2>", *(_completions_section(r, data) for r in runs),
            "<h2>Config and lineage</h2>", *(_config_section(r) for r in runs)]
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>rftune report</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) +
            f"\n<script type=\"application/json\" id=\"rftune-data\">{payload}</script>\n</body></html>\n")


def write_report_page(run_folders: Sequence[str | Path], output: str | Path,
                      steps: Sequence[int] | None = None) -> Path:
    """Render and write the page atomically."""
    from rftune.runtime.atomic_io import write_text_atomic

    return write_text_atomic(output, render(run_folders, steps))


def _eval_summary(report: dict) -> dict | None:
    if "players" not in report:  # a task's own evaluation (e.g. games played): its summary rows and intervals
        return {"rows": report.get("rows"), "intervals": task_intervals(report)}
    return {p["player"]: {"metrics": p["metrics"], "difference": p.get("difference")} for p in report["players"]}


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight",
                metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "rftune", "font.size": 9})
    return plt


def _figure(chart: dict) -> str:
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(5.2, 3.0))
    for label, points in chart["lines"].items():
        steps, values = zip(*points)
        axis.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=label)
    axis.set_title(chart["title"])
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("step")
    axis.set_ylabel(chart["unit"])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    svg = _svg(fig)
    plt.close(fig)
    return f'<figure class="chart">{svg}</figure>'


def _eval_section(run: dict) -> str:
    report = run["eval"]
    if "players" not in report:
        return f"<h3>{html.escape(run['name'])} (the task's own evaluation)</h3>" + _table(
            list(report["rows"][0]), [[_fmt(v) for v in row.values()] for row in report["rows"]]) + _interval_tables(
            task_intervals(report))
    from rftune.evaluation.evaluate import comparison_table, format_interval, metric_order

    players = report["players"]
    metrics = metric_order({m for p in players for m in p["metrics"]})
    header, rows = comparison_table(report, format_interval, minus="−")
    return (f"<h3>{html.escape(run['name'])}: {report['rows']} held-out rows of task {html.escape(report['task'])}"
            "</h3>" + _eval_figure(players, metrics) + _table(header, rows))


def task_intervals(report: dict) -> dict | None:
    """A task's own evaluation's ``intervals``, ``{player: {figure: {"estimate": ..., "difference": ... or None}}}``
    (one entry per figure of its summary rows, e.g. of games played); None when it has none in that form (older
    reports)."""
    intervals = report.get("intervals")
    if not isinstance(intervals, dict) or not intervals or not all(
            isinstance(figures, dict) and all(isinstance(f, dict) and "estimate" in f for f in figures.values())
            for figures in intervals.values()):
        return None
    return intervals


def _interval_tables(intervals: dict | None) -> str:
    """Players x figures, each ``mean [low, high]``; then the later players' paired differences against the first."""
    if not intervals:
        return ""
    from rftune.evaluation.evaluate import format_interval

    names = list(intervals)
    figures = list(dict.fromkeys(f for by_figure in intervals.values() for f in by_figure))

    def rows(key: str, players: list[str], signed: bool) -> list[list[str]]:
        return [[name, *(format_interval((intervals[name].get(f) or {}).get(key), signed=signed) for f in figures)]
                for name in players]

    parts = ["<h4>95% bootstrap intervals</h4>", _table(["player", *figures], rows("estimate", names, False))]
    if len(names) > 1:
        parts += [f"<h4>paired differences against {html.escape(names[0])}</h4>",
                  _table(["player", *figures], rows("difference", names[1:], True))]
    return "".join(parts)


def _eval_figure(players: list[dict], metrics: list[str]) -> str:
    shown = [m for m in metrics if m != "length"]
    if not shown:
        return ""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(max(4.0, 1.1 * len(shown) * len(players) / 2 + 2), 3.0))
    width = 0.8 / len(players)
    for index, player in enumerate(players):
        values = [player["metrics"].get(m) or {"mean": math.nan, "low": math.nan, "high": math.nan} for m in shown]
        means = [v["mean"] for v in values]
        errors = [[v["mean"] - v["low"] for v in values], [v["high"] - v["mean"] for v in values]]
        axis.bar([i + index * width for i in range(len(shown))], means, width, yerr=errors, capsize=3,
                 label=player["player"])
    axis.set_xticks([i + width * (len(players) - 1) / 2 for i in range(len(shown))], shown, rotation=30,
                    ha="right")
    axis.set_title("mean with 95% bootstrap interval")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7)
    svg = _svg(fig)
    plt.close(fig)
    return f'<figure class="chart wide">{svg}</figure>'


def _completions_section(run: dict, data: dict) -> str:
    parts = [f"<h3>{html.escape(run['name'])}</h3>"]
    chosen = data["completions"][run["name"]]
    if not chosen:
        parts.append("<p>No completions.jsonl (train.log_completions was off).</p>")
    for step, rows in chosen.items():
        names = sorted({n for r in rows for n in r["rewards"]})
        body = [[_fmt(r["reward"]), _fmt(r["advantage"]), *(_fmt(r["rewards"].get(n)) for n in names),
                 _prompt_text(r["prompt"]), r["completion"]] for r in rows]
        parts.append(f"<h4>step {step}</h4>" + _table(["reward", "advantage", *names, "prompt", "completion"], body,
                                                       text_columns=2))
    return "\n".join(parts)


def _config_section(run: dict) -> str:
    facts = _table(["", ""], [[k, "-" if v is None else str(v)] for k, v in lineage(run).items()])
    config = html.escape(yaml.safe_dump(run["config"], sort_keys=False)) if run["config"] else "(no config.yaml)"
    return (f"<h3>{html.escape(run['name'])} <small>{html.escape(run['path'])}</small></h3>{facts}"
            f"<details><summary>resolved config</summary><pre>{config}</pre></details>")


def _prompt_text(prompt) -> str:
    if isinstance(prompt, list):
        return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
    return str(prompt)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[str]], text_columns: int = 0) -> str:
    def cells(row, tag):
        return "".join(f'<{tag}{" class=text" if text_columns and i >= len(row) - text_columns else ""}>'
                       f"{html.escape(str(c))}</{tag}>" for i, c in enumerate(row))
    return ("<table><thead><tr>" + cells(header, "th") + "</tr></thead><tbody>" +
            "".join("<tr>" + cells(row, "td") + "</tr>" for row in rows) + "</tbody></table>")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
.grid { display: flex; flex-wrap: wrap; gap: 0.8em; }
figure.chart { margin: 0; } figure.chart svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th.text { text-align: left; }
td.text { text-align: left; white-space: pre-wrap; max-width: 40em; font-family: ui-monospace, monospace; }
pre { background: #f6f6f6; padding: 0.6em; font-size: 0.8em; overflow-x: auto; }
"""
