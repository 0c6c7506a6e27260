"""Dataset files, prompt normalisation, and the resumable prompt stream."""

import json

import pytest

from rftune.errors import DataError
from rftune.tasks.data import PromptStream, load_dataset_file


def test_jsonl_text_and_message_prompts(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"prompt": "hi", "answer": 1},
            {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "answer": 2}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    samples = load_dataset_file(path, system_prompt="be brief")
    assert samples[0].prompt == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert samples[1].prompt[0] == {"role": "system", "content": "s"}  # an existing system message is kept
    assert samples[1].example["answer"] == 2 and samples[1].index == 1


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "ok"}\n{"prompt": oops}', r"d.jsonl:2: invalid JSON"),
    ('{"prompt": "ok"}\n{"question": "x"}', r"d.jsonl:2: missing 'prompt' \(columns: question\)"),
    ('{"prompt": ""}', r"d.jsonl:1: 'prompt' is empty"),
    ('{"prompt": [{"role": "robot", "content": "x"}]}', r"d.jsonl:1: prompt message 0 must be"),
    ('{"prompt": 5}', r"d.jsonl:1: 'prompt' must be text or a non-empty list"),
    ('[1, 2]', r"d.jsonl:1: expected an object"),
])
def test_malformed_rows_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text(line)
    with pytest.raises(DataError, match=message):
        load_dataset_file(path)


def test_csv_and_parquet(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('prompt,answer\nwhat is 2+2,4\n"[{""role"": ""user"", ""content"": ""x""}]",5\n,6\n')
    with pytest.raises(DataError, match=r"d.csv:4: 'prompt' is empty"):
        load_dataset_file(csv_path)
    csv_path.write_text('prompt,answer\nwhat is 2+2,4\n"[{""role"": ""user"", ""content"": ""x""}]",5\n')
    samples = load_dataset_file(csv_path)
    assert samples[0].example["answer"] == "4" and samples[1].prompt == [{"role": "user", "content": "x"}]
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"prompt": ["a", None], "answer": [1, 2]}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d.parquet: row 1: 'prompt' must be text"):
        load_dataset_file(tmp_path / "d.parquet")


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset_file(tmp_path / "none.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported dataset format"):
        load_dataset_file(tmp_path / "d.txt")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_dataset_file(tmp_path / "e.jsonl")


def test_prompt_stream_is_a_permutation_per_epoch_and_resumes():
    stream = PromptStream(5, seed=3)
    first = stream.take(5)
    assert sorted(first) == [0, 1, 2, 3, 4]
    rest = stream.take(7)
    assert sorted(rest[:5]) == [0, 1, 2, 3, 4] and stream.position == 12
    resumed = PromptStream(5, seed=3, position=7)
    assert resumed.take(5) == (first + rest)[7:12]
    assert PromptStream(5, seed=4).take(5) != first or PromptStream(5, seed=5).take(5) != first


def test_unshuffled_prompt_stream_keeps_the_dataset_order_every_epoch_and_resumes():
    stream = PromptStream(4, seed=3, shuffle=False)
    assert stream.take(6) == [0, 1, 2, 3, 0, 1] and stream.position == 6
    assert PromptStream(4, seed=9, position=6, shuffle=False).take(3) == [2, 3, 0]
