"""Rewards scored by an LLM judge: a rubric score, and a quiz that a summary must let the judge answer.

Both are batched rewards (``f(prompts, completions, **columns)``): all judge prompts of a batch go to the judge in
one ``complete_many`` call, so an endpoint judge answers them concurrently and a local one in batches. The
``judge`` option is a judge spec dict (see `rftune.judges.factory`) or a judge object; None is the local default.

``judge_score``: the judge grades each completion against ``rubric`` (seeing the source document and a reference
answer when the row has them, else the task prompt) and replies ``<score>N</score>`` on 0..``scale``; the
reward is N / scale. A judge failure or an unreadable score gives ``None`` (counted in the judge's ``stats``).

``quiz`` (per document, cached): the judge writes ``num_questions`` multiple-choice questions from the source as
JSON (question, correct answer, three wrong answers; validated with pydantic). rftune shuffles the four options
with ``seed`` and keeps the letter of the correct one; the judge then answers each question from the source
alone and only questions it gets right are kept. Rounds repeat (each asking for the missing number and listing
the questions already seen, so a greedy judge writes new ones) until ``num_questions`` are kept or
``max_rounds`` are spent. A completion is scored by having the judge answer every kept question from the
completion alone, with "E: the text does not say" allowed; reward = share answered correctly. An unreadable
answer counts as wrong (and as a parse failure); a judge failure on any question, or a document without a single
kept question, gives ``None``. Quizzes are stored in the judge's cache file when its spec has ``cache_path``
(else in memory for the life of the judge); documents with no kept question are not stored, so they are tried
again on the next batch.

Copying the whole source into the completion earns a perfect quiz score: pair ``quiz`` with ``length_penalty``
or ``copy_penalty`` (see docs/reward_hacking.md).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import weakref
from typing import Any, Sequence

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from rftune.errors import ConfigError
from rftune.judges.base import Judge, judge_counters
from rftune.judges.cache import JudgeCache, cache_key
from rftune.judges.factory import resolve_judge
from rftune.judges.parsing import parse_choice, parse_score
from rftune.rewards.base import completion_texts
from rftune.rewards.registry import register_reward

DEFAULT_RUBRIC = ("Judge how well the response does the task: it must be accurate (faithful to the source "
                  "document and the reference answer when given), cover what matters, and be clear and concise.")
LETTERS = "ABCD"
DONT_KNOW = "E"
QUIZ_FORMAT_VERSION = 1  # part of the quiz cache key; bump when the quiz prompts change

_memory_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class DraftQuestion(BaseModel):
    """A question as the judge writes it, before rftune shuffles the options."""

    question: str = Field(min_length=1)
    correct_answer: str = Field(min_length=1)
    wrong_answers: list[str] = Field(min_length=3, max_length=3)

    @field_validator("question", "correct_answer")
    @classmethod
    def _strip(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @model_validator(mode="after")
    def _distinct_options(self) -> "DraftQuestion":
        options = [self.correct_answer, *self.wrong_answers]
        if any(not option.strip() for option in options):
            raise ValueError("options must not be blank")
        if len({option.strip().lower() for option in options}) != 4:
            raise ValueError("the four options must differ")
        return self


class QuizQuestion(BaseModel):
    """A question with its four shuffled options and the letter of the correct one."""

    question: str
    options: list[str] = Field(min_length=4, max_length=4)
    answer: str = Field(pattern="^[ABCD]$")


def shuffle_options(draft: DraftQuestion, seed: int) -> QuizQuestion:
    """Put the options in an order fixed by ``seed`` and the question text; track the correct letter."""
    options = [draft.correct_answer, *(answer.strip() for answer in draft.wrong_answers)]
    order = random.Random(f"{seed}\x00{draft.question}").sample(range(4), 4)
    return QuizQuestion(question=draft.question, options=[options[i] for i in order],
                        answer=LETTERS[order.index(0)])


def parse_quiz(reply: str | None) -> list[DraftQuestion]:
    """The valid questions in a judge's JSON reply (fenced or surrounded by chatter); invalid ones are dropped."""
    items = _json_items(reply)
    drafts = []
    for item in items:
        try:
            drafts.append(DraftQuestion.model_validate(item))
        except ValidationError:
            continue
    return drafts


