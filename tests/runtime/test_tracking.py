"""Trackers: TensorBoard event files and W&B offline run files, read back with their own formats, hold exactly the
keys, steps and values of metrics.jsonl (and so does the run's report); a tracker that is not installed stops the
run before anything loads."""

import glob
import json
import math
import struct
import sys

import pytest
import yaml

from rftune.cli import main
from rftune.config import config_from_dict
from rftune.errors import ConfigError
from rftune.runtime.tracking import check_trackers


def finite_series(records):
    """key -> [(step, value)] of the finite numbers in metrics.jsonl records."""
    series = {}
    for record in records:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                series.setdefault(key, []).append((record["step"], float(value)))
    return series


def wandb_records(path):
    """Protobuf records of a W&B ``.wandb`` file (a LevelDB-style log of 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if left < 7 or (kind == 0 and length == 0):
            position += left
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_tensorboard_and_wandb_hold_what_metrics_jsonl_holds(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"prompt": f"Say {i}"}) + "\n" for i in range(12)))
    config = {"model": {"name_or_path": tiny_model_dir}, "lora": {"r": 2, "alpha": 4},
              "generation": {"num_generations": 2, "max_new_tokens": 3},
              "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 4, "save_steps": 0,
                        "eval_steps": 2, "report_to": ["jsonl", "tensorboard", "wandb"]},
              "task": {"name": "dataset", "path": str(tmp_path / "rows.jsonl")},
              "rewards": {"functions": [{"name": "length_penalty", "kwargs": {"target": 1}}]},
              "eval": {"split": 0.3, "num_rows": 2}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    run = tmp_path / "run"
    expected = finite_series([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()])
    assert "eval/reward" in expected and "reward/mean" in expected

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    assert set(events.Tags()["scalars"]) == set(expected)
    for key, series in expected.items():
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in series], key
        assert [v for _, v in got] == pytest.approx([v for _, v in series], rel=1e-6, abs=1e-6), key
    assert [e.step for e in events.Tensors("completions/text_summary")] == [1, 2]

    (wandb_file,) = glob.glob(str(run / "wandb" / "offline-run-*" / "run-*.wandb"))
    history = {}
    for record in wandb_records(wandb_file):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for key, value in items.items():
                if not key.startswith("_") and not key.startswith("completions"):
                    history.setdefault(key, []).append((items["_step"], value))
            if any(key.startswith("completions/") for key in items):
                assert items["completions/nrows"] == 4 and items["completions/ncols"] == 4
    assert set(history) == set(expected)
    for key, series in expected.items():
        assert history[key] == [(s, pytest.approx(v, rel=1e-9)) for s, v in series], key

    # the report of this run draws these same numbers, and names the version the run registered
    from rftune.testing import report_page_data as page_data

    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    charts = {c["title"]: c["lines"] for c in page_data(page)["charts"]}
    assert charts["Reward (total)"] == {"run": [list(point) for point in expected["reward/mean"]]}
    assert charts["Held-out evaluation during training"]["run: eval/reward"] == [
        list(point) for point in expected["eval/reward"]]
    assert "run@1" in page


def test_a_tracker_that_is_not_installed_is_an_error_at_start(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ConfigError, match=r"train.report_to: wandb needs the wandb package.*rftune\[wandb\]"):
        check_trackers(["jsonl", "wandb"])
    from rftune.train.trainer import GRPOTrainer

    config = config_from_dict({"model": {"name_or_path": str(tmp_path / "no-such-model")},
                               "train": {"output_dir": str(tmp_path / "run"), "report_to": ["wandb"]}})
    with pytest.raises(ConfigError, match="wandb needs the wandb package"):  # before the (missing) model loads
        GRPOTrainer(config, reward_funcs=[lambda prompt, completion, example: 1.0], dataset=[{"prompt": "Hi"}])
    with pytest.raises(ConfigError, match="train.report_to\\[0\\]: must be one of 'jsonl', 'tensorboard', 'wandb'"):
        config_from_dict({"train": {"report_to": ["mlflow"]}})

