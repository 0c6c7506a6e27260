"""An OpenAI-compatible chat server for any model rftune can load (``rftune serve``).

Endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models``. A request may set ``messages``, ``max_tokens``
(or ``max_completion_tokens``), ``temperature`` (0 = greedy; default 1 as in the OpenAI API), ``top_p``, ``n``,
``seed``, ``stop`` (up to 4 strings: generation ends when one appears, and the reply ends before it),
``logprobs``/``top_logprobs`` (each token's log-probability and up to 20 alternatives) and ``stream`` (server-sent
events in OpenAI's ``chat.completion.chunk`` format, ending with ``data: [DONE]``; ``stream_options.include_usage``
adds the usage chunk). Fields OpenAI itself ignores for the reply (``user``, ``metadata``, ``store``, ...) and
penalties at their no-op value are accepted; any other field is a 400 naming it, since ignoring it would
silently change what the client asked for. The reply carries ``choices`` (``finish_reason`` "stop" or "length"),
``usage`` and ``model``. Mistakes get a 4xx reply with an OpenAI-style ``{"error": {"message", "type", "param",
"code"}}`` body. Each request writes one line to the ``rftune.serve`` log: method, path, status, tokens, seconds.
Structured output (`rftune.structured_requests`): ``response_format`` json_schema / json_object, or the
``guided_choice``, ``guided_regex``, ``guided_json``, ``guided_grammar`` extension, compiled once per distinct
constraint and kept; streamed or not, each choice is decoded under it.

Connections are handled on threads, but generation runs one request at a time behind a lock: one model on one
device, and a seeded request must not share the random stream with another. Replies are decoded token by token
(`rftune.rollout.decoding`), the ``n`` choices one after another. The server binds 127.0.0.1 unless told otherwise and
checks no API key.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import torch

from rftune.constraints import ConstraintCompiler
from rftune.errors import ConfigError
from rftune.judges.local_judge import chat_prompt_ids, context_limit
from rftune.model.loading import load_model_and_tokenizer
from rftune.rollout.decoding import Delta, Finish, Sampling, decode_reply
from rftune.rollout.generation import eos_token_ids
from rftune.runtime.device import resolve_device
from rftune.structured_requests import GUIDED, ConstraintRequestError, request_constraint

log = logging.getLogger("rftune.serve")

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_CHOICES = 16
MAX_CONSTRAINTS = 64  # compiled constraints kept, by their request fields
DEFAULT_MAX_TOKENS = 256
MAX_TOP_LOGPROBS = 20
_ROLES = {"system", "user", "assistant", "developer"}
SERVED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "seed", "stop",
          "stream", "stream_options", "logprobs", "top_logprobs", "response_format", *GUIDED}
IGNORED = {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}  # no effect on text
NO_OP = {"frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "logit_bias": ({},)}  # accepted at these


class RequestError(Exception):
    """A client mistake, answered with ``status`` and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


