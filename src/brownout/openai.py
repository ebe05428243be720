"""Circuit breakers for the official ``openai`` SDK (``pip install 'brownout[openai]'``).

:class:`OpenAIAdapter` wraps an ``openai.OpenAI`` client, :class:`AsyncOpenAIAdapter`
an ``openai.AsyncOpenAI`` client. Both guard chat completions (:meth:`~OpenAIAdapter.chat`),
structured JSON output (:meth:`~OpenAIAdapter.chat_json`), embeddings
(:meth:`~OpenAIAdapter.embed`) and any other endpoint (:meth:`OpenAIAdapter.call`,
:meth:`AsyncOpenAIAdapter.acall`) with one breaker, count tokens per model and probe
the API with ``models.list()``::

    from brownout.openai import OpenAIAdapter

    ai = OpenAIAdapter(api_key=settings.openai_api_key, timeout=30.0)
    reply = ai.chat([{"role": "user", "content": "Hello"}])
    print(reply.choices[0].message.content)
    data = ai.chat_json(messages, schema=Invoice)         # a dict, checked against Invoice
    vectors = ai.embed(["first text", "second text"])    # list[list[float]]

Connection errors, timeouts, 5xx and 429 count against the breaker (a 429's
``Retry-After`` sets the break); 400/404/409/422 are the caller's; 401/403 do not
trip the breaker either but flag ``credentials`` in :meth:`~brownout.adapter.Adapter.health`.
The SDK's own retries are off by default (``max_retries=0``): the breaker must see
every failure, and its half-open probes are the retry policy. See ``docs/adapters/openai.md``.

All the logic (requests, classification, ``Retry-After`` parsing, token and byte
accounting, JSON decoding) lives in :class:`_OpenAIBase`; the two public classes only
differ in calling the client.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar, Unpack

try:
    import openai
    import pydantic
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "brownout.openai needs the official openai SDK: pip install 'brownout[openai]'"
    ) from exc

from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from brownout._errors import InvalidJSONOutput
from brownout._lifetime import AsyncResource, SyncResource
from brownout._options import AdapterOptions
from brownout._redact import redact
from brownout.adapter import Adapter, ErrorRule, ErrorTable, Figures
from brownout.overload._clients import budget_openai_client, cap_openai_retry_wait

__all__ = [
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "ERRORS",
    "AsyncOpenAIAdapter",
    "InvalidJSONOutput",
    "OpenAIAdapter",
    "retry_after_from_headers",
]

#: Model used by ``chat``/``chat_json`` when none is given.
DEFAULT_CHAT_MODEL = "gpt-4o-mini"
#: Model used by ``embed`` when none is given.
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
#: 30 s for a whole request (a long completion takes that), 3 s to connect: an
#: unreachable API fails fast instead of holding the caller for the read timeout.
DEFAULT_TIMEOUT = openai.Timeout(30.0, connect=3.0)
#: The SDK retries 408/409/429/5xx and connection errors with backoff; with retries on,
#: the breaker would see one failure per 3 attempts and callers would wait through the
#: backoff while the API is down. The breaker's half-open probes are the retry policy.
DEFAULT_MAX_RETRIES = 0
#: With retries on, a retry whose answer asks to wait longer than this (``Retry-After``,
#: a 429's rate-limit reset) is not made: the SDK would honour minutes, holding the
#: caller; the error goes to the breaker and the throttle, which keep the API's wish.
DEFAULT_MAX_RETRY_WAIT = 2.0

C = TypeVar("C", openai.OpenAI, openai.AsyncOpenAI)
R = TypeVar("R")
T_co = TypeVar("T_co", covariant=True)

Schema = Mapping[str, Any] | type[pydantic.BaseModel]


# -- Retry-After ------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_duration(value: str | None) -> float | None:
    """OpenAI's reset durations: ``"20ms"``, ``"1s"``, ``"6m0s"``, ``"1h2m3.5s"``, or seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(number) * _SCALE[unit] for number, unit in parts)


def _parse_retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.timestamp() - now


def _asked_wait(response: Any) -> float | None:
    """How long an error answer asks the SDK to wait before its retry."""
    return retry_after_from_headers(
        response.headers, rate_limited=getattr(response, "status_code", None) == 429
    )