def _json_items(reply: str | None) -> list[Any]:
    if not reply:
        return []
    fenced = re.search(r"```(?:json)?\s*(.*?)```", reply, re.DOTALL)
    text = fenced.group(1) if fenced else reply
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return []
    start = min(starts)
    end = text.rfind("}" if text[start] == "{" else "]")
    try:
        data = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return []
    items = data.get("questions", []) if isinstance(data, dict) else data
    return items if isinstance(items, list) else []


def quiz_messages(document: str, count: int, seen: Sequence[str]) -> list[dict]:
    avoid = ("\nDo not repeat or rephrase these questions:\n" + "\n".join(f"- {q}" for q in seen) + "\n"
             if seen else "")
    return [{"role": "system", "content": "You write reading-comprehension quizzes."},
            {"role": "user", "content": (
                f"Write {count} multiple-choice question{'s' if count > 1 else ''} about the most important facts "
                "in the document below. Each must be answerable from the document alone, with exactly one "
                f"correct answer and three plausible wrong answers.\n{avoid}\n"
                "Reply with JSON only, in this form:\n"
                '{"questions": [{"question": "...", "correct_answer": "...", '
                '"wrong_answers": ["...", "...", "..."]}]}\n\n'
                f"<document>\n{document}\n</document>")}]


def answer_messages(text: str, question: QuizQuestion) -> list[dict]:
    options = "\n".join(f"{letter}) {option}" for letter, option in zip(LETTERS, question.options))
    return [{"role": "system", "content": "You answer multiple-choice questions using only the text you are given."},
            {"role": "user", "content": (
                "Answer the question using only the text below, not your own knowledge. If the text does not "
                f"give the answer, choose {DONT_KNOW}.\n\n<text>\n{text}\n</text>\n\n"
                f"Question: {question.question}\n{options}\n{DONT_KNOW}) I don't know: the text does not say\n\n"
                "Reply with the letter only, as <answer>X</answer>.")}]


def make_quizzes(documents: Sequence[str], judge: Judge, num_questions: int = 5, max_rounds: int = 3,
                 seed: int = 0) -> dict[str, list[QuizQuestion]]:
    """A verified quiz for each distinct document (possibly shorter than ``num_questions``, or empty)."""
    cache = _quiz_cache(judge)
    keys = {doc: cache_key("quiz", judge.cache_identity, {
        "document": hashlib.sha256(doc.encode("utf-8")).hexdigest(), "num_questions": num_questions,
        "max_rounds": max_rounds, "seed": seed, "version": QUIZ_FORMAT_VERSION}) for doc in dict.fromkeys(documents)}
    quizzes = {doc: [QuizQuestion.model_validate(q) for q in cache.get(key) or []] for doc, key in keys.items()}
    missing = [doc for doc, quiz in quizzes.items() if not quiz]
    judge_counters(judge).add("judge/cache_hits", len(quizzes) - len(missing))
    quizzes.update(_write_quizzes(missing, judge, num_questions, max_rounds, seed))
    for doc in missing:
        if quizzes[doc]:
            cache.put(keys[doc], [q.model_dump() for q in quizzes[doc]])
    return quizzes


def _write_quizzes(documents: list[str], judge: Judge, num_questions: int, max_rounds: int,
                   seed: int) -> dict[str, list[QuizQuestion]]:
    kept: dict[str, list[QuizQuestion]] = {doc: [] for doc in documents}
    seen: dict[str, list[str]] = {doc: [] for doc in documents}
    for _ in range(max_rounds):
        todo = [doc for doc in documents if len(kept[doc]) < num_questions]
        if not todo:
            break
        replies = judge.complete_many([quiz_messages(doc, num_questions - len(kept[doc]), seen[doc])
                                       for doc in todo])
        candidates = []
        for doc, reply in zip(todo, replies):
            drafts = parse_quiz(reply)
            if reply is not None and not drafts:
                judge_counters(judge).add("judge/parse_failures")
            for draft in drafts:
                if draft.question.lower() not in {q.lower() for q in seen[doc]}:
                    seen[doc].append(draft.question)
                    candidates.append((doc, shuffle_options(draft, seed)))
        verdicts = judge.complete_many([answer_messages(doc, question) for doc, question in candidates])
        for (doc, question), verdict in zip(candidates, verdicts):
            if parse_choice(verdict) == question.answer and len(kept[doc]) < num_questions:
                kept[doc].append(question)
    return kept


