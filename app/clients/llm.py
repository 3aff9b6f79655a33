"""The LLM client: structured (JSON schema) answers from any OpenAI-compatible server.

Callers fall back when the model cannot help, so every failure is one `LLMError` subclass
whose `reason` is short and fit to show a user; none of them is an HTTP error by itself.
The prompt, the answer and the API key are never logged: one line per call says which model,
how long, how it ended and how many tokens it used.

Retries are the SDK's own (connection errors, 408, 409, 429 and 5xx, with backoff and jitter,
honouring `Retry-After`), bounded by `max_retries`; an overall deadline of `timeout_s` keeps
the retries from adding up to more than that.

The answer's shape is asked for with `response_format`. OpenAI takes strict `json_schema`; some
OpenAI-compatible servers (llama-cpp-python's) know only `json_object` and refuse the request.
With `response_format="auto"` such a refusal is retried once as `json_object`, with the schema
in a system message, and the server's choice is remembered by the client, so its later calls
go straight to `json_object`. Either way the answer is validated against the pydantic model.
"""

import asyncio
import copy
import functools
import json
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

import httpx
import openai
import structlog
from fastapi import Depends, Request
from pydantic import BaseModel, SecretStr, ValidationError

log = structlog.get_logger(__name__)

T = TypeVar("T", bound=BaseModel)

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 2
CHECK_TIMEOUT_S = 2.0
NO_KEY_REASON = "no OPENAI_API_KEY configured"
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30)

ResponseFormat = Literal["auto", "json_schema", "json_object"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)
# A server that does not take `json_schema` answers with one of these statuses (llama-cpp-python:
# 500, its request validation wrapped as a server error) and names the field it refused. The
# name is required too, so that an ordinary 400 or 500 is never mistaken for a refusal.
_FORMAT_REFUSAL_STATUSES = frozenset({400, 422, 500})
_FORMAT_REFUSAL = re.compile(r"response_format|json_schema", re.IGNORECASE)
# OpenAI's answer to a schema outside its strict subset: the format is understood, the schema
# is not, and strict_json_schema() exists so that this never happens; it is no refusal.
_SCHEMA_REJECTED = re.compile(r"invalid schema", re.IGNORECASE)


# --- errors ----------------------------------------------------------------------------------


class LLMError(Exception):
    """The model gave no usable answer. `reason` is short and safe to show a user."""

    reason = "the language model is unavailable"
    outcome = "error"

    def __init__(self, reason: str | None = None, *, status: int | None = None) -> None:
        self.reason = reason or type(self).reason
        self.status = status
        super().__init__(self.reason)


class LLMUnavailable(LLMError):
    reason, outcome = "the language model service cannot be reached", "unavailable"


class LLMTimeout(LLMError):
    reason, outcome = "the language model did not answer in time", "timeout"


class LLMRateLimited(LLMError):
    reason, outcome = "the language model service is rate limiting requests", "rate_limited"


class LLMServerError(LLMError):
    reason, outcome = "the language model service failed", "server_error"


class LLMRefused(LLMError):
    reason, outcome = "the language model service refused the request", "refused"


class LLMInvalidAnswer(LLMError):
    reason, outcome = "the language model gave an unusable answer", "invalid_answer"


