"""judge_score and quiz rewards with a deterministic scripted judge; one slow test with the real default model."""

import json
import re

import pytest

from rftune.errors import ConfigError
from rftune.judges.cache import CachedJudge, JudgeCache
from rftune.rewards import as_reward_function, resolve_reward, score_completions
from rftune.rewards.builtin import length_penalty
from rftune.rewards.judge import (
    DraftQuestion,
    answer_messages,
    judge_score,
    make_quizzes,
    parse_quiz,
    quiz,
    shuffle_options,
)
from rftune.rewards.text import copy_penalty

TEXT = re.compile(r"<text>\n(.*)\n</text>", re.DOTALL)
OPTION = re.compile(r"^([A-D])\) (.*)$", re.MULTILINE)


class ScriptedJudge:
    """Writes quizzes with `writer(prompt)`, scores with `scorer(prompt)`, and answers quiz questions honestly:
    the option whose text occurs in the given text (case-insensitive), else E. Records every prompt."""

    def __init__(self, writer=None, scorer=None, identity="scripted", fail_on=None):
        self.writer, self.scorer, self.fail_on = writer, scorer, fail_on
        self.cache_identity = identity
        self.prompts = []

    def complete(self, messages):
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        if "<text>" in prompt:
            text = TEXT.search(prompt).group(1)
            if self.fail_on and self.fail_on in text:
                return None
            found = [letter for letter, option in OPTION.findall(prompt) if option.lower() in text.lower()]
            return f"<answer>{found[0] if found else 'E'}</answer>"
        if "<document>" in prompt and "multiple-choice" in prompt:
            return self.writer(prompt)
        return self.scorer(prompt)

    def complete_many(self, batch):
        return [self.complete(messages) for messages in batch]

    def count(self, marker):
        return sum(marker in prompt for prompt in self.prompts)


def question(text, correct, *wrong):
    return {"question": text, "correct_answer": correct, "wrong_answers": list(wrong)}


def quiz_reply(*questions):
    return "Here is the quiz:\n```json\n" + json.dumps({"questions": list(questions)}) + "\n```"


HARBOUR = (
    "Report of the Harbour Council of Veldmark. After the great storm the old harbour wall was rebuilt in 1911 with "
    "granite from the northern quarries, because the sandstone of the first wall had crumbled within a decade. The "
    "lighthouse on the western mole now runs on electric arc lamps, and its keepers no longer haul oil up the "
    "tower. The ferry to Osterholm leaves twice a day, at dawn and at dusk, and carries mail as well as "
    "passengers. The duty on imported salt was cut by half to help the fish curers of the lower town. The council "
    "also records, at length, the names of every captain who brought a ship into the new basin in its first year, "
    "the weather on each day of the opening week, the colours of the bunting on the customs house, the order of "
    "the procession from the town hall to the quay, the speeches of the mayor and of the harbour master, the hymn "
    "sung by the school children, the price of the commemorative medals, and the menu of the dinner held in the "
    "evening for the builders and their families, with the thanks of the council to all who took part in it."
)
HARBOUR_QUIZ = [
    question("What stone was the new harbour wall built with?", "granite", "sandstone blocks", "marble",
             "brick"),
    question("When was the harbour wall rebuilt?", "1911", "1899", "1925", "1870"),
    question("What lights the lighthouse now?", "electric arc lamps", "whale oil", "gas mantles", "candles"),
    question("When does the ferry to Osterholm leave?", "at dawn and at dusk", "at noon", "every hour",
             "on Sundays only"),
    question("What happened to the duty on imported salt?", "cut by half", "doubled", "abolished",
             "left unchanged"),
]
GOOD_SUMMARY = ("Veldmark rebuilt its harbour wall in granite in 1911 after a storm; the lighthouse now uses "
                "electric arc lamps; the ferry to Osterholm sails at dawn and at dusk.")


