"""Word lists: the shipped official lists, word validation, and the numpy encoding."""

import numpy as np
import pytest

from rftune.envs.wordle.words import WordList, allowed_words, answer_words, encode, normalize_word, word_list


def test_official_lists_have_the_published_sizes_and_answers_are_allowed():
    answers, allowed = answer_words(), allowed_words()
    assert len(answers) == 2315
    assert len(allowed) == 12972
    assert all(word in allowed for word in answers)
    assert all(len(w) == 5 and w.islower() and w.isalpha() for w in allowed)
    assert "crane" in answers and "soare" not in answers and "soare" in allowed


def test_normalize_word_lowercases_and_rejects_bad_words_by_name():
    assert normalize_word("  CraNe ") == "crane"
    with pytest.raises(ValueError, match="secret must be 5 letters.*'abc'"):
        normalize_word("abc", "secret")
    with pytest.raises(ValueError, match="'cr4ne'"):
        normalize_word("cr4ne")
    with pytest.raises(ValueError, match="got int"):
        normalize_word(12345)


def test_word_list_dedupes_keeps_order_and_indexes():
    words = WordList(["Crane", "slate", "crane"], name="tiny")
    assert words.words == ("crane", "slate")
    assert words.index == {"crane": 0, "slate": 1}
    assert "SLATE" in words and "stale" not in words
    with pytest.raises(ValueError, match="tiny word list"):
        WordList(["toolong"], name="tiny")
    with pytest.raises(ValueError, match="empty"):
        WordList([])


def test_encode_maps_letters_to_indices():
    assert encode(["abcez"]).tolist() == [[0, 1, 2, 4, 25]]
    assert encode([]).shape == (0, 5)
    assert WordList(["crane"]).encoded.dtype == np.uint8


def test_word_list_accepts_lists_and_rejects_a_plain_string():
    assert word_list(None) is allowed_words()
    assert word_list(["crane", "slate"]) is word_list(["crane", "slate"])  # cached
    with pytest.raises(ValueError, match="sequence of words"):
        word_list("crane")


def test_the_spelled_list_is_the_allowed_list_letter_by_letter():
    from importlib.resources import files

    spelled = files("rftune").joinpath("data/wordle/allowed_spelled.txt").read_text().splitlines()
    assert spelled == [" ".join(word) for word in allowed_words().words]
