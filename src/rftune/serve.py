"""An OpenAI-compatible chat server for any model rftune can load (``rftune serve``).

Endpoints: ``POST /v1/chat/completions`` (non-streaming) and ``GET /v1/models``. A request may set ``messages``,
``max_tokens`` (or ``max_completion_tokens``), ``temperature`` (0 = greedy; default 1 as in the OpenAI API),
``top_p``, ``n``, ``seed`` and ``stop``, and structured output (`rftune.structured_requests`: ``response_format``
json_schema / json_object, or ``guided_choice``, ``guided_regex``, ``guided_json``, ``guided_grammar``, compiled
once per distinct constraint and kept); other fields are accepted and ignored. The reply carries ``choices``
(with ``finish_reason`` "stop" or "length"), ``usage`` and ``model``. Mistakes get a 4xx reply with an OpenAI-style
``{"error": {"message", "type", "param", "code"}}`` body.

Connections are handled on threads, but generation runs one request at a time behind a lock: one model on one
device, and a seeded request must not share the random stream with another. ``n`` choices of a request are
generated together in one batch. The server binds 127.0.0.1 unless told otherwise and checks no API key.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from rftune.constraints import ConstraintCompiler
from rftune.errors import ConfigError
from rftune.rollout.generation import eos_token_ids
from rftune.runtime.device import resolve_device
from rftune.structured_requests import GUIDED, ConstraintRequestError, request_constraint
from rftune.judges.local_judge import chat_prompt_ids, chat_replies, context_limit
from rftune.model.loading import load_model_and_tokenizer

log = logging.getLogger("rftune.serve")

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_CHOICES = 16
MAX_CONSTRAINTS = 64  # compiled constraints kept, by their request fields
DEFAULT_MAX_TOKENS = 256
_ROLES = {"system", "user", "assistant", "developer"}


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

    def chat_completion(self, request: Any) -> dict[str, Any]:
        options = self._parse(request)
        prompt = chat_prompt_ids(self.tokenizer, options["messages"])
        limit = context_limit(self.model)
        max_tokens = options["max_tokens"]
        if limit is not None and len(prompt) + max_tokens > limit:
            raise RequestError(400, f"the prompt is {len(prompt)} tokens and max_tokens is {max_tokens}, more than "
                                    f"this model's context of {limit} tokens", "messages", "context_length_exceeded")
        with self._lock:
            constraint = self._compiled(*options["constraint"]) if options["constraint"] else None
            if options["seed"] is not None:
                torch.manual_seed(options["seed"])
            (replies,) = chat_replies(self.model, self.tokenizer, [prompt], max_tokens, options["temperature"],
                                          options["top_p"], options["n"], constraint)
        choices = [_choice(i, reply.text, reply.finish_reason, options["stop"]) for i, reply in enumerate(replies)]
        completion_tokens = sum(reply.completion_tokens for reply in replies)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.served_name, "choices": choices,
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": completion_tokens,
                          "total_tokens": len(prompt) + completion_tokens}}

    def _parse(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise RequestError(400, "the request body must be a JSON object")
        if request.get("stream"):
            raise RequestError(400, "streaming is not supported by rftune serve; send stream=false", "stream")
        model = request.get("model")
        if model != self.served_name:
            raise RequestError(404, f"model {model!r} is not served here; this server serves {self.served_name!r}",
                               "model", "model_not_found")
        max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
        return {"messages": _messages(request.get("messages")),
                "max_tokens": _number(max_tokens, "max_tokens", DEFAULT_MAX_TOKENS, 1, None, integer=True),
                "temperature": _number(request.get("temperature"), "temperature", 1.0, 0.0, 2.0),
                "top_p": _number(request.get("top_p"), "top_p", 1.0, 1e-9, 1.0),
                "n": _number(request.get("n"), "n", 1, 1, MAX_CHOICES, integer=True),
                "seed": _number(request.get("seed"), "seed", None, 0, None, integer=True),
                "stop": _stop(request.get("stop")), "constraint": _constraint(request)}

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


def _choice(index: int, text: str, finish_reason: str, stops: list[str]) -> dict[str, Any]:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    if cut >= 0:
        text, finish_reason = text[:cut], "stop"
    return {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason,
            "logprobs": None}


def _handler_class(service: ChatService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rftune-serve"

        def log_message(self, format: str, *args) -> None:
            log.info("%s - %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, service.list_models())
            self._send_error(RequestError(404, f"no such endpoint: GET {self.path}", code="not_found"))

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send_error(RequestError(404, f"no such endpoint: POST {self.path}", code="not_found"))
            try:
                self._send(200, service.chat_completion(self._read_json()))
            except RequestError as exc:
                self._send_error(exc)
            except Exception:  # a bug or resource failure: answer 500 and keep serving
                log.exception("chat completion failed")
                self._send_error(RequestError(500, "generation failed on the server; see its log"))

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

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
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