def harbour_judge(**options):
    return ScriptedJudge(writer=lambda prompt: quiz_reply(*HARBOUR_QUIZ), **options)


def test_option_shuffle_is_deterministic_per_seed_and_tracks_the_correct_letter():
    draft = DraftQuestion.model_validate(HARBOUR_QUIZ[0])
    assert shuffle_options(draft, seed=3) == shuffle_options(draft, seed=3)
    letters = set()
    for seed in range(20):
        shuffled = shuffle_options(draft, seed)
        assert sorted(shuffled.options) == sorted(["granite", "sandstone blocks", "marble", "brick"])
        assert shuffled.options["ABCD".index(shuffled.answer)] == "granite"
        letters.add(shuffled.answer)
    assert len(letters) > 1  # the correct answer does not always land on the same letter


def test_parse_quiz_tolerates_chatter_and_drops_invalid_questions():
    reply = quiz_reply(HARBOUR_QUIZ[1],
                       question("Two wrong answers only?", "yes", "no", "maybe"),
                       question("Same option twice?", "granite", "Granite ", "marble", "brick"),
                       question("   ", "a", "b", "c", "d"),
                       {"question": "No answers"})
    assert [d.question for d in parse_quiz(reply)] == ["When was the harbour wall rebuilt?"]
    assert len(parse_quiz("Sure! " + json.dumps([HARBOUR_QUIZ[0]]) + " Hope it helps.")) == 1
    for unusable in (None, "", "no JSON here", "{broken", '{"questions": "none"}'):
        assert parse_quiz(unusable) == []


def test_quiz_keeps_only_questions_answered_from_the_source_and_asks_again_for_the_rest():
    hallucinated = question("Who designed the lighthouse?", "Anna Berg", "Carl Dahl", "Eva Lund", "Olaf Ek")
    rounds = iter([quiz_reply(HARBOUR_QUIZ[0], HARBOUR_QUIZ[1], hallucinated),
                   quiz_reply(HARBOUR_QUIZ[0], HARBOUR_QUIZ[2])])
    judge = ScriptedJudge(writer=lambda prompt: next(rounds))
    (kept,) = make_quizzes([HARBOUR], judge, num_questions=3, max_rounds=3).values()
    assert [q.question for q in kept] == [HARBOUR_QUIZ[i]["question"] for i in (0, 1, 2)]
    writes = [p for p in judge.prompts if "<document>" in p]
    assert len(writes) == 2
    assert "Write 3 multiple-choice questions" in writes[0] and "Do not repeat" not in writes[0]
    assert "Write 1 multiple-choice question " in writes[1] and "- Who designed the lighthouse?" in writes[1]


def test_quiz_gives_up_after_max_rounds_and_scores_none():
    nonsense = question("Who designed the lighthouse?", "Anna Berg", "Carl Dahl", "Eva Lund", "Olaf Ek")
    judge = ScriptedJudge(writer=lambda prompt: quiz_reply(nonsense))
    assert quiz(["p"], [GOOD_SUMMARY], judge=judge, max_rounds=2, document=[HARBOUR]) == [None]
    assert judge.count("<document>") == 2


def test_quiz_reward_is_the_share_answered_from_the_completion_alone():
    judge = harbour_judge()
    rewards = quiz(["p"] * 3, [GOOD_SUMMARY, "The harbour was rebuilt.", ""], judge=judge, seed=1,
                   document=[HARBOUR] * 3, id=[1, 1, 1])
    assert rewards == [pytest.approx(4 / 5), 0.0, 0.0]


