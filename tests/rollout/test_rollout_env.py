"""Multi-turn rollouts: exact token/mask assembly (scripted model), the tiny model, and a GRPO step in episode mode."""

import math

import pytest
import torch

from rftune.config import config_from_dict
from rftune.envs.base import StepResult
from rftune.model.loading import load_tokenizer
from rftune.rollout.episodes import env_rollout
from rftune.rollout.generation import SamplingParams
from rftune.types import Sample


class CountingEnv:
    """Answers each reply with a user turn giving its length; done after `turns` replies."""

    def __init__(self, turns=3, max_turns=6):
        self.turns, self.max_turns, self.seen = turns, max_turns, 0

    def reset(self, example):
        return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": example["question"]}]

    def step(self, completion):
        self.seen += 1
        done = self.seen >= self.turns
        messages = [] if done else [{"role": "user", "content": f"{len(completion)} chars. Again."}]
        return StepResult(messages, done, {"turn": self.seen, "text": completion})


class ScriptedModel:
    """Stands in for a causal LM: `generate` appends the next scripted reply of each row (then padding)."""

    def __init__(self, replies, pad_id, eos_id):
        self.replies, self.pad_id, self.calls = list(replies), pad_id, 0
        self.generation_config = type("GenerationConfig", (), {"eos_token_id": eos_id})()

    def parameters(self):  # where it "runs": the CPU
        yield torch.zeros(0)

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **sampling):
        rows = self.replies[self.calls]
        self.calls += 1
        width = max(len(r) for r in rows)
        new = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def ids(tokenizer, text, eos=True):
    return tokenizer(text, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])


def test_assembled_ids_decode_to_the_whole_conversation(tokenizer):
    replies_a = ["hi", "hello there", "ok"]
    replies_b = ["yes", "x", "done"]
    script = [[ids(tokenizer, a), ids(tokenizer, b)] for a, b in zip(replies_a, replies_b)]
    model = ScriptedModel(script, tokenizer.pad_token_id, tokenizer.eos_token_id)
    sample = Sample(prompt="unused", example={"question": "Count?"}, index=0)
    batch = env_rollout(model, tokenizer, [sample], SamplingParams(2, 16), make_env=lambda example: CountingEnv())

    assert batch.size == 2 and model.calls == 3
    for row, replies in enumerate([replies_a, replies_b]):
        conversation = CountingEnv().reset(sample.example)
        for n, reply in enumerate(replies):
            conversation.append({"role": "assistant", "content": reply})
            if n < 2:
                conversation.append({"role": "user", "content": f"{len(reply)} chars. Again."})
        expected = tokenizer.apply_chat_template(conversation, tokenize=False)
        prompt = batch.prompt_ids[row][batch.prompt_mask[row] == 1].tolist()
        completion = batch.completion_ids[row][batch.attention_mask[row] == 1].tolist()
        # the template closes the last turn with "<|im_end|>\n"; the rollout ends at the model's <|im_end|>
        assert tokenizer.decode(prompt + completion) + "\n" == expected
        trained = batch.completion_ids[row][batch.completion_mask[row] == 1].tolist()
        assert trained == [t for reply in replies for t in ids(tokenizer, reply)]
        assert batch.episodes[row]["turns"][1] == {"completion": replies[1], "info": {"turn": 2, "text": replies[1]}}
        assert batch.completions[row] == "\n\n".join(replies)
    assert not batch.truncated.any()
    assert (batch.completion_mask <= batch.attention_mask).all()
    assert batch.completion_budget == 6 * 16  # Dr. GRPO's constant: max_turns replies of max_new_tokens each


