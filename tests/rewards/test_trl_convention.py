"""TRL's reward calling convention: TRL's own installed reward functions, and a function that records what it is
given, scored by rftune and by TRL's ``GRPOTrainer._calculate_rewards`` on the same completions.

TRL's method is called on a stand-in for the trainer holding only the attributes it reads (device, reward
functions and names, state, the two log callbacks), so the expected values are those of TRL's own code; the
values are also derived by hand next to each case.
"""

import json
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("trl")
from trl import GRPOTrainer as TrlGRPOTrainer  # noqa: E402
from trl.rewards import accuracy_reward, get_soft_overlong_punishment, think_format_reward  # noqa: E402

from rftune import GRPOTrainer, config_from_dict  # noqa: E402
from rftune.rewards import RewardLogs, TrainerState, as_reward_function, score_completions  # noqa: E402
from rftune.testing import FirstRowsStream  # noqa: E402

QUESTION = [{"role": "user", "content": "What is 1/4 + 1/4?"}]
TEXTS = ["<think>\nquarter plus quarter\n</think>\nSo $\\boxed{\\frac{1}{2}}$.",  # think format ok, correct
         "The answer is $\\boxed{\\frac{1}{3}}$.",  # no think block, wrong
         "<think>\nhalf</think>\n$\\boxed{0.5}$"]  # think format ok, 0.5 = 1/2 for math-verify
IDS = [[5] * 5, [5] * 8, [5] * 11]  # lengths 5, 8, 11 against max 10 with a cache of 4: 0, (6-8)/4, -1
ROWS = [{"prompt": QUESTION, "solution": "$\\frac{1}{2}$", "level": i} for i in range(3)]
EXPECTED = [[1.0, 0.0, 1.0], [0.0, -0.5, 0.0], [1.0, -1.0, 1.0]]  # [B, K]: think, overlong, accuracy (by hand)


def _trl_rewards(functions, rows, completions, ids):
    """TRL's own `_calculate_rewards` on these completions, as its trainer would call it (step 3)."""
    trainer = SimpleNamespace(accelerator=SimpleNamespace(device=torch.device("cpu"), is_main_process=True),
                              reward_funcs=functions, reward_processing_classes=[None] * len(functions),
                              reward_func_names=[getattr(f, "__name__", "f") for f in functions],
                              state=SimpleNamespace(global_step=3), args=SimpleNamespace(report_to=[]),
                              environments=None, _log_completion_extra=lambda column, values: None,
                              _log_metric=lambda name, value: None)
    return TrlGRPOTrainer._calculate_rewards(trainer, rows, [row["prompt"] for row in rows], completions, ids)


def _messages(texts):
    return [[{"role": "assistant", "content": text}] for text in texts]


def test_trl_installed_rewards_give_trl_values_on_a_conversational_dataset():
    functions = [think_format_reward, get_soft_overlong_punishment(10, 4), accuracy_reward]
    wrapped = [as_reward_function(f) for f in functions]
    assert all(f.batched for f in wrapped)  # completion_ids only: still TRL's convention, not per sample
    assert wrapped[1].name == "soft_overlong_punishment_reward"
    ours, failures = score_completions(wrapped, [row["prompt"] for row in ROWS], TEXTS, ROWS, completion_ids=IDS)
    torch.testing.assert_close(ours, torch.tensor(EXPECTED))
    torch.testing.assert_close(ours, _trl_rewards(functions, ROWS, _messages(TEXTS), IDS))
    assert failures == {f.name: 0 for f in wrapped}


def test_a_reward_receives_what_trl_passes():
    received = {}

    def record(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, **columns):
        received.setdefault("calls", []).append(dict(prompts=prompts, completions=completions,
                                                     completion_ids=completion_ids, columns=columns,
                                                     step=trainer_state.global_step))
        return [float(len(ids)) for ids in completion_ids]

    text_rows = [{"prompt": "Say hi", "lang": "en"}, {"prompt": "Say hi", "lang": "fr"}]
    for rows, completions in ((ROWS[:2], _messages(TEXTS[:2])), (text_rows, TEXTS[:2])):  # conversational, text
        received.clear()
        trl_values = _trl_rewards([record], rows, completions, IDS[:2])
        ours, _ = score_completions([as_reward_function(record)], [QUESTION] * 2, TEXTS[:2], rows,
                                    completion_ids=IDS[:2], state=TrainerState(3, 10))
        theirs, mine = received["calls"]
        assert mine == theirs  # same prompts, completions (messages or text), ids, columns and step
        torch.testing.assert_close(ours, trl_values)