def retry_after_from_headers(
    headers: Mapping[str, str], *, rate_limited: bool = True, now: float | None = None
) -> float | None:
    """The seconds an OpenAI error response asks the client to wait, or ``None``.

    In order: ``retry-after-ms`` (milliseconds), ``retry-after`` (seconds or an
    HTTP date); then, only when ``rate_limited`` (a 429), the reset time of the
    exhausted limit: ``x-ratelimit-reset-requests`` if ``x-ratelimit-remaining-requests``
    is 0, ``x-ratelimit-reset-tokens`` if ``x-ratelimit-remaining-tokens`` is 0, the
    longer of the two if both or neither say so. Those headers are on every OpenAI
    response, so they mean nothing for a 5xx. Values <= 0 or not finite give ``None``.

    >>> retry_after_from_headers({"Retry-After": "7"})
    7.0
    >>> retry_after_from_headers({"retry-after-ms": "1500", "retry-after": "9"})
    1.5
    >>> retry_after_from_headers({
    ...     "x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "120ms",
    ...     "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s",
    ... })
    360.0
    >>> retry_after_from_headers({"x-ratelimit-reset-tokens": "6m0s"}, rate_limited=False)
    """
    lower = {k.lower(): v for k, v in headers.items()}
    now = time.time() if now is None else now  # an HTTP date is wall-clock time
    value: float | None = None
    ms = _parse_duration(lower.get("retry-after-ms"))
    if ms is not None:
        value = ms / 1000.0
    if value is None:
        value = _parse_retry_after(lower.get("retry-after"), now)
    if value is None and rate_limited:
        resets = {
            dim: _parse_duration(lower.get(f"x-ratelimit-reset-{dim}"))
            for dim in ("requests", "tokens")
        }
        exhausted = [
            reset
            for dim, reset in resets.items()
            if reset is not None and lower.get(f"x-ratelimit-remaining-{dim}", "").strip() == "0"
        ]
        candidates = exhausted or [r for r in resets.values() if r is not None]
        value = max(candidates) if candidates else None
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return value


def _attach_retry_after(exc: BaseException) -> None:
    """Give a 429/5xx error the ``retry_after`` the breaker's default hook reads."""
    if not isinstance(exc, openai.APIStatusError):
        return
    status = exc.status_code
    if status != 429 and status < 500:
        return
    hint = retry_after_from_headers(exc.response.headers, rate_limited=status == 429)
    if hint is not None:
        setattr(exc, "retry_after", hint)  # noqa: B010 - not a declared attribute


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, *secrets)
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


def _scrub_error(exc: openai.OpenAIError, secrets: tuple[str, ...]) -> None:
    """Remove secrets from an SDK error in place, before the breaker records its text.

    The breaker logs and keeps the text of the errors it records and only knows
    the key shapes :func:`~brownout.redact` recognises; an API that echoes a key
    of another shape would leak it there. Scrubbing in place also keeps the SDK's
    exception type for the caller.
    """
    if not any(
        secret in str(exc) or secret in repr(getattr(exc, "body", None)) for secret in secrets
    ):
        return
    exc.args = tuple(_scrub(arg, secrets) for arg in exc.args)
    for attr in ("message", "body"):
        if hasattr(exc, attr):
            with contextlib.suppress(AttributeError):
                setattr(exc, attr, _scrub(getattr(exc, attr), secrets))


@contextlib.contextmanager
def _annotated(secrets: tuple[str, ...]) -> Iterator[None]:
    """Run a client call inside the breaker; SDK errors leave it scrubbed of ``secrets``
    and, for 429/5xx, with the ``retry_after`` the breaker's default hook reads."""
    try:
        yield
    except openai.OpenAIError as exc:
        if secrets:
            _scrub_error(exc, secrets)
        _attach_retry_after(exc)
        raise


# -- classification ---------------------------------------------------------------------


def _server_error(exc: BaseException) -> bool:
    """APIStatusError >= 500 (InternalServerError, 502, 503, 504)"""
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def _request_timeout(exc: BaseException) -> bool:
    """APIStatusError 408"""
    return isinstance(exc, openai.APIStatusError) and exc.status_code == 408