def _quiz_cache(judge: Judge) -> JudgeCache:
    cache = getattr(judge, "cache", None)
    if isinstance(cache, JudgeCache):
        return cache
    if judge not in _memory_caches:
        _memory_caches[judge] = JudgeCache(":memory:")
    return _memory_caches[judge]


def grade_answers(texts: Sequence[str], quizzes: Sequence[list[QuizQuestion]], judge: Judge) -> list[float | None]:
    """For each text, the share of its quiz the judge answers correctly from that text alone."""
    pairs = [(i, question) for i, quiz in enumerate(quizzes) for question in quiz]
    verdicts = judge.complete_many([answer_messages(texts[i], question) for i, question in pairs])
    correct, failed = [0] * len(texts), [False] * len(texts)
    for (i, question), verdict in zip(pairs, verdicts):
        choice = parse_choice(verdict, LETTERS + DONT_KNOW)
        failed[i] |= verdict is None
        if verdict is not None and choice is None:
            judge_counters(judge).add("judge/parse_failures")
        correct[i] += choice == question.answer
    return [None if failed[i] or not quiz else correct[i] / len(quiz) for i, quiz in enumerate(quizzes)]


@register_reward("quiz")
def quiz(prompts: Sequence[Any], completions: Sequence[str], judge: Judge | dict | None = None,
         num_questions: int = 5, max_rounds: int = 3, seed: int = 0, source_key: str = "document",
         **columns: Any) -> list[float | None]:
    """Share of the source document's quiz the judge answers from the completion alone (see module docs)."""
    if num_questions < 1 or max_rounds < 1:
        raise ConfigError(f"quiz num_questions and max_rounds must be >= 1, got {num_questions}, {max_rounds}")
    documents = _column(columns, source_key, len(completions), "quiz", required=True)
    judge = resolve_judge(judge)
    quizzes = make_quizzes([doc for doc in documents if doc], judge, num_questions, max_rounds, seed)
    questions = [quizzes.get(doc, []) if doc else [] for doc in documents]
    return grade_answers(completion_texts(completions), questions, judge)


@register_reward("judge_score")
def judge_score(prompts: Sequence[Any], completions: Sequence[str], judge: Judge | dict | None = None,
                rubric: str = DEFAULT_RUBRIC, scale: int = 10, source_key: str = "document",
                reference_key: str = "reference", **columns: Any) -> list[float | None]:
    """The judge's rubric score of each completion, mapped to [0, 1] (see module docs)."""
    if scale < 1:
        raise ConfigError(f"judge_score scale must be >= 1, got {scale}")
    sources = _column(columns, source_key, len(completions), "judge_score")
    references = _column(columns, reference_key, len(completions), "judge_score")
    judge = resolve_judge(judge)
    replies = judge.complete_many([score_messages(rubric, scale, prompt, completion, source, reference)
                                   for prompt, completion, source, reference
                                   in zip(prompts, completion_texts(completions), sources, references)])
    scores = [parse_score(reply, scale) for reply in replies]
    judge_counters(judge).add("judge/parse_failures", sum(r is not None and s is None for r, s in zip(replies, scores)))
    return scores


def score_messages(rubric: str, scale: int, prompt: Any, completion: str, source: str | None,
                   reference: str | None) -> list[dict]:
    context = ""
    if source:
        context += f"Source document:\n<document>\n{source}\n</document>\n\n"
    else:
        context += f"Task given to the writer:\n<task>\n{_prompt_text(prompt)}\n</task>\n\n"
    if reference:
        context += f"Reference answer:\n<reference>\n{reference}\n</reference>\n\n"
    return [{"role": "system", "content": "You are a careful, strict evaluator."},
            {"role": "user", "content": (
                f"Evaluate the response below.\n\nRubric: {rubric}\n\n{context}"
                f"Response to evaluate:\n<response>\n{completion}\n</response>\n\n"
                f"Give one or two sentences of justification, then the score as a whole number from 0 to {scale} "
                "in the form <score>N</score>.")}]


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(prompt)


def _column(columns: dict[str, Any], key: str, size: int, reward: str, required: bool = False) -> list:
    if key not in columns:
        if required:
            raise ConfigError(f"reward {reward!r} needs the source text in a dataset column named {key!r} "
                              f"(option source_key); the rows have columns {sorted(columns) or 'none'}")
        return [None] * size
    return [None if value is None else str(value) for value in columns[key]]


for _reward in (quiz, judge_score):
    _reward.uses_judge = True  # the trainer passes each the judge it built from the reward's ``judge`` spec