def test_reply_cut_off_gets_its_end_of_turn_from_the_template(tokenizer):
    script = [[ids(tokenizer, "abcd", eos=False)], [ids(tokenizer, "z")]]
    model = ScriptedModel(script, tokenizer.pad_token_id, tokenizer.eos_token_id)
    sample = Sample(prompt="unused", example={"question": "Q"}, index=0)
    batch = env_rollout(model, tokenizer, [sample], SamplingParams(1, 4),
                        make_env=lambda example: CountingEnv(turns=2))
    completion = batch.completion_ids[0][batch.attention_mask[0] == 1].tolist()
    mask = batch.completion_mask[0][batch.attention_mask[0] == 1].tolist()
    text = tokenizer.decode(completion)
    assert text.startswith("abcd<|im_end|>\n<|im_start|>user\n4 chars. Again.<|im_end|>\n<|im_start|>assistant\n")
    assert mask[:4] == [1, 1, 1, 1] and mask[4] == 0  # the template's <|im_end|> is not the model's
    assert [t for t, m in zip(completion, mask) if m] == ids(tokenizer, "abcd", eos=False) + ids(tokenizer, "z")


def test_token_budget_ends_the_episode(tokenizer):
    script = [[ids(tokenizer, "abc")], [ids(tokenizer, "def")]]
    model = ScriptedModel(script, tokenizer.pad_token_id, tokenizer.eos_token_id)
    sample = Sample(prompt="unused", example={"question": "Q"}, index=0)
    batch = env_rollout(model, tokenizer, [sample], SamplingParams(1, 8), make_env=lambda example: CountingEnv(),
                        max_episode_tokens=10)
    assert model.calls == 1 and bool(batch.truncated[0]) and len(batch.episodes[0]["turns"]) == 1


def test_tiny_model_rollout_is_consistent(tiny_model_dir, tokenizer):
    from rftune.model.loading import load_model

    model = load_model(tiny_model_dir).eval()
    torch.manual_seed(0)
    samples = [Sample("unused", {"question": q}, i) for i, q in enumerate(["A?", "Bb?"])]
    batch = env_rollout(model, tokenizer, samples, SamplingParams(2, 6), make_env=lambda example: CountingEnv())
    for row in range(batch.size):
        turns = batch.episodes[row]["turns"]
        assert 1 <= len(turns) <= 3
        prompt = batch.prompt_ids[row][batch.prompt_mask[row] == 1].tolist()
        completion = batch.completion_ids[row][batch.attention_mask[row] == 1].tolist()
        assert tokenizer.decode(prompt) == tokenizer.apply_chat_template(
            CountingEnv().reset(samples[row // 2].example), tokenize=False, add_generation_prompt=True)
        assert batch.completion_mask[row].sum() <= 3 * 6
        assert len(completion) == int(batch.attention_mask[row].sum())


def test_grpo_step_with_wordle_episodes(tiny_model_dir, tmp_path):
    from rftune.train.trainer import GRPOTrainer

    config = config_from_dict({
        "model": {"name_or_path": tiny_model_dir}, "lora": {"r": 2, "alpha": 4},
        "generation": {"num_generations": 2, "max_new_tokens": 4}, "algorithm": {"beta": 0.1},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2, "learning_rate": 1e-3},
        # the tiny model spends a token per character: the rules prompt is longer than its 1024-token context
        "task": {"name": "wordle", "kwargs": {"mode": "episode", "size": 3}, "max_prompt_tokens": 2048},
    })
    trainer = GRPOTrainer(config, progress=False)
    captured = []
    rollout = trainer.rollout_fn
    trainer.rollout_fn = lambda *args: captured.append(rollout(*args)) or captured[-1]
    (metrics,) = trainer.train()
    batch = captured[0]
    assert math.isfinite(metrics["loss"])
    assert [len(e["turns"]) for e in batch.episodes] == [6, 6]  # a random model never guesses validly
    assert batch.completion_mask.sum() <= 2 * 6 * 4  # only the generated tokens are in the loss
    assert (batch.attention_mask - batch.completion_mask).sum() > 100  # the environment's turns are context
    assert metrics["rewards/wordle_format/mean"] == 0.0 and metrics["rewards/wordle_win/mean"] == 0.0