def test_quiz_is_written_once_per_document_and_cached_across_calls_and_judges(tmp_path):
    other = "The mill at Brask grinds rye. It was built in 1850 of oak."
    writer = {HARBOUR: quiz_reply(*HARBOUR_QUIZ),
              other: quiz_reply(question("What does the mill grind?", "rye", "wheat", "barley", "oats"))}

    def make():
        scripted = ScriptedJudge(writer=lambda prompt: next(v for k, v in writer.items() if k in prompt))
        return scripted, CachedJudge(scripted, JudgeCache(tmp_path / "judge.sqlite"))

    scripted, judge = make()
    docs = [HARBOUR, HARBOUR, other, other]
    first = quiz(["p"] * 4, [GOOD_SUMMARY, "", "rye bread", "wheat"], judge=judge, max_rounds=1, document=docs)
    assert first == [pytest.approx(0.8), 0.0, 1.0, 0.0]
    assert scripted.count("<document>") == 2  # one quiz per document, not per completion
    asked = len(scripted.prompts)
    assert quiz(["p"] * 4, [GOOD_SUMMARY, "", "rye bread", "wheat"], judge=judge, max_rounds=1,
                document=docs) == first
    assert len(scripted.prompts) == asked  # quizzes and answers all came from the cache
    scripted_again, judge_again = make()
    assert quiz(["p"], ["oats and rye"], judge=judge_again, max_rounds=1, document=[other]) == [1.0]
    assert scripted_again.count("<document>") == 0 and len(scripted_again.prompts) == 1
    assert judge.stats.snapshot()["judge/cache_hits"] + judge_again.stats.snapshot()["judge/cache_hits"] > 0


def test_a_judge_failure_on_a_completion_gives_none():
    judge = harbour_judge(fail_on="UNANSWERABLE")
    assert quiz(["p", "p"], ["UNANSWERABLE", GOOD_SUMMARY], judge=judge, document=[HARBOUR] * 2)[0] is None


def test_quiz_needs_the_document_column():
    with pytest.raises(ConfigError, match="'document'"):
        quiz(["p"], ["x"], judge=harbour_judge(), title=["t"])


def test_unreadable_answers_count_as_wrong_and_as_parse_failures():
    class Mumbling(ScriptedJudge):
        def complete(self, messages):
            reply = super().complete(messages)
            return "hmm, hard to say" if "GARBLED" in messages[-1]["content"] and "<text>" in messages[-1][
                "content"] else reply

    judge = Mumbling(writer=lambda prompt: quiz_reply(*HARBOUR_QUIZ))
    assert quiz(["p"], ["GARBLED " + GOOD_SUMMARY], judge=judge, document=[HARBOUR]) == [0.0]
    assert judge.stats.snapshot()["judge/parse_failures"] == 5


def test_judge_score_parses_scores_and_counts_failures():
    replies = iter(["Faithful and short. <score>8</score>", "I cannot grade this.", None])
    judge = ScriptedJudge(scorer=lambda prompt: next(replies))
    scores = judge_score(["Summarise."] * 3, ["a", "b", "c"], judge=judge, document=["SRC"] * 3,
                         reference=["REF", None, None])
    assert scores == [pytest.approx(0.8), None, None]
    assert judge.stats.snapshot()["judge/parse_failures"] == 1
    assert "<document>\nSRC\n</document>" in judge.prompts[0] and "<reference>\nREF" in judge.prompts[0]
    assert "<response>\na\n</response>" in judge.prompts[0] and "<reference>" not in judge.prompts[1]


def test_judge_score_shows_the_task_when_there_is_no_source():
    judge = ScriptedJudge(scorer=lambda prompt: "<score>3</score>")
    prompt = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Write a haiku about rain."}]
    assert judge_score([prompt], ["drip"], judge=judge, rubric="Is it a haiku?", scale=5) == [pytest.approx(0.6)]
    assert "<task>\nWrite a haiku about rain.\n</task>" in judge.prompts[0] and "Rubric: Is it a haiku?" in \
        judge.prompts[0]