def _other_client_error(exc: BaseException) -> bool:
    """other APIStatusError 4xx"""
    return isinstance(exc, openai.APIStatusError) and 400 <= exc.status_code < 500


#: How the adapters classify the SDK's errors (see ``docs/adapters/openai.md``).
ERRORS = ErrorTable(
    ErrorRule(
        openai.APITimeoutError,
        True,
        "timeout",
        "no answer within the SDK timeout: the API or the path to it is slow or down",
    ),
    ErrorRule(
        openai.APIConnectionError,
        True,
        "connection",
        "the API cannot be reached (refused, reset, DNS, TLS)",
    ),
    ErrorRule(
        openai.RateLimitError,
        True,
        "throttled",
        "429: the API asks us to back off; the break follows its Retry-After",
    ),
    ErrorRule(
        openai.AuthenticationError,
        False,
        "credentials",
        "401: a bad key is configuration, not an outage; flagged as credentials in health",
    ),
    ErrorRule(
        openai.PermissionDeniedError,
        False,
        "credentials",
        "403: the key may not use this model/project/region; flagged as credentials in health",
    ),
    ErrorRule(
        openai.BadRequestError,
        False,
        "caller",
        "400: the request is invalid (bad parameter, context too long)",
    ),
    ErrorRule(openai.NotFoundError, False, "caller", "404: unknown model or resource"),
    ErrorRule(openai.ConflictError, False, "caller", "409: conflicts with the resource's state"),
    ErrorRule(
        openai.UnprocessableEntityError,
        False,
        "caller",
        "422: well-formed but semantically invalid request",
    ),
    ErrorRule(
        InvalidJSONOutput,
        False,
        "invalid_output",
        "the API answered; output that is not JSON/of the schema is one request's problem",
    ),
    ErrorRule(
        openai.LengthFinishReasonError,
        False,
        "invalid_output",
        "the answer was cut by max_tokens: the request's limits, not an outage",
    ),
    ErrorRule(
        openai.ContentFilterFinishReasonError,
        False,
        "invalid_output",
        "the content filter stopped the answer: about this request, not an outage",
    ),
    ErrorRule(_server_error, True, "server_error", "5xx: the API itself is failing"),
    ErrorRule(_request_timeout, True, "timeout", "408: the API timed out reading the request"),
    ErrorRule(
        _other_client_error, False, "caller", "other 4xx (413, 415, ...): the request's fault"
    ),
    ErrorRule(
        openai.APIResponseValidationError,
        True,
        "bad_response",
        "the API answered something that is not the documented shape",
    ),
    ErrorRule(
        TypeError,
        False,
        "caller",
        "wrong arguments to an SDK method: a bug in the caller, raised before any request",
    ),
)


# -- request building and post-processing (shared by sync and async) ---------------------


class _HTTPResponse(Protocol):
    @property
    def content(self) -> bytes: ...