class ChatService:
    """Validates chat-completion requests and answers them with one loaded model."""

    def __init__(self, model, tokenizer, served_name: str) -> None:
        self.model, self.tokenizer, self.served_name = model, tokenizer, served_name
        self.created = int(time.time())
        self._lock = threading.Lock()
        self._compiler: ConstraintCompiler | None = None  # built at the first constrained request (about 1 s)
        self._constraints: dict[str, Any] = {}

    def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.served_name, "object": "model", "created": self.created,
                                            "owned_by": "rftune"}]}

    def prepare(self, request: Any) -> dict[str, Any]:
        """The request's options, validated, with its prompt's token ids (raises `RequestError`)."""
        options = self._parse(request)
        if options["constraint"]:  # compiled here, so that a bad one is a 400 before any reply starts
            with self._lock:
                options["constraint"] = self._compiled(*options["constraint"])
        options["prompt"] = prompt = chat_prompt_ids(self.tokenizer, options["messages"])
        limit = context_limit(self.model)
        max_tokens = options["max_tokens"]
        if limit is not None and len(prompt) + max_tokens > limit:
            raise RequestError(400, f"the prompt is {len(prompt)} tokens and max_tokens is {max_tokens}, more than "
                                    f"this model's context of {limit} tokens", "messages", "context_length_exceeded")
        options["usage"] = {"prompt_tokens": len(prompt), "completion_tokens": 0, "total_tokens": len(prompt)}
        return options

    def chat_completion(self, request: Any) -> dict[str, Any]:
        """A whole ``chat.completion`` reply to a request (its ``stream`` field is not looked at)."""
        return self.complete(self.prepare(request))

    def complete(self, options: dict[str, Any]) -> dict[str, Any]:
        """The ``chat.completion`` reply to prepared `options`."""
        texts: dict[int, list[str]] = {}
        logprobs: dict[int, list] = {}
        finishes: dict[int, Finish] = {}
        for index, event in self._events(options):
            if isinstance(event, Delta):
                texts.setdefault(index, []).append(event.text)
                logprobs.setdefault(index, []).extend(event.logprobs)
            else:
                finishes[index] = event
        choices = [{"index": i, "message": {"role": "assistant", "content": "".join(texts.get(i, []))},
                    "finish_reason": finishes[i].reason,
                    "logprobs": _logprobs(logprobs.get(i, [])) if options["logprobs"] else None}
                   for i in range(options["n"])]
        return {**self._header(options, "chat.completion"), "choices": choices, "usage": options["usage"]}

    def chat_completion_chunks(self, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects of a streamed reply to prepared `options`, in order."""
        header = self._header(options, "chat.completion.chunk")
        with_usage = bool((options["stream_options"] or {}).get("include_usage"))
        extra = {"usage": None} if with_usage else {}
        started: set[int] = set()
        for index, event in self._events(options):
            if index not in started:
                started.add(index)
                yield {**header, "choices": [_chunk(index, {"role": "assistant", "content": ""})], **extra}
            if isinstance(event, Delta):
                lp = _logprobs(event.logprobs) if options["logprobs"] else None
                yield {**header, "choices": [_chunk(index, {"content": event.text}, logprobs=lp)], **extra}
            else:
                yield {**header, "choices": [_chunk(index, {}, finish_reason=event.reason)], **extra}
        if with_usage:
            yield {**header, "choices": [], "usage": options["usage"]}

    def _events(self, options: dict[str, Any]) -> Iterator[tuple[int, Delta | Finish]]:
        """(choice index, Delta or its Finish) as the choices are generated, one at a time under the lock."""
        sampling = Sampling(options["max_tokens"], options["temperature"], options["top_p"], options["stop"],
                            options["top_logprobs"], options["constraint"])
        generator = torch.Generator()
        if options["seed"] is None:
            generator.seed()
        else:
            generator.manual_seed(options["seed"])
        usage = options["usage"]
        with self._lock:
            for index in range(options["n"]):
                reply = decode_reply(self.model, self.tokenizer, options["prompt"], sampling, generator)
                while True:
                    try:
                        yield index, next(reply)
                    except StopIteration as done:
                        usage["completion_tokens"] += done.value.completion_tokens
                        usage["total_tokens"] += done.value.completion_tokens
                        yield index, done.value
                        break

    def _header(self, options: dict[str, Any], kind: str) -> dict[str, Any]:
        if "id" not in options:
            options["id"], options["created"] = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        return {"id": options["id"], "object": kind, "created": options["created"], "model": self.served_name,
                "system_fingerprint": None}

    def _compiled(self, spec, param: str):
        """The request's constraint compiled for this model (kept for later requests with the same one)."""
        key = repr(spec)
        if key not in self._constraints:
            self._compiler = self._compiler or ConstraintCompiler(self.tokenizer,
                                                                  eos_token_ids(self.tokenizer, self.model))
            try:
                compiled = self._compiler.compile(spec)
            except ConfigError as exc:
                raise RequestError(400, str(exc).replace("generation.constraint", param, 1), param) from None
            if len(self._constraints) >= MAX_CONSTRAINTS:
                self._constraints.pop(next(iter(self._constraints)))
            self._constraints[key] = compiled
        return self._constraints[key]

    def _parse(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise RequestError(400, "the request body must be a JSON object")
        request = {key: value for key, value in request.items() if value is not None}  # null = not given
        _check_fields(request)
        model = request.get("model")
        if model != self.served_name:
            raise RequestError(404, f"model {model!r} is not served here; this server serves {self.served_name!r}",
                               "model", "model_not_found")
        max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
        logprobs = _flag(request.get("logprobs"), "logprobs")
        top_logprobs = _number(request.get("top_logprobs"), "top_logprobs", 0, 0, MAX_TOP_LOGPROBS, integer=True)
        if top_logprobs and not logprobs:
            raise RequestError(400, "top_logprobs needs logprobs=true", "top_logprobs")
        stream = _flag(request.get("stream"), "stream")
        stream_options = request.get("stream_options")
        if stream_options is not None and (not stream or not isinstance(stream_options, dict)
                                           or set(stream_options) - {"include_usage"}):
            raise RequestError(400, "stream_options must be {\"include_usage\": true|false}, with stream=true",
                               "stream_options")
        return {"messages": _messages(request.get("messages")),
                "max_tokens": _number(max_tokens, "max_tokens", DEFAULT_MAX_TOKENS, 1, None, integer=True),
                "temperature": _number(request.get("temperature"), "temperature", 1.0, 0.0, 2.0),
                "top_p": _number(request.get("top_p"), "top_p", 1.0, 1e-9, 1.0),
                "n": _number(request.get("n"), "n", 1, 1, MAX_CHOICES, integer=True),
                "seed": _number(request.get("seed"), "seed", None, 0, None, integer=True),
                "stop": _stop(request.get("stop")), "logprobs": logprobs, "top_logprobs": top_logprobs,
                "stream": stream, "stream_options": stream_options, "constraint": _constraint(request)}


def _check_fields(request: dict[str, Any]) -> None:
    """Refuse a field this server would otherwise ignore while it changes the reply (see the module docstring)."""
    for key, value in request.items():
        if key in SERVED or key in IGNORED or (key in NO_OP and value in NO_OP[key]):
            continue
        why = f"only {NO_OP[key][0]!r} is supported" if key in NO_OP else "rftune serve does not support it"
        raise RequestError(400, f"unsupported request field {key!r}: {why}", key, "unsupported_parameter")


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(400, f"{name} must be true or false, got {value!r}", name)
    return value


def _chunk(index: int, delta: dict[str, Any], logprobs: dict | None = None,
           finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}


def _logprobs(tokens: list) -> dict[str, Any]:
    """OpenAI's ``logprobs`` object for these tokens."""
    def entry(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    content = [{**entry(t.token, t.logprob), "top_logprobs": [entry(text, lp) for text, lp in t.top]}
               for t in tokens]
    return {"content": content, "refusal": None}


def _constraint(request: dict[str, Any]):
    """(the request's ConstraintConfig, the field that asked for it), or None."""
    try:
        spec = request_constraint(request)
    except ConstraintRequestError as exc:
        raise RequestError(400, str(exc), exc.param) from None
    if spec is None:
        return None
    field = next(key for key in ("response_format", *GUIDED) if request.get(key) is not None)
    return spec, field


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list of {role, content} objects", "messages")
    cleaned = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise RequestError(400, f"messages[{i}] needs a role among {sorted(_ROLES)}", f"messages[{i}].role")
        role = "system" if message["role"] == "developer" else message["role"]
        cleaned.append({"role": role, "content": _content(message.get("content"), i)})
    return cleaned


def _content(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(part.get("text", "")) for part in content)
    raise RequestError(400, f"messages[{index}].content must be a string or a list of text parts",
                       f"messages[{index}].content")


def _number(value: Any, name: str, default, low, high, integer: bool = False):
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise RequestError(400, f"{name} must be {'an integer' if integer else 'a number'} {bounds}, got {value!r}",
                           name)
    return value


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise RequestError(400, "stop must be a non-empty string or a list of at most 4 of them", "stop")
    return stops


def _handler_class(service: ChatService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rftune-serve"

        def log_message(self, format: str, *args) -> None:
            """http.server's own access line is replaced by `_log_request`'s, one per request."""

        def do_GET(self) -> None:
            start = time.perf_counter()
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, service.list_models())
            else:
                self._send_error(RequestError(404, f"no such endpoint: GET {self.path}", code="not_found"))
            self._log_request(start)

        def do_POST(self) -> None:
            start, options = time.perf_counter(), None
            try:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    raise RequestError(404, f"no such endpoint: POST {self.path}", code="not_found")
                options = service.prepare(self._read_json())
                if options["stream"]:
                    self._send_events(service.chat_completion_chunks(options))
                else:
                    self._send(200, service.complete(options))
            except RequestError as exc:
                self._send_error(exc)
            except (BrokenPipeError, ConnectionResetError):
                self.status = 499  # the client went away mid-stream
            except Exception:  # a bug or resource failure: answer 500 and keep serving
                log.exception("chat completion failed")
                if not getattr(self, "streaming", False):
                    self._send_error(RequestError(500, "generation failed on the server; see its log"))
            self._log_request(start, options)

        def _log_request(self, start: float, options: dict | None = None) -> None:
            line = f"{self.command} {self.path} {getattr(self, 'status', '-')}"
            if options is not None:
                usage = options["usage"]
                line += (f" model={service.served_name} n={options['n']} prompt_tokens={usage['prompt_tokens']} "
                         f"completion_tokens={usage['completion_tokens']}" + (" stream" if options["stream"] else ""))
            log.info("%s %s %.2fs", self.address_string(), line, time.perf_counter() - start)

        def _read_json(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
            try:
                return json.loads(self.rfile.read(length) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise RequestError(400, f"the request body is not valid JSON: {exc}") from None

        def _send_error(self, error: RequestError) -> None:
            self._send(error.status, error.body())

        def _send_events(self, chunks: Iterator[dict[str, Any]]) -> None:
            """Server-sent events: one ``data: {chunk}`` per chunk as it is made, then ``data: [DONE]``."""
            first = next(chunks)  # generation starts (and may fail) before the status line is sent
            self.status, self.streaming = 200, True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            for chunk in itertools.chain([first], chunks):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode("utf-8"))
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.status = status
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def make_server(service: ChatService, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) for ``service``; ``port=0`` picks a free port."""
    server = ThreadingHTTPServer((host, port), _handler_class(service))
    server.daemon_threads = True
    return server


def load_service(model: str, adapter: str | None = None, dtype: str = "float32", device: str | None = None,
                 served_name: str | None = None) -> ChatService:
    """Load ``model`` (any name or path rftune accepts) on `device` (auto: CUDA when available, else the CPU) and
    wrap it in a `ChatService`."""
    device = resolve_device(device or "auto")  # before the model is loaded
    loaded, tokenizer = load_model_and_tokenizer(model, dtype=dtype, adapter=adapter)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"model {model!r} has no chat template in its tokenizer, so it cannot serve chat requests")
    loaded.to(device)
    return ChatService(loaded, tokenizer, served_name or model)