def test_log_metric_and_log_extra_are_collected():
    def judged(completions, log_extra, log_metric, **kwargs):
        log_extra("verdict", ["long" if len(c) > 3 else "short" for c in completions])
        log_metric("judged/share_long", sum(len(c) > 3 for c in completions) / len(completions))
        return [1.0] * len(completions)

    logs = RewardLogs()
    score_completions([as_reward_function(judged)], ["p", "p"], ["abcd", "ab"], [{"prompt": "p"}] * 2, logs=logs)
    assert logs.columns == {"verdict": ["long", "short"]} and logs.metrics == {"judged/share_long": [0.5]}


def test_classification_and_arguments_by_signature():
    def per_sample(prompt, completion, example):
        return 1.0

    def only_ids(completion_ids):  # no **kwargs: it gets just what it names
        return [float(len(ids)) for ids in completion_ids]

    async def later(completions, **kwargs):  # TRL awaits coroutine functions
        return [2.0 for _ in completions]

    def per_sample_with_options(prompt, completion, example, **options):
        return 3.0

    def columns_only(**kwargs):  # TRL passes everything by keyword
        return [float(len(kwargs["completions"][0]))]

    functions = (per_sample, only_ids, later, per_sample_with_options, columns_only,
                 lambda p, c, e: 4.0)  # any names, no **kwargs: per sample
    wrapped = [as_reward_function(f) for f in functions]
    assert [f.batched for f in wrapped] == [False, True, True, False, True, False]
    values, _ = score_completions(wrapped, ["p"], ["abc"], [{"prompt": "p"}], completion_ids=[[1, 2]])
    torch.testing.assert_close(values, torch.tensor([[1.0, 2.0, 2.0, 3.0, 3.0, 4.0]]))


def test_trl_rewards_in_a_training_step(tiny_model_dir, tmp_path):
    """A conversational dataset and TRL's rewards through the trainer: completions arrive as messages, the ids
    are the generated tokens (they decode to the logged completion) and the overlong penalty follows their
    lengths; trainer_state counts the steps done; what log_extra/log_metric got lands in the run's logs."""
    config = config_from_dict({
        "model": {"name_or_path": tiny_model_dir}, "lora": {"r": 4, "alpha": 8},
        "generation": {"num_generations": 2, "max_new_tokens": 6, "backend": "hf"}, "algorithm": {"beta": 0.0},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 4, "device": "cpu",
                  "save_steps": 0}})
    seen = []

    def record(completions, completion_ids, trainer_state, log_extra, log_metric, **kwargs):
        seen.append((completions, completion_ids, trainer_state))
        log_extra("num_ids", [len(ids) for ids in completion_ids])
        log_metric("record/calls", 1.0)
        return [0.0] * len(completions)

    dataset = [{"prompt": [{"role": "user", "content": f"Say {w}"}], "solution": "$1$"} for w in ("cat", "dog")]
    trainer = GRPOTrainer(config, reward_funcs=[think_format_reward, get_soft_overlong_punishment(6, 4), record],
                          dataset=dataset, progress=False)
    trainer.step(FirstRowsStream())
    rows = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    ((completions, ids, state),) = seen
    assert state == TrainerState(global_step=0, max_steps=1)
    assert [c[0]["role"] for c in completions] == ["assistant"] * 4
    for row, message, token_ids in zip(rows, completions, ids):
        assert message[0]["content"] == row["completion"]
        assert trainer.tokenizer.decode(token_ids, skip_special_tokens=True) == row["completion"]
        length = len(token_ids)
        assert 1 <= length <= 6 and row["logged"] == {"num_ids": length}
        assert row["rewards"]["soft_overlong_punishment_reward"] == (0.0 if length <= 2 else (2 - length) / 4)
        assert row["rewards"]["think_format_reward"] == 0.0  # a random model writes no think block
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["record/calls"] == 1.0