class _RawResponse(Protocol[T_co]):
    """What brownout uses of the SDK's ``with_raw_response`` results."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def http_response(self) -> _HTTPResponse: ...

    def parse(self) -> T_co: ...


def _schema_format(
    schema: Schema | None, name: str | None, strict: bool
) -> tuple[dict[str, Any], type[pydantic.BaseModel] | None]:
    """``response_format`` for ``schema`` and the pydantic model to check the answer with."""
    if schema is None:
        return {"type": "json_object"}, None
    if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
        model: type[pydantic.BaseModel] | None = schema
        try:
            from openai.lib._pydantic import to_strict_json_schema

            json_schema: dict[str, Any] = to_strict_json_schema(schema)
        except ImportError:  # pragma: no cover - older/newer SDK layouts
            json_schema = schema.model_json_schema()
        default_name = schema.__name__
    elif isinstance(schema, Mapping):
        model = None
        json_schema = dict(schema)
        default_name = str(schema.get("title") or "response")
    else:
        raise TypeError(
            f"chat_json schema must be a JSON schema dict or a pydantic model class, "
            f"got {type(schema).__name__}"
        )
    safe_name = re.sub(r"[^a-zA-Z0-9_-]", "_", name or default_name)[:64]
    return {
        "type": "json_schema",
        "json_schema": {"name": safe_name, "schema": json_schema, "strict": strict},
    }, model


def _usage(result: Any) -> tuple[int, int]:
    """(prompt, completion) tokens from any SDK result with a ``usage`` (chat, embeddings,
    responses); (0, 0) without one."""
    usage = getattr(result, "usage", None)
    if usage is None:
        return 0, 0
    prompt = getattr(usage, "prompt_tokens", None)
    if prompt is None:
        prompt = getattr(usage, "input_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if completion is None:
        completion = getattr(usage, "output_tokens", None)
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


class _OpenAIBase(Adapter, Generic[C]):
    """Everything but the client calls; see :class:`OpenAIAdapter`."""

    kind: ClassVar[str] = "openai"
    errors: ClassVar[ErrorTable] = ERRORS
    probe_timeout: float = 5.0

    client: C

    def __init__(
        self,
        client: C | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        timeout: float | openai.Timeout | None = None,
        max_retries: int | None = None,
        chat_model: str = DEFAULT_CHAT_MODEL,
        embedding_model: str = DEFAULT_EMBEDDING_MODEL,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        **options: Unpack[AdapterOptions],
    ) -> None:
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"{type(self).__name__}: max_retries must be >= 0")
        if (
            isinstance(max_retry_wait, bool)
            or not isinstance(max_retry_wait, int | float)
            or not (math.isfinite(max_retry_wait) and max_retry_wait >= 0)
        ):
            raise ValueError(
                f"{type(self).__name__}: max_retry_wait must be a number of seconds >= 0, "
                f"got {max_retry_wait!r}"
            )
        self.max_retry_wait = float(max_retry_wait)
        if isinstance(timeout, int | float) and not timeout > 0:
            raise ValueError(f"{type(self).__name__}: timeout must be > 0 seconds")
        if client is not None:
            given = {
                "api_key": api_key,
                "base_url": base_url,
                "organization": organization,
                "project": project,
            }
            clash = [k for k, v in given.items() if v is not None]
            if clash:
                raise ValueError(
                    f"{type(self).__name__}: pass client= or settings ({', '.join(clash)}), "
                    "not both"
                )
            overrides: dict[str, Any] = {}
            if timeout is not None:
                overrides["timeout"] = timeout
            if max_retries is not None:
                overrides["max_retries"] = max_retries
            # with_options: a copy sharing the caller's connection pool
            self.client = client.with_options(**overrides) if overrides else client
            self._owns_client: bool = False
        else:
            self.client = self._new_client(
                api_key=api_key,
                base_url=base_url,
                organization=organization,
                project=project,
                timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
                max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
            )
            self._owns_client = True
        key = self.client.api_key
        secrets: Iterable[str | None] = options.get("secrets", ())
        options["secrets"] = (*secrets, api_key, key if isinstance(key, str) else None)
        super().__init__(**options)
        if self._owns_client:
            self._guard_retries(self.client)
        elif self.guards.retry_budget is not None:
            # its retries are guarded on a copy (sharing the pool): the caller's is not
            # touched; without a budget a given client is used as it is, retries and all
            self.client = self.client.with_options()
            self._guard_retries(self.client)
        self.chat_model = chat_model
        self.embedding_model = embedding_model
        # the probe: no retries, its own short timeout, never through the breaker
        self._probe_client: C = self.client.with_options(
            max_retries=0,
            timeout=openai.Timeout(self.probe_timeout, connect=min(self.probe_timeout, 3.0)),
        )
        self._ratelimit: dict[str, int] = {}
        self._credentials_error: str | None = None
        #: the client as built, and its copies made by use_options (per setting)
        self._built_client: C = self.client
        self._variants: dict[tuple[Any, int | None], C] = {}

    def _new_client(self, **settings: Any) -> C:
        raise NotImplementedError

    def _guard_retries(self, client: C) -> None:
        """The SDK's own retries (when ``max_retries`` turns them on) ask the retry budget
        and are not made when the answer asks to wait beyond :attr:`max_retry_wait`."""
        budget = self.guards.retry_budget
        if budget is not None:
            budget_openai_client(client, budget)
        cap_openai_retry_wait(client, self.max_retry_wait, _asked_wait)

    def use_options(
        self, *, timeout: float | openai.Timeout | None = None, max_retries: int | None = None
    ) -> None:
        """Calls from now on use ``timeout`` and ``max_retries`` (the SDK's own
        retries; ``None``: as the adapter was built): :attr:`client` becomes a copy
        of the client it was built with (``with_options``: the SDK's way of setting
        them for some calls, sharing the connection pool), whose retries still ask
        the adapter's retry budget. One copy is kept per setting, so switching back
        and forth (inventario: on each change of degradation level) makes no new
        ones. The health probe keeps its own client.
        """
        if max_retries is not None and (
            isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
        ):
            raise ValueError(
                f"use_options: max_retries must be an integer >= 0, got {max_retries!r}"
            )
        if isinstance(timeout, int | float) and not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"use_options: timeout must be > 0 seconds, got {timeout!r}")
        shape = (
            (timeout.connect, timeout.read, timeout.write, timeout.pool)
            if isinstance(timeout, openai.Timeout)
            else timeout
        )
        key = (shape, max_retries)
        client = self._variants.get(key)
        if client is None:
            overrides: dict[str, Any] = {}
            if timeout is not None:
                overrides["timeout"] = timeout
            if max_retries is not None:
                overrides["max_retries"] = max_retries
            client = self._built_client
            if overrides:
                client = client.with_options(**overrides)
                self._guard_retries(client)  # a copy is a new client: guard its retries too
            self._variants[key] = client
        self.client = client

    # -- requests --------------------------------------------------------------------

    def _chat_request(
        self, messages: Sequence[Mapping[str, Any]], model: str | None, kw: dict[str, Any]
    ) -> dict[str, Any]:
        if kw.get("stream"):
            raise ValueError(
                "chat() does not stream: a stream is only checked when it starts; use "
                "call('chat_stream', client.chat.completions.create, stream=True, ...)"
            )
        return {"messages": list(messages), "model": model or self.chat_model, **kw}

    def _json_request(
        self,
        messages: Sequence[Mapping[str, Any]],
        schema: Schema | None,
        model: str | None,
        name: str | None,
        strict: bool,
        kw: dict[str, Any],
    ) -> tuple[dict[str, Any], type[pydantic.BaseModel] | None]:
        if "response_format" in kw:
            raise TypeError("chat_json() builds response_format from schema=; do not pass it")
        response_format, checker = _schema_format(schema, name, strict)
        request = self._chat_request(messages, model, kw)
        request["response_format"] = response_format
        return request, checker

    def _embed_request(
        self, texts: str | Sequence[str], model: str | None, kw: dict[str, Any]
    ) -> dict[str, Any]:
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            raise ValueError("embed() needs at least one text")
        return {"input": items, "model": model or self.embedding_model, **kw}

    # -- post-processing -------------------------------------------------------------

    def _succeeded(self) -> None:  # a probe that listed the models: the key works
        self.stats.credentials_problem = None
        self._credentials_error = None

    def _answered(self, raw: _RawResponse[R] | None, figs: Figures) -> None:
        """A response came back: the key works; note its size and rate-limit headroom."""
        if self.stats.credentials_problem is not None:
            self._succeeded()
        if raw is None:
            return
        with contextlib.suppress(Exception):  # figures only: never fail a good call
            figs.bytes_received = len(raw.http_response.content)
            headers = raw.headers
            for dim in ("requests", "tokens"):
                value = headers.get(f"x-ratelimit-remaining-{dim}")
                if value is not None and value.strip().isdigit():
                    self._ratelimit[f"remaining_{dim}"] = int(value)

    def _count_tokens(self, result: Any, figs: Figures) -> None:
        figs.prompt_tokens, figs.completion_tokens = _usage(result)
        if figs.model is None:
            model = getattr(result, "model", None)
            figs.model = model if isinstance(model, str) else None

    def _after_chat(self, raw: _RawResponse[ChatCompletion], figs: Figures) -> ChatCompletion:
        self._answered(raw, figs)
        completion = raw.parse()
        self._count_tokens(completion, figs)
        return completion

    def _after_json(
        self,
        raw: _RawResponse[ChatCompletion],
        figs: Figures,
        checker: type[pydantic.BaseModel] | None,
    ) -> dict[str, Any]:
        completion = self._after_chat(raw, figs)
        message = completion.choices[0].message if completion.choices else None
        content = message.content if message is not None else None
        model = figs.model
        if content is None:
            refusal = getattr(message, "refusal", None) if message is not None else None
            why = f"the model refused: {refusal}" if refusal else "no content in the answer"
            raise InvalidJSONOutput(f"chat_json: {why}", model=model, content=None)
        try:
            data = json.loads(content)
        except ValueError as exc:
            finish = completion.choices[0].finish_reason
            hint = " (cut by max_tokens)" if finish == "length" else ""
            raise InvalidJSONOutput(
                f"chat_json: {model} returned {len(content)} characters that are not valid "
                f"JSON{hint}: {exc}",
                model=model,
                content=content,
            ) from None
        if not isinstance(data, dict):
            raise InvalidJSONOutput(
                f"chat_json: {model} returned JSON {type(data).__name__}, not an object",
                model=model,
                content=content,
            )
        if checker is not None:
            try:
                checker.model_validate(data)
            except pydantic.ValidationError as exc:
                raise InvalidJSONOutput(
                    f"chat_json: {model} returned JSON that does not match "
                    f"{checker.__name__}: {exc.error_count()} error(s), first: "
                    f"{exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}",
                    model=model,
                    content=content,
                ) from None
        return data

    def _after_embed(
        self, raw: _RawResponse[CreateEmbeddingResponse], figs: Figures
    ) -> list[list[float]]:
        self._answered(raw, figs)
        response = raw.parse()
        self._count_tokens(response, figs)
        return [list(item.embedding) for item in sorted(response.data, key=lambda d: d.index)]

    def _after_call(self, result: R, figs: Figures) -> R:
        self._answered(None, figs)
        self._count_tokens(result, figs)
        return result

    # -- errors, probe, figures ------------------------------------------------------

    def _on_error(self, exc: Exception, rule: ErrorRule) -> None:
        if rule.kind == "credentials":
            self._note_credentials(exc)

    def _note_credentials(self, exc: BaseException) -> None:
        status = getattr(exc, "status_code", None)
        message = getattr(exc, "message", None) or str(exc)
        text = f"{type(exc).__name__} ({status}): {message}"
        short = redact(text, *self._secrets)
        self._credentials_error = short if len(short) <= 200 else short[:197] + "..."
        self.stats.credentials_problem = "credentials"

    def _probe_failed(self, exc: BaseException) -> None:
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            self._note_credentials(exc)

    def extra_figures(self) -> Mapping[str, Any]:
        """Model defaults, base URL (never the key), SDK settings, rate-limit headroom."""
        timeout = self.client.timeout
        figures: dict[str, Any] = {
            "model": self.chat_model,
            "embedding_model": self.embedding_model,
            "base_url": redact(str(self.client.base_url), *self._secrets),
            "timeout_s": timeout.read if isinstance(timeout, openai.Timeout) else timeout,
            "max_retries": self.client.max_retries,
        }
        if self._ratelimit:
            figures["ratelimit"] = dict(self._ratelimit)
        if self._credentials_error is not None:
            figures["credentials_error"] = self._credentials_error
        return figures


# Deliberate twins, not a hot path: the sync and async shells below repeat each
# operation's signature (a def and an async def cannot be one function); each body is a
# call into _OpenAIBase's request building (_json_request, ...) and _run / _arun. Each
# call is an HTTP round trip, so nothing here is measured for speed.


class OpenAIAdapter(_OpenAIBase[openai.OpenAI], SyncResource):
    """A circuit-broken ``openai.OpenAI`` client.

    Built from settings (``api_key``, ``base_url``, ``organization``, ``project``,
    ``timeout`` default :data:`DEFAULT_TIMEOUT`, ``max_retries`` default 0) or from an
    existing ``client=``, used as it is unless ``timeout``/``max_retries`` are given
    (then through ``client.with_options``, which shares its connection pool). The
    breaker defaults to the ``openai`` preset (5 failures, 60 s open, 2 probes); pass
    ``config=``, ``breaker=`` or ``registry=`` as for every adapter.

    With the SDK's retries on (``max_retries``), a retry whose answer asks to wait
    longer than ``max_retry_wait`` (default :data:`DEFAULT_MAX_RETRY_WAIT`, 2 s: its
    ``Retry-After``, or a 429's rate-limit reset) is not made: the error is raised at
    once instead of holding the caller for as long as the API asks (the SDK honours
    minutes), and the breaker keeps the API's wish for the calls that follow. With a
    ``retry_budget``, the retries ask it too. A given ``client=`` without a budget is
    used as it is, its retries unguarded.

    Example::

        ai = OpenAIAdapter(api_key="sk-...", config=BreakerConfig(consecutive_failures=3))
        try:
            reply = ai.chat([{"role": "user", "content": "Summarise: ..."}])
        except BreakerOpen:
            reply = None  # the feature degrades instead of waiting on a dead API
        ai.health()["tokens_by_model"]  # {"gpt-4o-mini": {"prompt": 12, "completion": 30}}
    """

    def _new_client(self, **settings: Any) -> openai.OpenAI:
        return openai.OpenAI(**settings)

    def chat(
        self, messages: Sequence[Mapping[str, Any]], *, model: str | None = None, **kw: Any
    ) -> ChatCompletion:
        """``client.chat.completions.create(messages=..., model=..., **kw)``, guarded.

        >>> reply = ai.chat([{"role": "user", "content": "Hi"}])  # doctest: +SKIP
        >>> reply.choices[0].message.content  # doctest: +SKIP
        'Hello!'
        """
        request = self._chat_request(messages, model, kw)
        figs = Figures(model=request["model"])

        def op() -> ChatCompletion:
            with _annotated(self._secrets):
                raw = self.client.chat.completions.with_raw_response.create(**request)
            return self._after_chat(raw, figs)

        return self._run("chat", op, figures=figs)

    def chat_json(
        self,
        messages: Sequence[Mapping[str, Any]],
        schema: Schema | None = None,
        *,
        model: str | None = None,
        name: str | None = None,
        strict: bool = True,
        **kw: Any,
    ) -> dict[str, Any]:
        """A chat completion in structured-output mode, decoded: the answer as a dict.

        ``schema`` is a JSON schema (dict) or a pydantic model class (the answer is
        checked against it); ``None`` asks for any JSON object. ``strict`` is OpenAI's
        strict schema mode (it needs ``additionalProperties: false`` and every property
        required; pydantic models are converted accordingly). An answer that is not a
        JSON object of the schema raises :class:`InvalidJSONOutput`, which does not
        count against the breaker (see its docstring).

        >>> ai.chat_json(messages, {"type": "object", "properties": {...}})  # doctest: +SKIP
        {'answer': 42}
        """
        request, checker = self._json_request(messages, schema, model, name, strict, kw)
        figs = Figures(model=request["model"])

        def op() -> dict[str, Any]:
            with _annotated(self._secrets):
                raw = self.client.chat.completions.with_raw_response.create(**request)
            return self._after_json(raw, figs, checker)

        return self._run("chat_json", op, figures=figs)

    def embed(
        self, texts: str | Sequence[str], *, model: str | None = None, **kw: Any
    ) -> list[list[float]]:
        """Embeddings of ``texts`` (one vector per text, in order), guarded.

        >>> len(ai.embed(["a", "b"]))  # doctest: +SKIP
        2
        """
        request = self._embed_request(texts, model, kw)
        figs = Figures(model=request["model"])

        def op() -> list[list[float]]:
            with _annotated(self._secrets):
                raw = self.client.embeddings.with_raw_response.create(**request)
            return self._after_embed(raw, figs)

        return self._run("embed", op, figures=figs)

    def call(self, operation: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)`` through the breaker, as ``operation``: any other endpoint.

        Tokens are counted when the result has a ``usage`` (under ``kwargs["model"]``
        if given, else the result's model).

        >>> ai.call("moderate", ai.client.moderations.create, input="text")  # doctest: +SKIP
        ModerationCreateResponse(...)
        """
        model = kwargs.get("model")
        figs = Figures(model=model if isinstance(model, str) else None)

        def op() -> R:
            with _annotated(self._secrets):
                result = fn(*args, **kwargs)
            return self._after_call(result, figs)

        return self._run(operation, op, figures=figs)

    def _probe_once(self) -> None:
        try:
            self._probe_client.models.list()
        except Exception as exc:
            self._probe_failed(exc)
            raise
        self._answered(None, Figures())

    def close(self) -> None:
        """Close the client if the adapter created it (a ``client=`` stays the caller's)."""
        if self._owns_client:
            self.client.close()


class AsyncOpenAIAdapter(_OpenAIBase[openai.AsyncOpenAI], AsyncResource):
    """A circuit-broken ``openai.AsyncOpenAI`` client: :class:`OpenAIAdapter`, awaited.

    Same constructor; ``chat``, ``chat_json``, ``embed`` are coroutines and the
    generic guarded call is :meth:`acall`.

    Example::

        async with AsyncOpenAIAdapter(api_key=key, timeout=20.0) as ai:
            vectors = await ai.embed(["some text"])
            result = await ai.acall("moderate", ai.client.moderations.create, input="text")
    """

    def _new_client(self, **settings: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(**settings)

    async def chat(
        self, messages: Sequence[Mapping[str, Any]], *, model: str | None = None, **kw: Any
    ) -> ChatCompletion:
        """See :meth:`OpenAIAdapter.chat`."""
        request = self._chat_request(messages, model, kw)
        figs = Figures(model=request["model"])

        async def op() -> ChatCompletion:
            with _annotated(self._secrets):
                raw = await self.client.chat.completions.with_raw_response.create(**request)
            return self._after_chat(raw, figs)

        return await self._arun("chat", op, figures=figs)

    async def chat_json(
        self,
        messages: Sequence[Mapping[str, Any]],
        schema: Schema | None = None,
        *,
        model: str | None = None,
        name: str | None = None,
        strict: bool = True,
        **kw: Any,
    ) -> dict[str, Any]:
        """See :meth:`OpenAIAdapter.chat_json`."""
        request, checker = self._json_request(messages, schema, model, name, strict, kw)
        figs = Figures(model=request["model"])

        async def op() -> dict[str, Any]:
            with _annotated(self._secrets):
                raw = await self.client.chat.completions.with_raw_response.create(**request)
            return self._after_json(raw, figs, checker)

        return await self._arun("chat_json", op, figures=figs)

    async def embed(
        self, texts: str | Sequence[str], *, model: str | None = None, **kw: Any
    ) -> list[list[float]]:
        """See :meth:`OpenAIAdapter.embed`."""
        request = self._embed_request(texts, model, kw)
        figs = Figures(model=request["model"])

        async def op() -> list[list[float]]:
            with _annotated(self._secrets):
                raw = await self.client.embeddings.with_raw_response.create(**request)
            return self._after_embed(raw, figs)

        return await self._arun("embed", op, figures=figs)

    async def acall(
        self, operation: str, fn: Callable[..., Awaitable[R]], *args: Any, **kwargs: Any
    ) -> R:
        """``await fn(*args, **kwargs)`` through the breaker (see :meth:`OpenAIAdapter.call`).

        >>> await ai.acall("moderate", ai.client.moderations.create, input="x")  # doctest: +SKIP
        ModerationCreateResponse(...)
        """
        model = kwargs.get("model")
        figs = Figures(model=model if isinstance(model, str) else None)

        async def op() -> R:
            with _annotated(self._secrets):
                result = await fn(*args, **kwargs)
            return self._after_call(result, figs)

        return await self._arun(operation, op, figures=figs)

    async def _aprobe_once(self) -> None:
        try:
            await self._probe_client.models.list()
        except Exception as exc:
            self._probe_failed(exc)
            raise
        self._answered(None, Figures())

    async def aclose(self) -> None:
        """Close the client if the adapter created it (a ``client=`` stays the caller's)."""
        if self._owns_client:
            await self.client.close()
