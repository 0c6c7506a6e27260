"""What a run leaves behind while it trains: metrics.jsonl, completions.jsonl, a live progress line, and the
trackers of ``train.report_to``.

Both JSONL files get one flushed line per record, strict JSON (a NaN or infinity is written as ``null``, "no
value"). On resume they are first cut back to the checkpoint's step, so records of steps that will be redone are
not duplicated. A kill can cut the last line anywhere, even inside a multi-byte character: `read_jsonl` here (and
`rftune.runtime.jsonl` with ``log=True``) works on bytes and drops that partial last line, for resume and for
every reader of a run's files (the report, the repository) alike.

`Trackers` sends every metrics record to metrics.jsonl (always) and to each configured tracker with the same keys
and step numbers: ``tensorboard`` (event files in ``<run>/tensorboard``, via ``torch.utils.tensorboard``; scalars
per step and a text summary of each step's best and worst completions; a resumed run purges the redone steps) and
``wandb`` (a run in ``<run>/wandb``, offline unless ``WANDB_MODE`` says otherwise: metrics, the resolved config,
a table of the best and worst completions) and ``trackio`` (TRL's default tracker: a run named after the run folder
in project ``$TRACKIO_PROJECT`` or ``rftune``, stored where trackio keeps its projects, ``$TRACKIO_DIR`` or its
cache; ``trackio show`` opens the dashboard; metrics and the resolved config). Only finite numbers go to the
trackers. A tracker whose library is not
installed is a `ConfigError` at start (`check_trackers`), naming the extra to install.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from rftune.errors import ConfigError
from rftune.runtime.atomic_io import storage_errors, write_bytes_atomic
from rftune.runtime.jsonl import jsonl_rows

# name -> the module that must import for it
TRACKERS = {"jsonl": None, "tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
SHOWN_COMPLETIONS = 2  # best and worst completions of a step sent to the trackers, each


class JsonlLog:
    """Append-only JSONL file of records that carry a ``step`` field."""

    def __init__(self, path: str | Path, keep_through_step: int | None = None):
        self.path = Path(path)
        with storage_errors(self.path, "the log"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if keep_through_step is not None and self.path.exists():
                self._truncate(keep_through_step)
            self._handle = self.path.open("a", encoding="utf-8")

    def _truncate(self, last_step: int) -> None:
        kept = [row.raw for row in jsonl_rows(self.path, log=True, skip_bad=True)  # a line cut by a kill is dropped
                if row.record.get("step", 0) <= last_step]
        write_bytes_atomic(self.path, b"".join(raw + b"\n" for raw in kept))

    def write(self, records: list[dict[str, Any]]) -> None:
        with storage_errors(self.path, "the log"):
            for record in records:
                self._handle.write(json.dumps(_no_nan(record), ensure_ascii=False, default=_jsonable,
                                              allow_nan=False) + "\n")
            self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def read_jsonl(path: str | Path) -> list:
    """The records of a run's JSONL log (a last line cut short by a kill is left out; other damage is an error)."""
    return [row.record for row in jsonl_rows(path, log=True)]


def _no_nan(value):
    """`value` with every NaN or infinite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(item) for item in value]
    return value


def format_progress(metrics: dict[str, float], max_steps: int) -> str:
    """One line: step, reward mean, KL, completion length, seconds per step."""
    def number(key, fmt):
        value = metrics.get(key)
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    return (f"step {metrics['step']}/{max_steps} | reward {number('reward/mean', '.3f')} "
            f"± {number('reward/std', '.3f')} | kl {number('kl', '.4f')} | len {number('completion_len/mean', '.1f')} "
            f"| {number('time/step', '.1f')} s/step")


def print_progress(metrics: dict[str, float], max_steps: int, stream: TextIO | None = None) -> None:
    """One progress line to `stream` (default: the current sys.stderr, looked up at each call)."""
    print(format_progress(metrics, max_steps), file=stream or sys.stderr, flush=True)


def check_trackers(names) -> None:
    """Every tracker in `names` is known and its library importable; else a ConfigError naming the extra."""
    import importlib

    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"train.report_to: unknown tracker {name!r}; use {', '.join(TRACKERS)}")
        module = TRACKERS[name]
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"train.report_to: {name} needs the {module} package, which is not installed "
                              f"({exc}); pip install 'rftune[{name}]'") from exc


class Trackers:
    """metrics.jsonl plus the trackers of `names`; `write` sends each record to all of them."""

    def __init__(self, output_dir: str | Path, names, config: dict, keep_through_step: int | None = None):
        check_trackers(names)
        self.output_dir = Path(output_dir)
        self.jsonl = JsonlLog(self.output_dir / "metrics.jsonl", keep_through_step)
        self.tensorboard = self._tensorboard(keep_through_step) if "tensorboard" in names else None
        self.wandb = self._wandb(config) if "wandb" in names else None
        self.trackio = self._trackio(config) if "trackio" in names else None

    def _tensorboard(self, keep_through_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        purge = keep_through_step + 1 if keep_through_step else None
        return SummaryWriter(log_dir=str(self.output_dir / "tensorboard"), purge_step=purge)

    def _wandb(self, config: dict):
        import os

        import wandb

        return wandb.init(mode=os.environ.get("WANDB_MODE", "offline"), dir=str(self.output_dir),
                          project=os.environ.get("WANDB_PROJECT", "rftune"), name=self.output_dir.name,
                          config=config)

    def _trackio(self, config: dict):
        import os

        import trackio

        return trackio.init(project=os.environ.get("TRACKIO_PROJECT", "rftune"), name=self.output_dir.name,
                            config=config, resume="allow", embed=False, auto_log_gpu=False, auto_log_cpu=False)

    def write(self, records: list[dict[str, Any]]) -> None:
        self.jsonl.write(records)
        for record in records:
            step = int(record["step"])
            scalars = {k: float(v) for k, v in record.items()
                       if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v)}
            if self.tensorboard is not None:
                for key, value in scalars.items():
                    self.tensorboard.add_scalar(key, value, step)
                self.tensorboard.flush()
            if self.wandb is not None:
                self.wandb.log(scalars, step=step)
            if self.trackio is not None:
                self.trackio.log(scalars, step=step)

    def log_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        """The step's best and worst completions (by total reward) as text (TensorBoard) and a table (W&B)."""
        if self.tensorboard is None and self.wandb is None:
            return
        chosen = extremes(rows, SHOWN_COMPLETIONS)
        if self.tensorboard is not None:
            lines = ["| reward | advantage | completion |", "|---|---|---|"]
            lines += [f"| {r['reward']:.3f} | {r['advantage']:.3f} | {_cell(r['completion'])} |" for r in chosen]
            self.tensorboard.add_text("completions", "\n".join(lines), step)
            self.tensorboard.flush()
        if self.wandb is not None:
            import wandb

            table = wandb.Table(columns=["step", "reward", "advantage", "completion"],
                                data=[[step, r["reward"], r["advantage"], r["completion"]] for r in chosen])
            self.wandb.log({"completions": table}, step=step)

    def close(self) -> None:
        self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.trackio is not None:
            self.trackio.finish()


def extremes(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The `count` highest- then the `count` lowest-reward rows (each row once)."""
    ranked = sorted(rows, key=lambda r: r["reward"], reverse=True)
    return ranked if len(ranked) <= 2 * count else ranked[:count] + ranked[-count:]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]
