"""Structured output in OpenAI-style chat requests (`rftune serve`): the request's fields as a ``ConstraintConfig``.

OpenAI's ``response_format`` — ``{"type": "json_schema", "json_schema": {"schema": {...}}}`` (a JSON value valid
under the schema), ``{"type": "json_object"}`` (any JSON object) or ``{"type": "text"}`` (no constraint) — and, as
vLLM's extensions name them, ``guided_choice`` (a list of strings), ``guided_regex``, ``guided_json`` (a schema)
and ``guided_grammar`` (Lark, or GBNF when it has ``::=`` rules). At most one of them per request.
"""

from __future__ import annotations

from typing import Any

from rftune.config import ConstraintConfig

GUIDED = ("guided_choice", "guided_regex", "guided_json", "guided_grammar")


class ConstraintRequestError(ValueError):
    """A request's structured-output fields are malformed; ``param`` names the field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def request_constraint(request: dict[str, Any]) -> ConstraintConfig | None:
    """The constraint a chat request asks for, or None (raises `ConstraintRequestError` for a malformed one)."""
    given = [key for key in ("response_format", *GUIDED) if request.get(key) is not None]
    if "response_format" in given and _response_format(request["response_format"]) is None:
        given.remove("response_format")  # {"type": "text"}: no constraint
    if len(given) > 1:
        raise ConstraintRequestError(f"use one of response_format and {', '.join(GUIDED)}, not {' and '.join(given)}",
                                     given[1])
    if not given:
        return None
    key, value = given[0], request[given[0]]
    if key == "response_format":
        return _response_format(value)
    if key == "guided_choice":
        if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
            raise ConstraintRequestError("guided_choice must be a non-empty list of non-empty strings", key)
        return ConstraintConfig(choices=value)
    if key == "guided_json":
        return ConstraintConfig(json_schema=_schema(value, key))
    if not isinstance(value, str) or not value.strip():
        raise ConstraintRequestError(f"{key} must be a non-empty string", key)
    if key == "guided_regex":
        return ConstraintConfig(regex=value)
    return ConstraintConfig(gbnf=value) if "::=" in value else ConstraintConfig(grammar=value)


def _response_format(value: Any) -> ConstraintConfig | None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ConstraintConfig(json_schema={"type": "object"})
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise ConstraintRequestError('response_format json_schema needs {"json_schema": {"name": ..., '
                                         '"schema": {...}}}', "response_format")
        return ConstraintConfig(json_schema=_schema(spec["schema"], "response_format"))
    raise ConstraintRequestError("response_format type must be text, json_object or json_schema", "response_format")


def _schema(value: Any, param: str) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, dict):
        raise ConstraintRequestError(f"{param}: the JSON schema must be an object", param)
    return value
