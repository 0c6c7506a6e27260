"""OpenAIJudge against a scripted OpenAI-compatible server on loopback that misbehaves on purpose."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rftune.errors import ConfigError
from rftune.judges.cache import CachedJudge, JudgeCache
from rftune.judges.openai_judge import OpenAIJudge

CLIENT_TIMEOUT = 0.3


class ScriptedServer:
    """Answers /v1/chat/completions following a script of actions, one per request, then "ok" forever.

    Actions: ok, slow (ok after 0.1 s), timeout (sleeps past the client timeout), 400, 401, 408, 429, 500,
    garbage (200 with a non-JSON body), no_choices (200 with JSON lacking choices).
    """

    def __init__(self, script=()):
        self.script = list(script)
        self.requests = []  # (action, body) in arrival order
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def actions(self):
        return [action for action, _ in self.requests]

    def _next(self, body):
        with self.lock:
            action = self.script.pop(0) if self.script else "ok"
            self.requests.append((action, body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return action

    def _done(self):
        with self.lock:
            self.in_flight -= 1

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                action = server._next(body)
                try:
                    self._act(action, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before we answered
                finally:
                    server._done()

            def _act(self, action, body):
                if action in ("slow", "timeout"):
                    time.sleep(0.1 if action == "slow" else CLIENT_TIMEOUT * 3)
                if action in ("ok", "slow", "timeout"):
                    text = "reply to: " + body["messages"][-1]["content"]
                    return self._send(200, {"id": "x", "object": "chat.completion", "created": 0,
                                            "model": body["model"], "choices": [
                                                {"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": text}}]})
                if action == "garbage":
                    return self._send(200, "<html>proxy error</html>", raw=True)
                if action == "no_choices":
                    return self._send(200, {"id": "x", "object": "chat.completion"})
                status = int(action)
                message = "bad key sk-test-secret-123" if status == 401 else f"scripted {status}"
                self._send(status, {"error": {"message": message, "type": "scripted"}},
                           headers={"Retry-After": "0"} if status == 429 else {})

            def _send(self, status, payload, raw=False, headers=None):
                data = (payload if raw else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_judge(server, sleeps=None, **options):
    """A judge on `server` whose backoff sleeps are recorded (and still slept) when `sleeps` is a list."""

    def recording_sleep(seconds):
        sleeps.append(seconds)
        time.sleep(seconds)

    settings = dict(model="scripted", base_url=server.base_url, api_key_env=None, timeout=CLIENT_TIMEOUT,
                    max_retries=4, concurrency=4, backoff_base=0.01, backoff_max=1.0)
    settings.update(options)
    return OpenAIJudge(sleep=recording_sleep if sleeps is not None else time.sleep, **settings)


def ask(text):
    return [{"role": "user", "content": text}]


def test_retries_timeouts_server_errors_and_malformed_replies_in_order():
    script = ["timeout", "500", "429", "garbage", "no_choices", "408", "ok"]
    with ScriptedServer(script) as server:
        sleeps = []
        judge = make_judge(server, sleeps, max_retries=6)
        assert judge.complete(ask("hello")) == "reply to: hello"
    assert server.actions() == script
    assert len(sleeps) == 6
    for attempt, delay in enumerate(sleeps, start=1):  # exponential with jitter in [half, all] of the ceiling
        ceiling = 0.01 * 2 ** (attempt - 1)
        assert ceiling / 2 <= delay <= ceiling
    assert sleeps == sorted(sleeps)
    assert judge.stats.snapshot_and_reset() == {"judge/calls": 1, "judge/retries": 6, "judge/failures": 0,
                                                "judge/cache_hits": 0, "judge/parse_failures": 0}


def test_failure_after_max_retries_gives_none_and_is_counted():
    with ScriptedServer(["500", "timeout", "500"]) as server:
        judge = make_judge(server, max_retries=2)
        assert judge.complete(ask("hello")) is None
        assert server.actions() == ["500", "timeout", "500"]
    counts = judge.stats.snapshot_and_reset()
    assert (counts["judge/calls"], counts["judge/retries"], counts["judge/failures"]) == (1, 2, 1)


def test_retry_after_header_sets_a_lower_bound_on_the_wait():
    judge = OpenAIJudge(model="m", base_url="http://127.0.0.1:9/v1", api_key_env=None, backoff_base=0.001)
    assert judge.backoff_delay(1, retry_after=0.5) == 0.5
    assert judge.backoff_delay(1, retry_after=999) == judge.backoff_max


def test_other_client_errors_are_not_retried():
    with ScriptedServer(["400"]) as server:
        judge = make_judge(server)
        assert judge.complete(ask("too long")) is None
        assert server.actions() == ["400"]
    assert judge.stats.snapshot()["judge/failures"] == 1


def test_rejected_key_raises_config_error_without_the_key(monkeypatch, caplog):
    monkeypatch.setenv("SCRIPTED_JUDGE_KEY", "sk-test-secret-123")
    with ScriptedServer(["401"]) as server:
        judge = make_judge(server, api_key_env="SCRIPTED_JUDGE_KEY")
        with pytest.raises(ConfigError) as error:
            judge.complete(ask("hello"))
        assert server.actions() == ["401"]
    assert "401" in str(error.value)
    assert "sk-test-secret-123" not in str(error.value) + repr(judge) + caplog.text


def test_missing_key_variable_is_a_config_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_JUDGE_KEY"):
        OpenAIJudge(model="m", api_key_env="NO_SUCH_JUDGE_KEY")


def test_cache_hits_cost_no_request_and_survive_a_new_judge(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRIPTED_JUDGE_KEY", "sk-test-secret-123")
    path = tmp_path / "judge.sqlite"
    with ScriptedServer() as server:
        first = CachedJudge(make_judge(server, api_key_env="SCRIPTED_JUDGE_KEY"), JudgeCache(path))
        assert first.complete_many([ask("a"), ask("b"), ask("a")]) == ["reply to: a", "reply to: b", "reply to: a"]
        assert len(server.requests) == 2  # the repeated prompt is asked once
        assert first.complete(ask("a")) == "reply to: a"
        assert len(server.requests) == 2
        second = CachedJudge(make_judge(server, api_key_env="SCRIPTED_JUDGE_KEY"), JudgeCache(path))
        assert second.complete_many([ask("b"), ask("a")]) == ["reply to: b", "reply to: a"]
        assert len(server.requests) == 2
    assert first.stats.snapshot()["judge/cache_hits"] + second.stats.snapshot()["judge/cache_hits"] == 3
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"sk-test-secret-123" not in stored


def test_failures_are_not_cached(tmp_path):
    with ScriptedServer(["500"]) as server:
        judge = CachedJudge(make_judge(server, max_retries=0), JudgeCache(tmp_path / "judge.sqlite"))
        assert judge.complete(ask("a")) is None
        assert judge.complete(ask("a")) == "reply to: a"
        assert server.actions() == ["500", "ok"]


def test_concurrency_bound_holds_across_threads():
    with ScriptedServer(["slow"] * 24) as server:
        judge = make_judge(server, concurrency=3)
        results = {}

        def run(name):
            results[name] = judge.complete_many([ask(f"{name}{i}") for i in range(8)])

        threads = [threading.Thread(target=run, args=(name,)) for name in "xyz"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results["y"] == [f"reply to: y{i}" for i in range(8)]
    assert len(server.requests) == 24
    assert 2 <= server.max_in_flight <= 3
