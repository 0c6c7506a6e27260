"""`rftune serve` on loopback with the tiny model, called with the official openai client and raw HTTP."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from rftune.errors import ConfigError
from rftune.judges.openai_judge import OpenAIJudge
from rftune.serve import load_service, make_server

NAME = "tiny"


@pytest.fixture(scope="module")
def base_url(tiny_model_dir):
    server = make_server(load_service(tiny_model_dir, served_name=NAME), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)


def post(base_url, path, payload: bytes):
    request = urllib.request.Request(base_url + path, data=payload, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_chat_completion_has_the_openai_shape(client):
    reply = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=5, temperature=0)
    assert reply.model == NAME and reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    (choice,) = reply.choices
    assert choice.index == 0 and choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 2 and 1 <= reply.usage.completion_tokens <= 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_greedy_is_repeatable_and_seeded_sampling_too(client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "count"}]
    greedy = [client.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0)
              .choices[0].message.content for _ in range(2)]
    assert greedy[0] == greedy[1]
    sampled = [client.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=1.0,
                                              top_p=0.9, n=3, seed=7) for _ in range(2)]
    texts = [[c.message.content for c in reply.choices] for reply in sampled]
    assert len(texts[0]) == 3 and texts[0] == texts[1]
    assert [c.index for c in sampled[0].choices] == [0, 1, 2]


def test_models_endpoint_lists_the_served_name(client):
    assert [model.id for model in client.models.list().data] == [NAME]


@pytest.mark.parametrize("payload, status, param", [
    (b"{not json", 400, None),
    (json.dumps({"model": NAME, "messages": []}).encode(), 400, "messages"),
    (json.dumps({"model": NAME, "messages": [{"role": "robot", "content": "x"}]}).encode(), 400, "messages[0].role"),
    (json.dumps({"model": NAME, "messages": [{"role": "user", "content": "x"}], "temperature": 5}).encode(), 400,
     "temperature"),
    (json.dumps({"model": NAME, "messages": [{"role": "user", "content": "x"}], "n": 0}).encode(), 400, "n"),
    (json.dumps({"model": NAME, "messages": [{"role": "user", "content": "x" * 1100}]}).encode(), 400, "messages"),
    (json.dumps({"model": "other", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "model"),
])
def test_bad_requests_get_a_json_4xx_error(base_url, payload, status, param):
    code, body = post(base_url, "/chat/completions", payload)
    assert code == status
    assert body["error"]["param"] == param and body["error"]["message"]


def test_bad_request_through_the_client_raises_its_error(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "x"}], max_tokens=-1)


def test_unknown_path_is_404(base_url):
    assert post(base_url, "/completions", b"{}")[0] == 404


def test_openai_judge_talks_to_rftune_serve(base_url):
    judge = OpenAIJudge(model=NAME, base_url=base_url, api_key_env=None, max_tokens=4, timeout=60)
    replies = judge.complete_many([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]])
    assert all(isinstance(reply, str) for reply in replies)


def test_cli_serves_on_a_free_port_and_stops_on_interrupt(tiny_model_dir):
    command = [sys.executable, "-m", "rftune.cli", "serve", tiny_model_dir, "--port", "0", "--name", NAME]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = process.stdout.readline()
        assert line.startswith(f"serving '{NAME}' on http://127.0.0.1:"), line
        url = line.split()[3]
        with urllib.request.urlopen(url + "/models", timeout=30) as response:
            assert json.loads(response.read())["data"][0]["id"] == NAME
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()


def test_a_model_without_chat_template_is_refused(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "plain")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for extra in folder.glob("chat_template.*"):
        extra.unlink()
    with pytest.raises(ConfigError, match="chat template"):
        load_service(str(folder))


HI = [{"role": "user", "content": "x"}]


def test_streaming_gives_openai_chunks_that_add_up_to_the_reply(client):
    whole = client.chat.completions.create(model=NAME, messages=HI, max_tokens=12, temperature=1.0, seed=3, n=2)
    stream = client.chat.completions.create(model=NAME, messages=HI, max_tokens=12, temperature=1.0, seed=3, n=2,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert {c.id for c in chunks} == {chunks[0].id} and {c.object for c in chunks} == {"chat.completion.chunk"}
    *content, usage = chunks
    assert usage.choices == [] and usage.usage.model_dump() == whole.usage.model_dump()
    for index, choice in enumerate(whole.choices):
        mine = [c.choices[0] for c in content if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant" and mine[0].delta.content == ""
        assert "".join(c.delta.content or "" for c in mine) == choice.message.content
        assert [c.finish_reason for c in mine] == [None] * (len(mine) - 1) + [choice.finish_reason]


def test_stream_is_server_sent_events_ending_with_done(base_url):
    body = json.dumps({"model": NAME, "messages": HI, "max_tokens": 3, "stream": True}).encode()
    request = urllib.request.Request(base_url + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        events = response.read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert all(event.startswith("data: {") for event in events[:-2])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "usage" not in chunks[0]  # only with stream_options.include_usage, as OpenAI does
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_stop_string_ends_generation(client):
    full = client.chat.completions.create(model=NAME, messages=HI, max_tokens=12, temperature=1.0, seed=0)
    text = full.choices[0].message.content
    stop = text[4:6]
    cut = client.chat.completions.create(model=NAME, messages=HI, max_tokens=12, temperature=1.0, seed=0, stop=stop)
    assert cut.choices[0].message.content == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"
    # the tiny model's tokens are single characters: generation stopped at the token completing the stop string
    assert cut.usage.completion_tokens == text.index(stop) + len(stop) < full.usage.completion_tokens
    streamed = client.chat.completions.create(model=NAME, messages=HI, max_tokens=12, temperature=1.0, seed=0,
                                              stop=[stop, "never"], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == text[:text.index(stop)]


def test_logprobs_are_the_models_own(client, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reply = client.chat.completions.create(model=NAME, messages=HI, max_tokens=4, temperature=0, logprobs=True,
                                           top_logprobs=3)
    choice = reply.choices[0]
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content and len(tokens) >= 1
    for t in tokens:  # greedy: the chosen token is the most likely one
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert t.bytes == list(t.token.encode())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt = tokenizer.apply_chat_template(HI, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        first = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
    assert tokens[0].logprob == pytest.approx(first.max().item(), abs=1e-4)
    streamed = client.chat.completions.create(model=NAME, messages=HI, max_tokens=4, temperature=0, logprobs=True,
                                              stream=True)
    pieces = [t for c in streamed if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.logprob for t in pieces] == pytest.approx([t.logprob for t in tokens])


def test_one_log_line_per_request(client, caplog):
    caplog.set_level(logging.INFO, logger="rftune.serve")
    client.chat.completions.create(model=NAME, messages=HI, max_tokens=2, temperature=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=NAME, messages=HI, max_tokens=2, temperature=9)
    deadline = time.monotonic() + 10  # the handler thread writes its line just after the reply is sent
    while len(lines := [r.getMessage() for r in caplog.records if r.name == "rftune.serve"]) < 2:
        assert time.monotonic() < deadline, lines
        time.sleep(0.01)
    time.sleep(0.2)
    lines = [r.getMessage() for r in caplog.records if r.name == "rftune.serve"]
    assert len(lines) == 2
    assert " POST /v1/chat/completions 200 model=tiny n=1 prompt_tokens=" in lines[0]
    assert "completion_tokens=" in lines[0] and lines[0].endswith("s")
    assert " POST /v1/chat/completions 400" in lines[1]


@pytest.mark.parametrize("extra", [{"user": "u1"}, {"metadata": {"k": "v"}}, {"store": False},
                                   {"frequency_penalty": 0}, {"presence_penalty": 0.0}, {"logit_bias": {}}])
def test_fields_openai_ignores_are_accepted(client, extra):
    reply = client.chat.completions.create(model=NAME, messages=HI, max_tokens=2, temperature=0, extra_body=extra)
    assert reply.choices[0].message.content is not None


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"), ({"logit_bias": {"5": 10}}, "logit_bias"),
    ({"made_up_field": 1}, "made_up_field"), ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"), ({"stream_options": {"include_usage": True}},
                                                                "stream_options"),
])
def test_fields_that_would_be_ignored_are_refused(client, extra, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=NAME, messages=HI, max_tokens=2, extra_body=extra)
    assert error.value.body["param"] == param and param in error.value.body["message"]
