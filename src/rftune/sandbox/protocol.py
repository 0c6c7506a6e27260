"""The wire between the test harness and the program under test, and the program side's whole main loop.

This module uses the standard library only and imports nothing from rftune: its source text is what the sandboxed
interpreter runs (``python -I -S -c <this source>``), inside a root where rftune is not visible.

Frames are a 4-byte big-endian length and a JSON body. Values cross as *plain data* only — None, bool, int, float,
str, bytes, complex, list, tuple, dict, set, frozenset — in a tagged JSON form (a JSON object is always a tag:
``{"t": [...]}`` tuple, ``{"d": [[k, v], ...]}`` dict, ``{"s"|"f": [...]}`` set/frozenset, ``{"b": hex}`` bytes,
``{"c": [re, im]}`` complex). The harness decodes replies with `decode`, which builds nothing but those types, so a
program cannot hand the harness an object with a rigged ``__eq__`` or a pickle that runs code.

The program side (`serve`) receives the program's source, runs it, reports the names of its callables, then answers
calls ``{"call": name, "args": [...], "kwargs": {...}}`` with ``{"ok": true, "value": ...}`` or
``{"ok": false, "type": ..., "error": ...}``. It never sees a test or an expected value.
"""

import json
import os
import struct
import traceback

MAX_FRAME = 8 * 1024 * 1024  # bytes; a bigger reply is refused (and counts as a failed call)
MAX_DEPTH = 64  # nesting of a value


class ProtocolError(Exception):
    """A frame or value that breaks the protocol (too big, malformed, not plain data)."""


def encode(value, depth=0):
    """A plain value as tagged JSON-ready data; anything else raises ProtocolError."""
    if depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    if value is None or type(value) in (bool, str):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, complex):
        return {"c": [value.real, value.imag]}
    if isinstance(value, (bytes, bytearray)):
        return {"b": bytes(value).hex()}
    if isinstance(value, list):
        return [encode(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return {"t": [encode(item, depth + 1) for item in value]}
    if isinstance(value, dict):
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if isinstance(value, (set, frozenset)):
        return {"f" if isinstance(value, frozenset) else "s": [encode(item, depth + 1) for item in value]}
    raise ProtocolError(f"cannot pass a {type(value).__name__} across the sandbox (plain data only)")


def decode(data, depth=0):
    """The inverse of `encode`; builds only plain built-in types and rejects anything else."""
    if depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [decode(item, depth + 1) for item in data]
    if type(data) is not dict or len(data) != 1:
        raise ProtocolError(f"malformed value {str(data)[:80]!r}")
    (tag, body), = data.items()
    if tag == "c" and type(body) is list and len(body) == 2 and all(type(x) in (int, float) for x in body):
        return complex(body[0], body[1])
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    if type(body) is not list:
        raise ProtocolError(f"malformed value {str(data)[:80]!r}")
    if tag == "d":
        if not all(type(pair) is list and len(pair) == 2 for pair in body):
            raise ProtocolError("malformed dict")
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in body}
    items = [decode(item, depth + 1) for item in body]
    constructors = {"t": tuple, "s": set, "f": frozenset}
    if tag not in constructors:
        raise ProtocolError(f"unknown value tag {tag!r}")
    return constructors[tag](items)


def send(fd, message):
    """Write one frame (a JSON-able dict)."""
    body = json.dumps(message).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(fd, data):]


def read_exactly(fd, size, wait=None):
    """`size` bytes from `fd`, or None at end of file; `wait(fd)` blocks until readable (raises on time-out)."""
    chunks, left = [], size
    while left:
        if wait is not None:
            wait(fd)
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd, wait=None):
    """Read one frame; None when the other side has closed the pipe."""
    header = read_exactly(fd, 4, wait)
    if header is None:
        return None
    (size,) = struct.unpack(">I", header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the {MAX_FRAME}-byte limit")
    body = read_exactly(fd, size, wait)
    if body is None:
        return None
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if type(message) is not dict:
        raise ProtocolError("frame is not a JSON object")
    return message


def _failure(exc):
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return {"ok": False, "type": type(exc).__name__, "error": last[:2000]}


def serve(fd_in, fd_out):
    """Program side: run the received source, then answer calls until the harness closes the pipe."""
    message = receive(fd_in)
    namespace = {"__name__": "__program__", "__builtins__": __builtins__}
    try:
        exec(compile(message["code"], "<program>", "exec"), namespace)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the program does not get to stop early
        send(fd_out, _failure(exc))
        return
    names = sorted(name for name, value in namespace.items() if callable(value) and not name.startswith("__"))
    send(fd_out, {"ok": True, "names": names})
    while True:
        message = receive(fd_in)
        if message is None:
            return
        try:
            function = namespace[message["call"]]
            value = function(*decode(message["args"]), **decode(message["kwargs"]))
            reply = {"ok": True, "value": encode(value)}
        except BaseException as exc:
            reply = _failure(exc)
        send(fd_out, reply)
