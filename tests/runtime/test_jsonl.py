"""rftune.runtime.jsonl: the one JSONL reader, strict for user data, tolerant of a log's cut-short line."""

import pytest

from rftune.errors import DataError
from rftune.runtime.jsonl import jsonl_rows, read_jsonl


def test_rows_say_where_they_were_read_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2} \n', encoding="utf-8")
    rows = list(jsonl_rows(path))
    assert [(row.where, row.text, row.record) for row in rows] == [
        (f"{path}:1", '{"a": 1}', {"a": 1}), (f"{path}:4", '{"a": 2} ', {"a": 2})]


def test_a_broken_line_names_its_file_and_line_unless_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st', encoding="utf-8")  # the last line cut short by a kill
    with pytest.raises(DataError, match=rf"^{path}:3: invalid JSON"):
        read_jsonl(path)
    assert read_jsonl(path, skip_broken=True) == [{"step": 1}, {"step": 2}]
