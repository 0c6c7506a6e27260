"""Structured generation (rftune.constraints): what each kind admits, the masks on both in-process backends, the
trainer's log-probs under the masks the sampler was under, dead ends, and bad input."""

import math
import re
from pathlib import Path

import llguidance.torch
import pytest
import torch

from rftune.config import ConstraintConfig, load_config
from rftune.constraints import ConstraintCompiler, compile_constraint, unpack_bits
from rftune.errors import ConfigError
from rftune.rollout.generation import SamplingParams, encode_prompts, eos_token_ids, generate_ids, rollout_batch
from rftune.testing import build_tiny_tokenizer, tiny_lora_model
from rftune.train.logprobs import completion_logprobs
from rftune.types import Sample

ALLOWED_WORDS = Path(__file__).parents[1] / "src/rftune/data/wordle/allowed.txt"
WORDLE = ConstraintConfig(choices_file=str(ALLOWED_WORDS), case="upper", span=["<guess>", "</guess>"])
PROMPTS = [[{"role": "user", "content": "Guess"}], [{"role": "user", "content": "Another"}]]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return ConstraintCompiler(tokenizer, [tokenizer.eos_token_id])


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    model, tokenizer = tiny_lora_model(tiny_model_dir, seed=3, scale=0.5)
    return model.eval(), tokenizer


def admits(constraint, tokenizer, text: str, end: bool = True) -> bool:
    """Whether the constraint lets a completion write `text` (then end with EOS, when `end`)."""
    matcher = constraint.matcher.deep_copy()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if end else [])
    words = torch.zeros(1, constraint.words, dtype=torch.int32)
    for token in ids:
        llguidance.torch.fill_next_token_bitmask(matcher, words)
        if not unpack_bits(words, len(tokenizer))[0, token] or not matcher.consume_token(token):
            return False
    return True


# ------------------------------------------------------------------------------------------------ kinds
@pytest.mark.parametrize("spec, good, bad", [
    (ConstraintConfig(regex="[0-9]{2,3}"), ["12", "999"], ["1", "1234", "ab"]),
    (ConstraintConfig(choices=["yes", "no"]), ["yes", "no"], ["maybe", "yesno", "ye"]),
    (ConstraintConfig(choices=["Yes", "no"], case="lower"), ["yes", "no"], ["Yes"]),
    (ConstraintConfig(json_schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
                                   "additionalProperties": False}), ['{"n": 3}', '{"n":-12}'], ['{"n": "3"}', "{}"]),
    (ConstraintConfig(grammar='start: "(" expr ")"\nexpr: NUMBER | start\nNUMBER: /[0-9]+/'), ["(1)", "((23))"],
     ["(1", "()", "(a)"]),
    (ConstraintConfig(gbnf='root ::= "a" digits\ndigits ::= [0-9]+'), ["a1", "a42"], ["a", "b1"]),
    (ConstraintConfig(regex="[a-z]+", span=["[", "]"]), ["free text", "x [abc] y [d] z", ""],
     ["x [ab1] y", "x [abc", "[]"]),
])
def test_each_kind_admits_what_it_says(compiler, tokenizer, spec, good, bad):
    constraint = compiler.compile(spec)
    assert all(admits(constraint, tokenizer, text) for text in good), good
    assert not any(admits(constraint, tokenizer, text) for text in bad), bad


def test_wordle_guess_is_an_allowed_word_after_free_text(compiler, tokenizer):
    """The Wordle recipe's constraint: any reasoning, then <guess>WORD</guess> with WORD from the official list."""
    constraint = compiler.compile(WORDLE)
    assert constraint.description == f"choices (file {ALLOWED_WORDS}, 12972 strings) inside <guess>...</guess>"
    assert admits(constraint, tokenizer, "<think>C, R and E are in.</think>\n<guess>CRANE</guess>")
    assert admits(constraint, tokenizer, "<think>AAHED is allowed</think><guess>AAHED</guess>")
    for text in ("<guess>CRANX</guess>", "<guess>crane</guess>", "<guess>CRANES</guess>", "<guess>CRANE"):
        assert not admits(constraint, tokenizer, text), text
    assert admits(constraint, tokenizer, "<think>still thinking <gue", end=True)  # never opened: free text


