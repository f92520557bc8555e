"""The request bodies of ``lmforge serve`` (OpenAI's chat and text completions, as pydantic models that
forbid unknown fields), the fields it refuses, and its errors as OpenAI's error object with a
one-line message naming the field. ``lmforge.serve.server`` (its module docstring) says what each
field does.

- Types are strict (pydantic's strict mode), as OpenAI checks them: ``"max_tokens": "5"``, ``true``
  for an integer, ``5.0`` for an integer, ``"stream": "yes"`` are 400s naming the field, not coerced.
  A float field takes an integer (``"temperature": 1``), as JSON does not tell them apart.
- An explicit ``null`` means the field's default, for every field that has one: OpenAI types its
  optional parameters as nullable, and its Python client sends ``null`` for an argument of ``None``.
- ``seed``: a signed 64-bit integer, as OpenAI's; all 2**64 seeds give distinct streams
  (``lmforge.infer.text.seed_key``).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

from lmforge.data.chat import call_arguments

try:   # the ``serve`` extra; a clear line when it is missing (checked again by ``create_app``)
    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
except ImportError as _e:   # pragma: no cover - exercised only without the extra
    _MISSING = _e
    BaseModel = object
else:
    _MISSING = None

MAX_STOP_STRINGS = 4   # OpenAI's limit on ``stop``
MAX_TOP_LOGPROBS = 20  # alternatives per token at most (OpenAI's chat limit; vLLM's default max_logprobs)
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 63) - 1   # OpenAI's seed: a signed 64-bit integer


# -------------------------------------------------------------------------------------- request bodies
if _MISSING is None:
    class _Body(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        @model_validator(mode="before")
        @classmethod
        def _null_is_the_default(cls, data):
            """An explicit ``null`` for a field with a default is that default (see the module docstring)."""
            if not isinstance(data, dict):
                return data
            fields = cls.model_fields
            return {k: v for k, v in data.items() if v is not None or k not in fields or fields[k].is_required()}

    class TextPart(_Body):
        type: Literal["text"]
        text: str

    class FunctionCall(_Body):
        name: str
        arguments: str | dict

    class ToolCallPart(_Body):
        id: str | None = None
        type: Literal["function"] = "function"
        function: FunctionCall

    class FunctionDef(_Body):
        name: str = Field(min_length=1)
        description: str | None = None
        parameters: dict | None = None
        strict: bool | None = None

    class ToolDef(_Body):
        type: Literal["function"]
        function: FunctionDef

    class Message(_Body):
        role: Literal["system", "developer", "user", "assistant", "tool"]
        content: str | list[TextPart] | None = None
        name: str | None = None
        tool_calls: list[ToolCallPart] | None = None   # an assistant's calls
        tool_call_id: str | None = None                # a tool result's call

        def text(self) -> str:
            if self.content is None:
                if self.role != "assistant":
                    raise BadRequest(f"messages: a {self.role} message needs content (only an assistant's may be null)",
                                     param="messages")
                return ""
            return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

        def for_template(self, index: int) -> dict:
            """The message as chat templates take it: developer as system, calls with object arguments.
            Raises BadRequest for ``name``: lmforge's chat format has no place for a participant's name
            (and an imported template may drop it), and the server ignores no field silently."""
            if self.name is not None:
                raise BadRequest(f"messages.{index}.name: not supported by lmforge serve (got {self.name!r}; the chat "
                                 f"template has no place for a participant's name); leave it unset or put the name "
                                 f"in the content", param=f"messages.{index}.name")
            out = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
            if self.tool_calls:
                if self.role != "assistant":
                    raise BadRequest(f"messages.{index}.tool_calls: only an assistant message calls tools",
                                     param=f"messages.{index}.tool_calls")
                try:
                    out["tool_calls"] = [{"type": "function", "function": {
                        "name": c.function.name, "arguments": call_arguments(c.function.arguments, "arguments")}}
                        for c in self.tool_calls]
                except ValueError as e:
                    raise BadRequest(f"messages.{index}.tool_calls: {e}", param=f"messages.{index}.tool_calls") from None
            return out

    class StreamOptions(_Body):
        include_usage: bool = False

    class _Sampling(_Body):
        model: str
        temperature: float = 1.0        # a finite number in [0, 2] (``_temperature``)
        top_p: float = 1.0              # a finite number in (0, 1]
        top_k: int = Field(0, ge=-1)    # vLLM's extension; 0 or -1 (vLLM's "off") → off
        n: int = Field(1, ge=1)
        max_tokens: int | None = Field(None, ge=1)
        stop: str | list[str] | None = None
        stream: bool = False
        stream_options: StreamOptions | None = None
        seed: int | None = None
        user: str | None = None
        # OpenAI fields that ask nothing of a sampler: taken and ignored (``store`` only as false)
        store: Literal[False] | None = None
        metadata: dict[str, str] | None = None
        service_tier: str | None = None
        # OpenAI fields this server cannot honour: refused when set (``_refuse_unsupported``)
        presence_penalty: float = 0.0
        frequency_penalty: float = 0.0
        logit_bias: dict[str, float] | None = None

        @field_validator("temperature")
        @classmethod
        def _temperature(cls, value):
            if not (math.isfinite(value) and 0 <= value <= 2):
                raise ValueError(f"expected a finite number in [0, 2], got {value}")
            return value

        @field_validator("top_p")
        @classmethod
        def _top_p(cls, value):
            if not (math.isfinite(value) and 0 < value <= 1):
                raise ValueError(f"expected a finite number in (0, 1], got {value}")
            return value

        @field_validator("seed")
        @classmethod
        def _seed(cls, seed):
            if seed is not None and not SEED_MIN <= seed <= SEED_MAX:
                raise ValueError(f"expected an integer in [-2**63, 2**63 - 1] (a signed 64-bit integer), got {seed}")
            return seed

        @field_validator("stop")
        @classmethod
        def _stops(cls, stop):
            stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
            if len(stops) > MAX_STOP_STRINGS or any(not s for s in stops):
                raise ValueError(f"expected at most {MAX_STOP_STRINGS} non-empty strings, got {list(stops)!r}")
            return stop

        def stop_strings(self) -> tuple[str, ...]:
            return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    class ChatCompletionRequest(_Sampling):
        messages: list[Message] = Field(min_length=1)
        max_completion_tokens: int | None = Field(None, ge=1)
        logprobs: bool = False
        top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
        tools: list[ToolDef] | None = None
        tool_choice: Any = None
        parallel_tool_calls: bool | None = None
        response_format: dict | None = None

    class CompletionRequest(_Sampling):
        prompt: str | list[str] | list[int] | list[list[int]]
        logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)   # the legacy API: alternatives per token
        echo: bool = False
        suffix: str | None = None
        best_of: int | None = None

        @field_validator("prompt", mode="before")
        @classmethod
        def _prompt(cls, prompt):
            """One line for any other shape (a union's errors would name one member, e.g. ``[true]``)."""
            is_int = lambda x: isinstance(x, int) and not isinstance(x, bool)
            if isinstance(prompt, str) or isinstance(prompt, list) and (
                    all(isinstance(p, str) for p in prompt) or all(map(is_int, prompt))
                    or all(isinstance(p, list) and all(map(is_int, p)) for p in prompt)):
                return prompt
            raise ValueError(f"expected a string, a list of strings, a list of token ids or a list of such lists; "
                             f"got {json.dumps(prompt)[:80]}")


_UNSUPPORTED = {   # field -> the values that mean "not asked for"
    "presence_penalty": (0.0,), "frequency_penalty": (0.0,), "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "suffix": (None, ""), "best_of": (None, 1),
}


class BadRequest(Exception):
    """A request the server refuses: ``status`` and a one-line message naming ``param``."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.kind, self.code = message, param, status, kind, code


def error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _refuse_unsupported(body) -> None:
    for name, off in _UNSUPPORTED.items():
        if name not in type(body).model_fields:
            continue
        value = getattr(body, name)
        if value not in off:
            raise BadRequest(f"{name}: not supported by lmforge serve (got {value!r}); leave it unset",
                             param=name)
    if body.stream_options is not None and not body.stream:
        raise BadRequest("stream_options: only with stream: true", param="stream_options")
    if body.stream and body.logprobs not in (None, False):
        raise BadRequest("logprobs: not supported with stream: true (ask without streaming)", param="logprobs")
    if isinstance(body, ChatCompletionRequest) and body.top_logprobs and not body.logprobs:
        raise BadRequest(f"top_logprobs: {body.top_logprobs} alternatives need logprobs: true", param="top_logprobs")
    if isinstance(body, ChatCompletionRequest) and body.tool_choice not in (None, "none", "auto"):
        raise BadRequest(f"tool_choice: {json.dumps(body.tool_choice)} would force a call, which needs constrained "
                         f"decoding; lmforge serve takes \"auto\" or \"none\"", param="tool_choice")
    if isinstance(body, ChatCompletionRequest) and body.tools and body.stream and body.tool_choice != "none":
        raise BadRequest("tools: not supported with stream: true (a call is read from the whole reply; ask "
                         "without streaming)", param="tools")
    if isinstance(body, CompletionRequest) and body.echo and body.stream:
        raise BadRequest("echo: not supported with stream: true (ask without streaming)", param="echo")



# -------------------------------------------------------------------------------------- errors
def _nearest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, [k for k in known if k != name], n=1)   # a field of the other endpoint
    return f" (did you mean {close[0]!r}?)" if close else ""


_UNION_TAG = re.compile(r"str|int|float|bool|dict|list|none|.*\[.*\]")   # pydantic's names of union members


def _validation_message(exc) -> tuple[str, str | None]:
    """Pydantic's error as one line naming the field: of several (a union's: ``content`` as a string, or
    as a list of parts) the deepest, an unknown field before a missing one beside it (a misspelt name),
    with the union's member names left out of the path."""
    err = max(exc.errors(), key=lambda e: (len(e.get("loc", ())), e.get("type") != "missing"))
    loc = [str(x) for x in err.get("loc", ()) if x != "body" and not _UNION_TAG.fullmatch(str(x))]
    param = ".".join(loc) or None
    if err.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}", None
    if param is None and err.get("type") == "missing":
        return "the request body is empty; expected a JSON object", None
    if param is None and err.get("type") == "model_attributes_type":
        return ("the request body is not a JSON object (was it sent with Content-Type: application/json?)", None)
    if err.get("type") == "extra_forbidden" and loc:
        return f"{param}: unknown parameter{_nearest(loc[-1], _KNOWN.get(len(loc), ()))}", param
    if err.get("type") == "missing":
        return f"{param}: required", param
    msg = err["msg"].removeprefix("Value error, ")
    return f"{param}: {msg}" if param else msg, param


_KNOWN: dict[int, tuple[str, ...]] = {} if _MISSING is not None else {   # field names by depth, for suggestions
    1: tuple(sorted(set(ChatCompletionRequest.model_fields) | set(CompletionRequest.model_fields))),
    3: tuple(Message.model_fields)}