def test_rewards_resolve_by_name_and_score_through_the_batched_convention():
    assert resolve_reward("quiz") is quiz and resolve_reward("judge_score") is judge_score
    functions = [as_reward_function(quiz, kwargs={"judge": harbour_judge(), "num_questions": 5}),
                 as_reward_function(length_penalty, kwargs={"target": 400})]
    examples = [{"prompt": "Summarise.", "document": HARBOUR, "id": "h", "title": "Harbour"}] * 2
    rewards, failures = score_completions(functions, ["Summarise."] * 2, [GOOD_SUMMARY, HARBOUR], examples)
    assert rewards[:, 0].tolist() == [pytest.approx(0.8), 1.0]
    assert failures == {"quiz": 0, "length_penalty": 0}


def hacking_example():
    """The numbers of docs/reward_hacking.md: quiz + length penalty (target 400 chars) + copy penalty."""
    judge = harbour_judge()
    completions = {"copy of the source": HARBOUR, "concise summary": GOOD_SUMMARY}
    quiz_scores = quiz(["p"] * 2, list(completions.values()), judge=judge, document=[HARBOUR] * 2)
    rows = {}
    for (name, text), quiz_score in zip(completions.items(), quiz_scores):
        rows[name] = {"chars": len(text), "quiz": quiz_score,
                      "length_penalty": length_penalty("p", text, {}, target=400),
                      "copy_penalty": copy_penalty("p", text, {"document": HARBOUR})}
    return rows


def test_copying_the_source_wins_the_quiz_but_loses_once_length_is_penalised():
    rows = hacking_example()
    copy, summary = rows["copy of the source"], rows["concise summary"]
    assert copy["quiz"] == 1.0 and summary["quiz"] == pytest.approx(0.8)  # the hack wins the quiz alone
    assert copy["chars"] == len(HARBOUR) == 1069 and summary["chars"] == 161
    assert copy["length_penalty"] == pytest.approx((400 - 1069) / 400) and summary["length_penalty"] == 0.0
    assert copy["quiz"] + copy["length_penalty"] == pytest.approx(-0.6725)  # 1 - 1.6725
    assert copy["quiz"] + copy["length_penalty"] < summary["quiz"] + summary["length_penalty"] == 0.8
    # 3 of the summary's 26 word 4-grams occur in the source ("the ferry to osterholm", "at dawn and at", ...)
    assert copy["copy_penalty"] == -1.0 and summary["copy_penalty"] == pytest.approx(-3 / 26)


def test_answer_prompt_offers_dont_know():
    shuffled = shuffle_options(DraftQuestion.model_validate(HARBOUR_QUIZ[0]), 0)
    prompt = answer_messages("some text", shuffled)[-1]["content"]
    assert "E) I don't know" in prompt and "<answer>X</answer>" in prompt


@pytest.mark.slow
def test_the_default_model_as_a_local_judge_returns_numbers_or_none(tmp_path):
    from rftune.judges import clear_judges, make_judge

    judge = make_judge({"backend": "local", "max_tokens": 96, "cache_path": str(tmp_path / "judge.sqlite")})
    try:
        document = "The city of Brask built a stone bridge over the river Ell in 1850. It has three arches."
        scores = judge_score(["Summarise."], ["Brask built a three-arch bridge in 1850."], judge=judge,
                             document=[document])
        quiz_scores = quiz(["Summarise."], ["Brask built a three-arch bridge in 1850."], judge=judge,
                           num_questions=1, max_rounds=1, document=[document])
        for value in scores + quiz_scores:
            assert value is None or 0.0 <= value <= 1.0
    finally:
        clear_judges()


def test_the_summarisation_demo_data_is_well_formed():
    from importlib.resources import files

    folder = files("rftune") / "data" / "summarize"
    raw = (folder / "sotu_demo.jsonl").read_bytes()
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert len(raw) < 1_500_000 and 8 <= len(rows) <= 12
    assert all(set(row) == {"id", "title", "document"} for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)
    assert all(len(row["document"].split()) > 2000 for row in rows)
    assert "public domain" in (folder / "NOTICE").read_text()