def test_the_wordle_recipes_constraint_admits_only_a_spelled_allowed_word(compiler, tokenizer):
    """configs/wordle.yaml: the model spells its guess; the constraint admits an allowed word spelled, and not the
    4-letter reply that the course's weights pay more than a bad valid guess (tests/envs/test_wordle_rewards.py)."""
    from pathlib import Path

    from rftune.config import load_config

    config = load_config(Path(__file__).parents[1] / "configs" / "wordle.yaml")
    constraint = compiler.compile(config.generation.constraint, config.base_dir)
    assert admits(constraint, tokenizer, "<think>Placed letters: _ _ _ _ E</think>\n<guess>N A C R E</guess>")
    for text in ("<guess>T H R E</guess>", "<guess>NACRE</guess>", "<guess>N A C R X</guess>"):
        assert not admits(constraint, tokenizer, text), text
    override = load_config(None, ["generation.constraint.choices_file=rftune:data/wordle/allowed_spelled.txt",
                                  "generation.constraint.case=upper", "generation.constraint.span=[<guess>, </guess>]"])
    assert compiler.compile(override.generation.constraint).lark == constraint.lark  # the file inside the package
    with pytest.raises(ConfigError, match="generation.constraint: file not found: .*data/wordle/nothing.txt"):
        compiler.compile(ConstraintConfig(choices_file="rftune:data/wordle/nothing.txt"))


# ------------------------------------------------------------------------------------------------ config
CONFIG_CASES = [
    ("regex: '[0-9]+'", ["generation.constraint.regex='[0-9]+'"]),
    ("choices: [red, green]", ["generation.constraint.choices=[red, green]"]),
    ("choices_file: words.txt", ["generation.constraint.choices_file=words.txt"]),
    ("choices: [Red]\n    case: lower", ["generation.constraint.choices=[Red]", "generation.constraint.case=lower"]),
    ("choices: [red]\n    case: upper", ["generation.constraint.choices=[red]", "generation.constraint.case=upper"]),
    ("choices: [red]\n    case: keep", ["generation.constraint.choices=[red]", "generation.constraint.case=keep"]),
    ("json_schema: {type: object}", ["generation.constraint.json_schema={type: object}"]),
    ("json_schema: '{\"type\": \"integer\"}'", ["generation.constraint.json_schema='{\"type\": \"integer\"}'"]),
    ("json_schema: schema.json", ["generation.constraint.json_schema=schema.json"]),
    ("grammar: 'start: \"a\"+'", ["generation.constraint.grammar=start: \"a\"+"]),
    ("grammar: rules.lark", ["generation.constraint.grammar=rules.lark"]),
    ("gbnf: 'root ::= \"a\"+'", ["generation.constraint.gbnf=root ::= \"a\"+"]),
    ("gbnf: rules.gbnf", ["generation.constraint.gbnf=rules.gbnf"]),
    ("regex: '[a-z]+'\n    span: ['<guess>', '</guess>']",
     ["generation.constraint.regex='[a-z]+'", "generation.constraint.span=['<guess>', '</guess>']"]),
]


@pytest.mark.parametrize("yaml_text, overrides", CONFIG_CASES)
def test_every_key_reads_the_same_from_yaml_and_overrides(tmp_path, compiler, yaml_text, overrides):
    (tmp_path / "words.txt").write_text("red\ngreen\n")
    (tmp_path / "schema.json").write_text('{"type": "boolean"}')
    (tmp_path / "rules.lark").write_text('start: "b"+\n')
    (tmp_path / "rules.gbnf").write_text('root ::= "b"+\n')
    path = tmp_path / "run.yaml"
    path.write_text(f"generation:\n  constraint:\n    {yaml_text}\n")
    from_yaml = load_config(path).generation.constraint
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  seed: 1\n")
    assert load_config(base, overrides).generation.constraint == from_yaml
    compiler.compile(from_yaml, str(tmp_path))  # compiles for a tokenizer too