def _from_sdk_error(exc: openai.OpenAIError) -> LLMError:
    if isinstance(exc, openai.APITimeoutError):  # a subclass of APIConnectionError
        return LLMTimeout()
    if isinstance(exc, openai.APIConnectionError):
        return LLMUnavailable()
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return LLMRateLimited(status=status)
        if status >= 500:
            return LLMServerError(
                f"the language model service failed (HTTP {status})", status=status
            )
        if status == 408:
            return LLMTimeout(status=status)
        if status in (401, 403):
            return LLMRefused(
                f"the language model service rejected the API key (HTTP {status})", status=status
            )
        return LLMRefused(
            f"the language model service refused the request (HTTP {status})", status=status
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return LLMInvalidAnswer("the language model service sent a malformed response")
    return LLMServerError("the language model client failed unexpectedly")


# --- strict JSON schema ----------------------------------------------------------------------


class StrictSchemaError(TypeError):
    """The output model cannot be expressed in OpenAI's strict structured-output subset."""


# Formats strict mode accepts; any other `format` is dropped (pydantic still checks it).
_STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
# Keywords strict mode rejects but whose loss only loosens the schema: the answer is still
# validated against the pydantic model, which enforces them.
_DROPPED = frozenset(
    {
        "default",
        "examples",
        "minLength",
        "maxLength",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "discriminator",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentEncoding",
        "contentMediaType",
    }
)
# Keywords with no strict-mode equivalent: dropping them would change the meaning.
_UNSUPPORTED = frozenset(
    {
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
    }
)


def strict_json_schema(output_model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema rewritten for `"strict": true` (OpenAI Structured Outputs).

    Every object gets `additionalProperties: false` and lists all its properties as required
    (an optional field stays nullable, so the model answers null); `$defs` are kept, and a
    `$ref` with sibling keywords (a field's description) is inlined, which strict mode needs;
    `oneOf` becomes `anyOf` and `const` a one-value `enum`. Raises StrictSchemaError for what
    strict mode cannot say (free-form mappings, tuples, a root that is not an object).
    """
    return copy.deepcopy(_cached_strict_schema(output_model))


@functools.lru_cache(maxsize=256)
def _cached_strict_schema(output_model: type[BaseModel]) -> dict[str, Any]:
    schema = output_model.model_json_schema()
    strict = _strict(schema, "#", schema, frozenset())
    if strict.get("type") != "object":
        raise StrictSchemaError(
            f"{output_model.__name__}: the root of the schema must be an object"
        )
    return strict


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise StrictSchemaError(f"only local references are supported, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _strict(node: Any, path: str, root: dict[str, Any], inlining: frozenset[str]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise StrictSchemaError(f"{path}: expected a schema object")
    ref = node.get("$ref")
    if ref is not None:
        siblings = {k: v for k, v in node.items() if k != "$ref" and k not in _DROPPED}
        if not siblings or ref in inlining:  # inlining a recursive reference would not end
            return {"$ref": ref}
        return _strict({**_resolve(root, ref), **siblings}, path, root, inlining | {ref})
    all_of = node.get("allOf")
    if all_of is not None:
        if len(all_of) != 1:
            raise StrictSchemaError(f"{path}: strict mode does not support 'allOf'")
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _strict({**all_of[0], **rest}, path, root, inlining)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key in _UNSUPPORTED:
            raise StrictSchemaError(f"{path}: strict mode does not support {key!r}")
        if key == "additionalProperties":
            if value is not False:
                raise StrictSchemaError(
                    f"{path}: strict mode cannot express a free-form mapping; use a model"
                )
        elif key in ("anyOf", "oneOf"):
            out["anyOf"] = [
                _strict(item, f"{path}/anyOf/{i}", root, inlining) for i, item in enumerate(value)
            ]
        elif key in ("properties", "$defs"):
            out[key] = {
                name: _strict(item, f"{path}/{key}/{name}", root, inlining)
                for name, item in value.items()
            }
        elif key == "items":
            out[key] = _strict(value, f"{path}/items", root, inlining)
        elif key == "const":
            out["enum"] = [value]
        elif key == "format":
            if value in _STRICT_FORMATS:
                out[key] = value
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out:
        out["properties"] = out.get("properties", {})
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    return out


# --- the client ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LLMUsage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class LLMResult(Generic[T]):
    value: T
    model: str  # as the server reported it, e.g. "gpt-4o-mini-2024-07-18"
    duration_ms: int
    usage: LLMUsage | None


def estimate_tokens(text: str) -> int:
    """About four characters a token for English text: cheap, offline, errs high on prose."""
    return -(-len(text) // 4)


@dataclass
class _CallTrace:
    """What the HTTP layer saw during one call (attempts, statuses), for the log and for
    naming the cause when the overall deadline cuts the retries short."""

    attempts: int = 0
    statuses: list[int] = field(default_factory=list)
    asks_json_schema: bool = False
    # Where the statuses of the current request start (after a response-format fallback).
    request_starts_at: int = 0


_TRACE: ContextVar[_CallTrace | None] = ContextVar("llm_call_trace", default=None)


async def _count_attempt(request: httpx.Request) -> None:
    trace = _TRACE.get()
    if trace is not None:
        trace.attempts += 1


async def _remember_status(response: httpx.Response) -> None:
    trace = _TRACE.get()
    if trace is None:
        return
    trace.statuses.append(response.status_code)
    if trace.asks_json_schema and response.status_code in _FORMAT_REFUSAL_STATUSES:
        await response.aread()
        if _is_format_refusal(response.text):
            # The same request would be refused again: the SDK obeys this header and does not
            # spend its retries (and their backoff) on it.
            response.headers["x-should-retry"] = "false"


def _is_format_refusal(error_text: str) -> bool:
    return bool(_FORMAT_REFUSAL.search(error_text)) and not _SCHEMA_REJECTED.search(error_text)


def _refuses_json_schema(exc: openai.APIStatusError) -> bool:
    """The server refused the `json_schema` response format itself (not the request)."""
    return exc.status_code in _FORMAT_REFUSAL_STATUSES and _is_format_refusal(
        f"{exc.message} {exc.body}"
    )


@functools.cache
def _schema_instruction(output_model: type[BaseModel]) -> dict[str, str]:
    """The schema as an instruction, for servers that can only be asked for some JSON object."""
    schema = json.dumps(output_model.model_json_schema(), separators=(",", ":"))
    return {
        "role": "system",
        "content": "Answer with one JSON object matching this JSON schema, and nothing else:\n"
        + schema,
    }


class LLMClient:
    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        response_format: ResponseFormat = "auto",
    ) -> None:
        if response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}")
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.response_format = response_format
        # What this server was found to take, in "auto" mode (None: not known yet).
        self._discovered_format: Literal["json_schema", "json_object"] | None = None
        self._http: httpx.AsyncClient | None = None
        self._openai: openai.AsyncOpenAI | None = None
        self._probe: openai.AsyncOpenAI | None = None
        if not api_key:
            return
        self._http = httpx.AsyncClient(
            limits=_LIMITS,
            timeout=httpx.Timeout(timeout_s),
            event_hooks={"request": [_count_attempt], "response": [_remember_status]},
        )
        # base_url None: the SDK's default (OPENAI_BASE_URL, else https://api.openai.com/v1).
        self._openai = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=self._http,
        )
        self._probe = self._openai.with_options(
            max_retries=0, timeout=min(CHECK_TIMEOUT_S, timeout_s)
        )

    @classmethod
    def from_settings(cls, settings: Any) -> "LLMClient":
        key = getattr(settings, "openai_api_key", None)
        if isinstance(key, SecretStr):
            key = key.get_secret_value()
        return cls(
            api_key=key or None,
            base_url=getattr(settings, "openai_base_url", None) or None,
            model=getattr(settings, "openai_model", DEFAULT_MODEL),
            timeout_s=float(getattr(settings, "llm_timeout_s", DEFAULT_TIMEOUT_S)),
            max_retries=int(getattr(settings, "llm_max_retries", DEFAULT_MAX_RETRIES)),
            response_format=getattr(settings, "llm_response_format", "auto"),
        )

    @property
    def enabled(self) -> bool:
        return self._openai is not None

    @property
    def base_url(self) -> str | None:
        return str(self._openai.base_url) if self._openai is not None else None

    @property
    def format_in_use(self) -> Literal["json_schema", "json_object"]:
        """The response format the next call starts with."""
        if self.response_format != "auto":
            return self.response_format
        return self._discovered_format or "json_schema"

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> "LLMClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def complete_json(
        self,
        *,
        messages: list[dict[str, Any]],
        schema_name: str,
        output_model: type[T],
        max_output_tokens: int | None = None,
        temperature: float = 0.2,
    ) -> LLMResult[T]:
        """One Chat Completion constrained to `output_model`'s schema, parsed and validated.

        The schema is sent as strict `json_schema`, or as an instruction with `json_object`
        (see the module's docstring); `timeout_s` bounds the whole call, a fallback included.
        """
        if not _SCHEMA_NAME.fullmatch(schema_name):
            raise ValueError("schema_name must be 1-64 letters, digits, '_' or '-'")
        schema = _cached_strict_schema(output_model)

        def request(response_format: str) -> dict[str, Any]:
            body: dict[str, Any] = {"model": self.model, "temperature": temperature}
            if response_format == "json_schema":
                body["messages"] = messages
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "strict": True, "schema": schema},
                }
            else:
                body["messages"] = [*messages, _schema_instruction(output_model)]
                body["response_format"] = {"type": "json_object"}
            if max_output_tokens is not None:
                body["max_completion_tokens"] = max_output_tokens
                if response_format == "json_object":
                    # Servers that know only json_object also tend to know only the older
                    # `max_tokens` (llama-cpp-python ignores `max_completion_tokens`).
                    body["max_tokens"] = max_output_tokens
            return body

        trace = _CallTrace()
        trace_token = _TRACE.set(trace)
        started = time.perf_counter()
        outcome, served_model, usage = "ok", None, None
        response_format, fell_back = self.format_in_use, False
        try:
            if self._openai is None:
                raise LLMUnavailable(NO_KEY_REASON)
            try:
                async with asyncio.timeout(self.timeout_s):
                    try:
                        trace.asks_json_schema = response_format == "json_schema"
                        completion = await self._openai.chat.completions.create(
                            **request(response_format)
                        )
                    except openai.APIStatusError as exc:
                        if not (response_format == "json_schema" and _refuses_json_schema(exc)):
                            raise
                        if self.response_format == "json_schema":
                            raise LLMRefused(
                                "the language model service does not take JSON schema output "
                                f"(HTTP {exc.status_code})",
                                status=exc.status_code,
                            ) from exc
                        # Once json_schema has worked here, a refusal is about this schema
                        # alone: only this call falls back.
                        if self._discovered_format is None:
                            self._discovered_format = "json_object"
                        response_format, fell_back = "json_object", True
                        trace.asks_json_schema = False
                        trace.request_starts_at = len(trace.statuses)
                        completion = await self._openai.chat.completions.create(
                            **request(response_format)
                        )
            except TimeoutError:
                raise self._deadline_error(trace) from None
            except openai.OpenAIError as exc:
                raise _from_sdk_error(exc) from exc
            if self.response_format == "auto" and self._discovered_format is None:
                self._discovered_format = "json_schema"
            served_model = getattr(completion, "model", None) or self.model
            usage = _usage(completion)
            value = _parse_answer(completion, output_model)
        except LLMError as exc:
            outcome = exc.outcome
            raise
        except BaseException:
            outcome = "crashed"
            raise
        finally:
            _TRACE.reset(trace_token)
            duration_ms = round((time.perf_counter() - started) * 1000)
            (log.info if outcome == "ok" else log.warning)(
                "llm call",
                model=self.model,
                served_model=served_model,
                schema=schema_name,
                response_format=response_format,
                format_fallback=fell_back,
                outcome=outcome,
                duration_ms=duration_ms,
                attempts=trace.attempts,
                statuses=trace.statuses,
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
            )
        return LLMResult(value=value, model=served_model, duration_ms=duration_ms, usage=usage)

    async def check(self) -> None:
        """Readiness: `GET {base_url}/models`, once, within CHECK_TIMEOUT_S; raises LLMError."""
        if self._probe is None:
            raise LLMUnavailable(NO_KEY_REASON)
        try:
            async with asyncio.timeout(min(CHECK_TIMEOUT_S, self.timeout_s)):
                await self._probe.models.list()
        except TimeoutError:
            raise LLMTimeout() from None
        except openai.OpenAIError as exc:
            raise _from_sdk_error(exc) from exc

    def _deadline_error(self, trace: _CallTrace) -> LLMError:
        """The deadline fell during the SDK's retries: name what it was retrying."""
        statuses = trace.statuses[trace.request_starts_at :]
        last = statuses[-1] if statuses else None
        if last == 429:
            return LLMRateLimited(status=last)
        if last is not None and last >= 500:
            return LLMServerError(f"the language model service failed (HTTP {last})", status=last)
        return LLMTimeout(f"the language model did not answer within {self.timeout_s:g} s")


def _usage(completion: Any) -> LLMUsage | None:
    usage = getattr(completion, "usage", None)
    if usage is None or usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    return LLMUsage(usage.prompt_tokens, usage.completion_tokens)


def _parse_answer(completion: Any, output_model: type[T]) -> T:
    choices = getattr(completion, "choices", None)
    if not choices:
        raise LLMInvalidAnswer("the language model returned no answer")
    choice = choices[0]
    message = choice.message
    if getattr(message, "refusal", None):
        raise LLMRefused("the language model declined to answer")
    if choice.finish_reason == "content_filter":
        raise LLMRefused("the provider's content filter withheld the answer")
    if choice.finish_reason == "length":
        raise LLMInvalidAnswer("the answer was cut off at the output token limit")
    if not message.content:
        raise LLMInvalidAnswer("the language model returned an empty answer")
    try:
        return output_model.model_validate_json(message.content)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise LLMInvalidAnswer("the answer was not valid JSON") from None
        raise LLMInvalidAnswer("the answer did not match the expected structure") from None


# --- dependency --------------------------------------------------------------------------------


async def get_llm_client(request: Request) -> LLMClient:
    """The service's one LLM client (tests override this dependency or the runtime's)."""
    return request.app.state.runtime.llm


LLMDep = Annotated[LLMClient, Depends(get_llm_client)]
