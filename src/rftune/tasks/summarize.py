"""Summarising long documents, scored by a quiz from an LLM judge plus penalties against reward hacking.

Rows come from a JSONL file with a ``document`` column (and optionally ``reference``, a reference summary, and
``title``); by default the shipped demo set of public-domain State of the Union addresses (`data/summarize`).
The prompt asks for a concise bulleted summary. Default rewards: ``quiz`` (fraction of a judge-written quiz on the
document answered correctly from the summary alone) plus ``length_penalty``; copying is watched with the
``copy_fraction`` metric (share of the summary's word 4-grams found in the document), logged every step.

Options (``task.kwargs``): ``max_document_chars`` cuts long documents for small CPU runs (0 = keep whole);
``length_target`` (characters) for the default length penalty.

Held-out documents: by default a fifth of the documents, chosen by a seeded hash of the document text
(``eval.split``, ``eval.split_seed``), or the documents of ``task.eval_path``; training never sees them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rftune.config import RewardSpec
from rftune.errors import DataError
from rftune.rewards.text import copy_fraction
from rftune.runtime.jsonl import jsonl_rows
from rftune.tasks import Task, check_options
from rftune.tasks.data import samples_from_rows

SYSTEM_PROMPT = "You write faithful, concise summaries."
PROMPT = ("Summarize the following document as 3 to 6 short bullet points covering its main facts and decisions. "
          "Use your own words.\n\n<document>\n{document}\n</document>")
KNOWN_OPTIONS = {"max_document_chars", "length_target"}
HELD_OUT_SHARE = 0.2  # documents held out for evaluation unless eval.split says otherwise


def demo_path() -> Path:
    return Path(str(resources.files("rftune") / "data" / "summarize" / "sotu_demo.jsonl"))


def build(options: dict, system_prompt: str | None, path: str | None, base_dir: str) -> Task:
    check_options("summarize", options, KNOWN_OPTIONS)
    file = _resolve(path, base_dir)
    limit = int(options.get("max_document_chars", 0))
    rows = (_row(where, record, limit) for where, record in _records(file))
    target = int(options.get("length_target", 600))
    rewards = [RewardSpec(name="quiz", weight=1.0),
               RewardSpec(name="length_penalty", weight=1.0, kwargs={"target": target, "floor": -10.0})]
    return Task(samples=samples_from_rows(rows, system_prompt or SYSTEM_PROMPT), default_rewards=rewards,
                completion_metrics={"copy_fraction": _copy_metric}, content_key=_document_key,
                default_split=HELD_OUT_SHARE)


def _document_key(example: dict) -> str:
    return example["document"]


def _copy_metric(prompt, completion: str, example: dict) -> float:
    return copy_fraction(completion, example["document"])


def _resolve(path: str | None, base_dir: str) -> Path:
    if path is None:
        return demo_path()
    file = Path(path)
    return file if file.is_absolute() or file.exists() else Path(base_dir) / file


def _records(file: Path):
    if not file.is_file():
        raise DataError(f"summarize data file not found: {file}")
    return ((row.where, row.record) for row in jsonl_rows(file))


def _row(where: str, record: dict, limit: int) -> tuple[str, dict]:
    document = record.get("document") if isinstance(record, dict) else None
    if not isinstance(document, str) or not document.strip():
        raise DataError(f"{where}: needs a non-empty 'document' text")
    if limit:
        document = document[:limit]
    return where, {**record, "document": document, "prompt": PROMPT.format(document=document)}