def test_no_constraint_by_default():
    assert load_config(None, []).generation.constraint is None


@pytest.mark.parametrize("overrides, message", [
    (["generation.constraint.regex='(a'"], "unclosed group"),
    (["generation.constraint.json_schema={type: bogus}"], "bogus"),
    (["generation.constraint.grammar=start: missing_rule"], "missing_rule"),
    (["generation.constraint.gbnf=root ::= missing"], "missing"),
    (["generation.constraint.regex=a", "generation.constraint.choices=[a]"], "exactly one"),
    (["generation.constraint.span=[a]", "generation.constraint.regex=a"], "span"),
    (["generation.constraint.case=upper", "generation.constraint.regex=a"], "case"),
    (["generation.constraint.choices_file=no-such-file.txt"], "file not found"),
    (["generation.constraint.choices=[]"], "non-empty"),
])
def test_unparsable_constraints_fail_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_choices_that_yaml_would_read_as_booleans_stay_the_words_written(tmp_path):
    base = tmp_path / "c.yaml"
    base.write_text("generation:\n  constraint:\n    choices: [yes, no, off]\n")
    assert load_config(base).generation.constraint.choices == ["yes", "no", "off"]
    assert load_config(base, ["generation.constraint.choices=[on, no]"]).generation.constraint.choices == ["on", "no"]


@pytest.mark.parametrize("spec", [ConstraintConfig(regex="é+"), ConstraintConfig(choices=["café", "tea"])])
def test_a_constraint_the_tokenizer_cannot_write_fails_at_compile(compiler, spec):
    with pytest.raises(ConfigError, match="tokenizer cannot write"):
        compiler.compile(spec)


