"""A test double of OpenAI's Chat Completions API, speaking real HTTP on loopback.

Written after OpenAI's public API reference: `POST /v1/chat/completions` answers a
`chat.completion` object (id, object, created, model, choices[{index, message{role, content,
refusal}, finish_reason}], usage{prompt_tokens, completion_tokens, total_tokens}),
`GET /v1/models` a `list` of models, and errors carry
`{"error": {"message", "type", "param", "code"}}` with, for 429, `retry-after` headers.
A request with `"strict": true` structured output has its schema checked against the strict
subset OpenAI documents (conservatively: a keyword in doubt is refused) and is answered 400
when it falls outside, as OpenAI answers it.

`refuse_json_schema()` makes it a server that knows only `json_object`, as llama-cpp-python's
server is: there `response_format.type` is a `Literal["text", "json_object"]`, and the failed
request validation comes back as HTTP 500 naming the field.

    with OpenAIDouble(api_key="test-key") as llm:
        llm.respond_with({"summary": "..."})
        ... LLMClient(api_key="test-key", base_url=llm.base_url) ...
        assert llm.call_count == 1

Scripted behaviour lasts until `reset()`. The server runs uvicorn in a daemon thread with its
own event loop; the script and the request log are shared under a lock.
"""

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.doubles.loopback import LoopbackServer

Content = str | dict[str, Any] | Callable[[dict[str, Any]], str | dict[str, Any]]

DEFAULT_API_KEY = "test-openai-key"
# OpenAI reports the snapshot that answered, e.g. "gpt-4o-mini-2024-07-18" for "gpt-4o-mini".
SNAPSHOT_SUFFIX = "-2024-07-18"
MODELS = ("gpt-4o-mini", "gpt-4o")
NOT_JSON = "Here is the summary you asked for: the patient is doing well."
# What llama-cpp-python 0.3.x answers to `"response_format": {"type": "json_schema", ...}`.
LLAMA_CPP_FORMAT_REFUSAL = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
    "'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"llama_cpp/server/app.py\", "
    "line 376, in create_chat_completion\n    POST /v1/chat/completions"
)

_ERROR_KINDS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout", None, "Request timed out."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded."),
}

# Strict structured outputs: keywords OpenAI rejects in a strict schema.
_STRICT_UNSUPPORTED = frozenset(
    {
        "allOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "patternProperties",
        "propertyNames",
        "unevaluatedProperties",
        "dependentRequired",
        "dependentSchemas",
        "prefixItems",
        "contains",
        "minLength",
        "maxLength",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "default",
    }
)


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code, default_message = _ERROR_KINDS.get(status, ("api_error", None, "Error."))
    return {
        "error": {
            "message": message or default_message,
            "type": kind,
            "param": None,
            "code": code,
        }
    }


def strict_schema_problem(schema: Any, path: str = "") -> str | None:
    """Why OpenAI would refuse this schema in strict mode, or None when it is acceptable."""
    if not isinstance(schema, dict):
        return f"In context=({path}), schema must be an object"
    if path == "" and schema.get("type") != "object":
        return "In context=(), the root schema must be of type 'object'"
    for keyword in schema.keys() & _STRICT_UNSUPPORTED:
        return f"In context=({path}), '{keyword}' is not permitted"
    if "$ref" in schema:
        if len(schema) > 1:
            return (
                f"In context=({path}), $ref cannot have keywords {sorted(set(schema) - {'$ref'})}"
            )
        if not str(schema["$ref"]).startswith("#"):
            return f"In context=({path}), only local references are permitted"
        return None
    properties = schema.get("properties")
    if schema.get("type") == "object" or properties is not None:
        if schema.get("additionalProperties") is not False:
            return (
                f"In context=({path}), 'additionalProperties' is required to be supplied "
                "and to be false"
            )
        missing = set(properties or {}) - set(schema.get("required", []))
        if missing:
            return f"In context=({path}), 'required' is missing {sorted(missing)}"
    children: list[tuple[str, Any]] = []
    children += [(f"{path}, 'properties', '{k}'", v) for k, v in (properties or {}).items()]
    children += [(f"{path}, '$defs', '{k}'", v) for k, v in schema.get("$defs", {}).items()]
    children += [(f"{path}, 'anyOf', {i}", v) for i, v in enumerate(schema.get("anyOf", []))]
    if "items" in schema:
        children.append((f"{path}, 'items'", schema["items"]))
    for child_path, child in children:
        problem = strict_schema_problem(child, child_path.lstrip(", "))
        if problem:
            return problem
    return None


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any] | None


@dataclass
class _Script:
    content: Content = "{}"
    refusal: str | None = None
    finish_reason: str = "stop"
    delay_s: float = 0.0
    fail_status: int | None = None
    fail_times: int = 0
    retry_after_s: float | None = None
    json_schema_refusal: int | None = None  # the status json_schema requests are refused with
    requests: list[RecordedRequest] = field(default_factory=list)


