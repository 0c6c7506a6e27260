"""The arithmetic task's worked examples (its SFT warm-start data): right by hand, right for every training row,
never a held-out problem, and what `rftune sft` trains on when sft.data is unset; for word problems
(gsm_symbolic) the rows' own solutions with the tagged answer."""

import json

from rftune.cli import main
from rftune.config import config_from_dict
from rftune.rewards.builtin import exact_answer
from rftune.tasks import task_from_config
from rftune.tasks.arithmetic import chain_of_thought_answer, problem_key, worked_answer


def test_worked_answers_by_hand():
    assert worked_answer("57 + 29") == "Tens: 50 + 20 = 70. Ones: 7 + 9 = 16. Total: 70 + 16 = 86.\n<answer>86</answer>"
    assert worked_answer("95 - 76") == "Tens: 90 - 70 = 20. Ones: 5 - 6 = -1. Total: 20 - 1 = 19.\n<answer>19</answer>"
    assert worked_answer("3 - 86") == ("Tens: 0 - 80 = -80. Ones: 3 - 6 = -3. Total: -80 - 3 = -83.\n"
                                       "<answer>-83</answer>")


def test_every_worked_example_answers_a_training_row_correctly():
    task = task_from_config(config_from_dict({"task": {"name": "arithmetic", "kwargs": {"size": 400}}}))
    examples = task.worked_examples(400, 0)
    assert len(examples) == 400 and examples == task.worked_examples(400, 0) != task.worked_examples(400, 1)
    by_question = {s.example["question"]: s.example for s in task.samples}
    held_out = {problem_key(s.example) for s in task.eval_samples}
    for messages in examples:
        example = by_question[messages[-2]["content"]]  # the user turn is a training row's question
        assert messages[-1]["content"].endswith(f"<answer>{example['answer']}</answer>")
        assert problem_key(example) not in held_out


def test_chain_of_thought_answer_by_hand():
    example = {"answer": "44", "metadata": {"answer_cot": "He had 72*0.5=36 pebbles.\nThen 36+17=53.\n"
                                                          "He kept 53-9=44 pebbles.\n#### 44"}}
    assert chain_of_thought_answer(example) == ("He had 72*0.5=36 pebbles.\nThen 36+17=53.\nHe kept 53-9=44 pebbles.\n"
                                                "<answer>44</answer>")


def test_word_problem_worked_examples_are_training_solutions_the_reward_marks_correct():
    task = task_from_config(config_from_dict({"task": {"name": "arithmetic",
                                                       "kwargs": {"dataset": "gsm_symbolic", "size": 120}}}))
    examples = task.worked_examples(120, 0)
    by_question = {s.example["question"]: s.example for s in task.samples}
    held_out = {problem_key(s.example) for s in task.eval_samples}
    assert len(examples) == 120 and len(held_out) > 400
    for messages in examples:
        example = by_question[messages[-2]["content"]]
        reply = messages[-1]["content"]
        assert "####" not in reply and reply.endswith(f"\n<answer>{example['answer']}</answer>")
        assert exact_answer(messages[:-1], reply, example, require_tag=True) == 1.0
        assert problem_key(example) not in held_out


def test_sft_on_the_arithmetic_task_trains_on_its_worked_examples(tiny_model_dir, tmp_path):
    out, config = tmp_path / "sft", tmp_path / "c.yaml"
    config.write_text(f"model: {{name_or_path: {tiny_model_dir}}}\ntask: {{name: arithmetic, kwargs: {{size: 50}}}}\n")
    assert main(["sft", str(config), "sft.num_examples=6", "sft.max_steps=2", "sft.batch_size=2",
                 f"sft.output_dir={out}", "repository.register=false"]) == 0
    traces = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 6 and all(t["messages"][-1]["content"].startswith("Tens: ") for t in traces)
    assert (out / "adapter" / "adapter_config.json").is_file()