def test_cli_says_error_for_a_bad_constraint(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  name_or_path: {tiny_model_dir}\ntrain:\n  output_dir: {tmp_path / 'run'}\n")
    result = subprocess.run([sys.executable, "-m", "rftune", "train", str(config), "generation.constraint.regex='(a'"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.startswith("error: generation.constraint (regex '(a')"), result.stderr


# ------------------------------------------------------------------------------------------------ sampling
class Recorder:
    """Stands where a guide stands: sees the logits each step samples from (after the constraint's mask, if any)
    and keeps their log-softmax per output row and step."""

    def __init__(self, guide, rows: int, steps: int, vocab: int):
        self.guide = guide
        self.logprobs = torch.full((rows, steps, vocab), math.nan)  # [B, Tc, V]

    def mask_logits(self, logits, rows, step):
        masked = self.guide.mask_logits(logits, rows, step) if self.guide is not None else logits
        self.logprobs[rows, step] = masked.float().log_softmax(-1)
        return masked

    def advance(self, rows, tokens):
        if self.guide is not None:
            self.guide.advance(rows, tokens)


def sample_recorded(model, tokenizer, constraint, backend: str, g: int = 4, steps: int = 24):
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    rows = ids.shape[0] * g
    recorder = Recorder(constraint.guide(rows) if constraint else None, rows, steps, len(tokenizer))
    params = SamplingParams(g, steps, temperature=1.0, backend=backend, seeds=(5, 6), constraint=constraint)
    eos = eos_token_ids(tokenizer, model)
    completion_ids = generate_ids(model, tokenizer, ids, mask, params, steps, eos, guide=recorder)
    batch = rollout_batch(tokenizer, [Sample(p, {}, i) for i, p in enumerate(PROMPTS)], ids.repeat_interleave(g, 0),
                          mask.repeat_interleave(g, 0), completion_ids, eos, g, steps, recorder.guide)
    return batch, recorder


@pytest.mark.parametrize("backend", ["cpu-fast", "hf"])
@pytest.mark.parametrize("spec", [None, ConstraintConfig(regex="[a-z ]{3,12}\\.?"),
                                  ConstraintConfig(choices=["red", "green", "blue"], span=["[", "]"])])
def test_sampler_and_trainer_logprobs_agree(lora_model, backend, spec):
    """At temperature 1 the log-prob the trainer computes for each sampled token is the sampler's, with and
    without a constraint: the trainer scores the constrained policy under the masks that were in force."""
    model, tokenizer = lora_model
    constraint = compile_constraint(spec, tokenizer, eos_token_ids(tokenizer, model))
    batch, recorder = sample_recorded(model, tokenizer, constraint, backend)
    width = batch.completion_ids.shape[1]
    sampler = recorder.logprobs[:, :width].gather(2, batch.completion_ids[:, :, None]).squeeze(2)  # [B, Tc]
    allowed = constraint.replay(batch.completion_ids, batch.completion_mask) if constraint else None
    with torch.no_grad():
        trainer, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                         batch.attention_mask, 1.0, allowed=allowed)
    real = batch.completion_mask.bool()
    torch.testing.assert_close(trainer[real], sampler[real], atol=2e-5, rtol=1e-5)
    if constraint is not None:  # the replayed masks are the sampler's masks, token for token
        replayed = unpack_bits(allowed, len(tokenizer))[real]  # [N, V]
        assert torch.equal(replayed, torch.isfinite(recorder.logprobs[:, :width])[real])
        assert (~replayed).any(dim=1).any(), "the constraint never restricted a step"


def test_constrained_completions_keep_to_the_constraint(lora_model):
    model, tokenizer = lora_model
    constraint = compile_constraint(ConstraintConfig(regex="[0-9]{2,4}"), tokenizer, [tokenizer.eos_token_id])
    for backend in ("cpu-fast", "hf"):
        batch, _ = sample_recorded(model, tokenizer, constraint, backend)
        assert all(text.isdigit() and 2 <= len(text) <= 4 for text in batch.completions), batch.completions
        assert not batch.truncated.any() and not batch.dead_ends.any()


def test_cpu_fast_equals_hf_under_a_constraint(lora_model):
    model, tokenizer = lora_model
    constraint = compile_constraint(ConstraintConfig(choices=["red", "green"], span=["[", "]"]), tokenizer,
                                    [tokenizer.eos_token_id])
    fast, _ = sample_recorded(model, tokenizer, constraint, "cpu-fast", g=8, steps=64)
    plain, _ = sample_recorded(model, tokenizer, constraint, "hf", g=8, steps=64)
    assert fast.completions == plain.completions
    opened = [text for text in fast.completions if "[" in text]  # spans were opened: their constraint was in force
    assert opened and all(re.fullmatch(r"[^\[]*(\[(red|green)\][^\[]*)*(\[(r|re|g|gr|gre|gree)?)?", text)
                          for text in fast.completions), opened


@pytest.mark.parametrize("backend", ["cpu-fast", "hf"])
def test_a_dead_end_ends_the_completion_as_truncated(lora_model, backend):
    """After "a" the regex needs "é", which the tiny tokenizer cannot write: every completion stops there."""
    model, tokenizer = lora_model
    constraint = compile_constraint(ConstraintConfig(regex="aé"), tokenizer, [tokenizer.eos_token_id])
    batch, _ = sample_recorded(model, tokenizer, constraint, backend, steps=6)
    assert batch.completions == ["a"] * 8
    assert batch.truncated.all() and batch.dead_ends.all()
    assert batch.completion_mask.sum(1).tolist() == [1] * 8  # the forced EOS is not the policy's token


# ------------------------------------------------------------------------------------------------ training
class DigitsEnv:
    """Asks for a number three times."""

    max_turns = 3

    def __init__(self):
        self.seen = 0

    def reset(self, example):
        return [{"role": "user", "content": "A number?"}]

    def step(self, completion):
        from rftune.envs.base import StepResult

        self.seen += 1
        done = self.seen >= self.max_turns
        return StepResult([] if done else [{"role": "user", "content": "Another?"}], done, {"text": completion})


def test_every_reply_of_an_episode_is_constrained_and_replays(lora_model):
    from rftune.rollout.episodes import env_rollout

    model, tokenizer = lora_model
    constraint = compile_constraint(ConstraintConfig(regex="[0-9]{1,3}"), tokenizer, [tokenizer.eos_token_id])
    params = SamplingParams(2, 8, backend="cpu-fast", constraint=constraint)
    batch = env_rollout(model, tokenizer, [Sample([], {}, 0)], params, make_env=lambda example: DigitsEnv())
    for episode in batch.episodes:
        assert [turn["completion"].isdigit() for turn in episode["turns"]] == [True] * 3, episode
    allowed = constraint.replay(batch.completion_ids, batch.completion_mask)  # [B, Tc, W]: one matcher per reply
    environment = (batch.attention_mask == 1) & (batch.completion_mask == 0)
    assert (allowed[environment] == -1).all()  # environment tokens are not the policy's: nothing masked
    assert (allowed[batch.completion_mask.bool()] != -1).any(dim=1).all()
    assert not batch.dead_ends.any()


def test_grpo_steps_under_a_constraint(tiny_model_dir, tmp_path):
    """Training rollouts decode under the constraint; the update scores them under the replayed masks; the
    dead-end counter is logged."""
    import json

    from rftune import GRPOTrainer, config_from_dict

    config = config_from_dict({
        "model": {"name_or_path": tiny_model_dir}, "lora": {"r": 2, "alpha": 4},
        "generation": {"num_generations": 4, "max_new_tokens": 8, "constraint": {"regex": "[a-e]{2,5}"}},
        "algorithm": {"beta": 0.1, "num_iterations": 2},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 8, "learning_rate": 1e-3},
    })
    dataset = [{"prompt": f"Say {w}"} for w in ["cab", "bad", "ace"]]
    trainer = GRPOTrainer(config, reward_funcs=[lambda prompt, completion, example: completion.count("a") / 5],
                          dataset=dataset, progress=False)
    history = trainer.train()
    for metrics in history:
        assert metrics["constraint/dead_ends"] == 0
        assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["entropy"]) and metrics["kl"] >= 0
        assert metrics["entropy"] <= math.log(6) + 1e-4  # at most 5 letters and EOS are ever allowed
    rows = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert rows and all(re.fullmatch("[a-e]{2,5}", row["completion"]) for row in rows)