class OpenAIDouble:
    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()  # the script and the request log
        self._script = _Script()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
        self._server = LoopbackServer(self.app, "openai-double")

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._server.port

    @property
    def base_url(self) -> str:
        return f"{self._server.origin}/v1"

    def start(self) -> "OpenAIDouble":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "OpenAIDouble":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the script --------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._script = _Script()

    def respond_with(self, content: Content) -> None:
        """The answer's `message.content`: a string as is, a dict JSON-encoded, or a function
        of the request body returning either."""
        with self._lock:
            self._script.content = content
            self._script.refusal = None

    def fail_with(
        self, status: int, times: int = 1_000_000, retry_after: float | None = None
    ) -> None:
        """The next `times` requests fail with `status`, then answers resume."""
        with self._lock:
            self._script.fail_status = status
            self._script.fail_times = times
            self._script.retry_after_s = retry_after

    def delay(self, seconds: float) -> None:
        with self._lock:
            self._script.delay_s = seconds

    def invalid_json(self) -> None:
        self.respond_with(NOT_JSON)

    def finish_reason_length(self) -> None:
        """Answers stop at the token limit: the content is cut off mid-JSON."""
        with self._lock:
            self._script.finish_reason = "length"

    def refuse_json_schema(self, status: int = 500) -> None:
        """Refuse every `json_schema` request as llama-cpp-python does; answer the others."""
        with self._lock:
            self._script.json_schema_refusal = status

    def refuse(self, message: str = "I'm sorry, I can't help with that.") -> None:
        with self._lock:
            self._script.refusal = message

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._script.requests)

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self._script.requests)

    @property
    def completion_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    # --- the API -----------------------------------------------------------------------------

    def _admit(self, request: Request, body: dict[str, Any] | None) -> _Script:
        """Record the request; give back a copy of the script as it stands."""
        with self._lock:
            script = self._script
            script.requests.append(
                RecordedRequest(request.method, request.url.path, dict(request.headers), body)
            )
            return _Script(
                content=script.content,
                refusal=script.refusal,
                finish_reason=script.finish_reason,
                delay_s=script.delay_s,
                json_schema_refusal=script.json_schema_refusal,
            )

    def _take_failure(self) -> JSONResponse | None:
        with self._lock:
            script = self._script
            if script.fail_status is None or script.fail_times <= 0:
                return None
            script.fail_times -= 1
            status, retry_after = script.fail_status, script.retry_after_s
        return self._error(status, retry_after=retry_after)

    def _error(
        self, status: int, message: str | None = None, retry_after: float | None = None
    ) -> JSONResponse:
        headers = {}
        if retry_after is not None:
            headers["retry-after-ms"] = str(max(1, round(retry_after * 1000)))
            headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        return JSONResponse(error_body(status, message), status_code=status, headers=headers)

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    async def _models(self, request: Request) -> JSONResponse:
        script = self._admit(request, None)
        if not self._authorized(request):
            return self._error(401)
        if failure := self._take_failure():
            return failure
        if not await _answer_slowly(request, script.delay_s):
            return self._error(499, "Client closed the request.")
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "system"} for m in MODELS
        ]
        return JSONResponse({"object": "list", "data": data})

    async def _chat_completions(self, request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        script = self._admit(request, body if isinstance(body, dict) else None)
        if not self._authorized(request):
            return self._error(401)
        if not isinstance(body, dict):
            return self._error(400, "We could not parse the JSON body of your request.")
        for required in ("model", "messages"):
            if not body.get(required):
                return self._error(400, f"Missing required parameter: '{required}'.")
        response_format = body.get("response_format")
        if script.json_schema_refusal is not None and _format_type(response_format) == (
            "json_schema"
        ):
            return JSONResponse(
                {
                    "error": {
                        "message": LLAMA_CPP_FORMAT_REFUSAL,
                        "type": "internal_server_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=script.json_schema_refusal,
            )
        problem = _response_format_problem(response_format)
        if problem:
            return self._error(400, problem)
        if failure := self._take_failure():
            return failure
        if not await _answer_slowly(request, script.delay_s):
            return self._error(499, "Client closed the request.")

        content: str | None = None
        if script.refusal is None:
            produced = script.content(body) if callable(script.content) else script.content
            content = produced if isinstance(produced, str) else json.dumps(produced)
            if script.finish_reason == "length":
                content = content[: max(1, len(content) // 2)]
        prompt_tokens = -(-len(json.dumps(body["messages"])) // 4)
        completion_tokens = -(-len(content or script.refusal or "") // 4)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": f"{body['model']}{SNAPSHOT_SUFFIX}",
                "system_fingerprint": "fp_double",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": content,
                            "refusal": script.refusal,
                        },
                        "logprobs": None,
                        "finish_reason": script.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )


async def _answer_slowly(request: Request, seconds: float) -> bool:
    """Wait `seconds`, or until the client hangs up (then False): a client that timed out
    leaves no handler behind to be cancelled when the double stops."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if await request.is_disconnected():
            return False
        await asyncio.sleep(min(0.02, remaining))
    return True


def _format_type(response_format: Any) -> Any:
    return response_format.get("type") if isinstance(response_format, dict) else None


def _response_format_problem(response_format: Any) -> str | None:
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        return "Invalid type for 'response_format': expected an object."
    if response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not spec.get("name"):
        return "Missing required parameter: 'response_format.json_schema.name'."
    if spec.get("strict") is True:
        problem = strict_schema_problem(spec.get("schema"))
        if problem:
            return f"Invalid schema for response_format '{spec['name']}': {problem}."
    return None
