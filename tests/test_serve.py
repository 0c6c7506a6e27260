"""`rftune serve` on loopback with the tiny model, called with the official openai client and raw HTTP."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
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


def test_stop_strings_cut_the_reply(client):
    full = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "x"}], max_tokens=12,
                                          temperature=1.0, seed=0).choices[0].message.content
    stop = full[4:6]
    assert stop, "the tiny model should have produced some text"
    cut = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "x"}], max_tokens=12,
                                         temperature=1.0, seed=0, stop=[stop]).choices[0]
    assert cut.message.content == full[:full.index(stop)] and cut.finish_reason == "stop"


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