def test_grpo_step_with_wordle_episodes_under_the_guess_constraint(tiny_model_dir, tmp_path):
    from rftune import GRPOTrainer, config_from_dict

    config = config_from_dict({
        "model": {"name_or_path": tiny_model_dir}, "lora": {"r": 2, "alpha": 4},
        "generation": {"num_generations": 2, "max_new_tokens": 6,
                       "constraint": {"choices_file": str(ALLOWED_WORDS), "case": "upper",
                                      "span": ["<guess>", "</guess>"]}},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2, "learning_rate": 1e-3},
        # the tiny model spends a token per character: the rules prompt is longer than its 1024-token context
        "task": {"name": "wordle", "kwargs": {"mode": "episode", "size": 3}, "max_prompt_tokens": 2048},
    })
    (metrics,) = GRPOTrainer(config, progress=False).train()
    assert math.isfinite(metrics["loss"]) and metrics["constraint/dead_ends"] == 0


# ------------------------------------------------------------------------------------------------ evaluation
def test_every_eval_player_decodes_under_the_constraint(tiny_model_dir, tmp_path, capsys):
    import json

    import yaml

    from rftune.cli import main

    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"prompt": f"Say {i}"}) + "\n" for i in range(30)))
    config = {"model": {"name_or_path": tiny_model_dir}, "train": {"output_dir": str(tmp_path / "run")},
              "generation": {"max_new_tokens": 6, "constraint": {"choices": ["odd", "even"]}},
              "task": {"name": "dataset", "path": "rows.jsonl"},
              "rewards": {"functions": [{"name": "format_regex", "kwargs": {"pattern": "odd"}}]},
              "eval": {"split": 0.3, "num_rows": 4, "num_samples": 2, "batch_size": 4}}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["eval", str(path), "--model", tiny_model_dir]) == 0
    assert "every player constrained to choices (2 strings)" in capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["constraint"] == "choices (2 strings)"
    for player in report["players"]:
        assert set(report["per_row"][player["player"]]["completions"]) <= {"odd", "even"}
    assert main(["eval", str(path), "--variant", "generation.constraint.choices=[one]"]) == 2
    assert "generation.constraint settings differ" in capsys.readouterr().err


