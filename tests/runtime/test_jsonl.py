"""rftune.runtime.jsonl: the one JSONL reader, strict for user data, tolerant of a log's cut-short line."""

import pytest

from rftune.errors import DataError
from rftune.runtime.jsonl import jsonl_rows, read_jsonl


def test_rows_say_where_they_were_read_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2} \n', encoding="utf-8")
    rows = list(jsonl_rows(path))
    assert [(row.where, row.raw, row.record) for row in rows] == [
        (f"{path}:1", b'{"a": 1}', {"a": 1}), (f"{path}:4", b'{"a": 2} ', {"a": 2})]


def test_a_broken_line_names_its_file_and_line_unless_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st', encoding="utf-8")  # the last line cut short by a kill
    with pytest.raises(DataError, match=rf"^{path}:3: invalid JSON"):
        read_jsonl(path)
    assert read_jsonl(path, log=True) == [{"step": 1}, {"step": 2}]  # a log's cut last line is left out
    assert read_jsonl(path, skip_bad=True) == [{"step": 1}, {"step": 2}]


def test_a_log_cut_inside_a_multibyte_character_loses_only_its_last_line(tmp_path):
    path = tmp_path / "completions.jsonl"
    path.write_bytes('{"p": "é"}\n{"p": "日本"}\n'.encode() + '{"p": "日本"}'.encode()[:-4])  # cut inside 本
    assert read_jsonl(path, log=True) == [{"p": "é"}, {"p": "日本"}]
    with pytest.raises(DataError, match=rf"^{path}:3: not UTF-8 text"):
        read_jsonl(path)


def test_damage_before_the_last_line_is_an_error_even_in_a_log(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: invalid JSON"):
        read_jsonl(path, log=True)