def test_wordle_eval_models_decode_under_the_guess_constraint(tiny_model_dir, tmp_path, capsys):
    import json

    import yaml

    from rftune.cli import main

    config = {"model": {"name_or_path": tiny_model_dir}, "train": {"output_dir": str(tmp_path / "run")},
              "task": {"name": "wordle"}, "eval": {"num_games": 2, "max_new_tokens": 3},
              "generation": {"constraint": {"choices_file": str(ALLOWED_WORDS), "case": "upper",
                                            "span": ["<guess>", "</guess>"]}}}
    path = tmp_path / "wordle.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["eval", str(path)]) == 0
    assert "models see the course prompts; constrained to choices (file" in capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["constraint"].endswith("12972 strings) inside <guess>...</guess>")


# ------------------------------------------------------------------------------------------------ serving
@pytest.fixture(scope="module")
def served(tiny_model_dir):
    import threading

    import openai

    from rftune.serve import load_service, make_server

    server = make_server(load_service(tiny_model_dir, served_name="tiny"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="unused",
                        max_retries=0, timeout=60)
    server.shutdown()
    server.server_close()


def test_serve_response_format_json_schema(served):
    import json

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    reply = served.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "n?"}], max_tokens=40, temperature=1, seed=3, n=3,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    for choice in reply.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content)["n"], int)
        else:  # cut at max_tokens: still a prefix the schema allows
            assert choice.message.content.lstrip().startswith("{")


@pytest.mark.parametrize("extra, check", [
    ({"guided_choice": ["red", "green", "blue"]}, lambda text: text in {"red", "green", "blue"}),
    ({"guided_regex": "[0-9]{3}"}, lambda text: text.isdigit() and len(text) == 3),
    ({"guided_grammar": 'root ::= "x" [a-c]'}, lambda text: text in {"xa", "xb", "xc"}),
    ({"guided_grammar": 'start: "y" /[0-9]/'}, lambda text: len(text) == 2 and text[0] == "y"),
    ({"response_format": {"type": "json_object"}}, lambda text: text.lstrip().startswith("{")),
])
def test_serve_guided_extensions(served, extra, check):
    reply = served.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "go"}], max_tokens=24,
                                           temperature=1, seed=1, n=2, extra_body=extra)
    assert all(check(choice.message.content) for choice in reply.choices), reply.choices


def test_serve_streams_a_constrained_reply_chunk_by_chunk(served):
    stream = served.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "go"}],
                                            max_tokens=24, temperature=1, seed=2, stream=True,
                                            extra_body={"guided_choice": ["red", "green", "blue"]})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text in {"red", "green", "blue"}
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("extra, message", [
    ({"guided_regex": "(a"}, "guided_regex (regex '(a'): "),
    ({"guided_choice": "red"}, "guided_choice must be a non-empty list"),
    ({"guided_choice": ["a"], "guided_regex": "a"}, "use one of response_format and"),
    ({"response_format": {"type": "json_schema"}}, "response_format json_schema needs"),
    ({"guided_json": {"type": "bogus"}}, "bogus"),
])
def test_serve_rejects_bad_constraints_with_400(served, extra, message):
    import openai

    with pytest.raises(openai.BadRequestError, match=re.escape(message)):
        served.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "go"}], max_tokens=4,
                                       extra_body=extra)
