"""brownout.openai against the OpenAI-compatible stub, through the real SDK, sync and async.

Every scenario runs twice (``flavour``: ``OpenAIAdapter`` and ``AsyncOpenAIAdapter``);
sync adapters are called from the async test function directly (the stub and the
proxy run in their own threads).
"""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import openai
import pydantic
import pytest

from brownout import BreakerConfig, BreakerOpen, State
from brownout.adapter import OperationEvent
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.openai import (
    AsyncOpenAIAdapter,
    InvalidJSONOutput,
    OpenAIAdapter,
    retry_after_from_headers,
)
from brownout.testing import FakeClock, aeventually
from brownout.testing.servers.openai_stub import OpenAIStub, _tokens

KEY = "sk-test-SECRETKEY123456"
MESSAGES = [{"role": "user", "content": "Say hello"}]
FAST = openai.Timeout(0.4, connect=0.4)
OPEN_FOR = 0.4

AnyAdapter = OpenAIAdapter | AsyncOpenAIAdapter
Factory = Callable[..., AnyAdapter]


def short(**changes: Any) -> BreakerConfig:
    fields: dict[str, Any] = {"consecutive_failures": 3, "open_for": OPEN_FOR, "half_open_calls": 2}
    fields.update(changes)
    return BreakerConfig(**fields)


async def do(result: Any) -> Any:
    """The value of a sync call, or of an async one, awaited."""
    if inspect.isawaitable(result):
        return await result
    return result


def generic(ai: AnyAdapter, operation: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    if isinstance(ai, AsyncOpenAIAdapter):
        return ai.acall(operation, fn, *args, **kw)
    return ai.call(operation, fn, *args, **kw)


async def close(ai: AnyAdapter) -> None:
    if isinstance(ai, AsyncOpenAIAdapter):
        await ai.aclose()
    else:
        ai.close()


@pytest.fixture
def make(flavour: str, closing: Callable[[AnyAdapter], AnyAdapter]) -> Factory:
    """``make(base_url, **adapter_kwargs)`` with a known key, short timeouts and breaker."""

    def factory(base_url: str, **kw: Any) -> AnyAdapter:
        kw.setdefault("api_key", KEY)
        kw.setdefault("timeout", FAST)
        kw.setdefault("config", short())
        cls = OpenAIAdapter if flavour == "sync" else AsyncOpenAIAdapter
        return closing(cls(base_url=base_url, **kw))

    return factory


def state(ai: AnyAdapter) -> State:
    return ai.breaker.state


def via(stub: OpenAIStub, proxy: ThreadedFaultProxy) -> str:
    return stub.base_url_for(port=proxy.port)


class Answer(pydantic.BaseModel):
    answer: int
    reason: str


# -- 1. normal operation ----------------------------------------------------------------


async def test_round_trips(make: Factory, openai_stub: OpenAIStub) -> None:
    ai = make(openai_stub.base_url)

    reply = await do(ai.chat(MESSAGES, temperature=0))
    assert reply.choices[0].message.content == "This is a reply from the brownout OpenAI stub."
    sent = openai_stub.requests[-1]
    assert sent.json["messages"] == MESSAGES and sent.json["model"] == "gpt-4o-mini"
    assert sent.json["temperature"] == 0
    assert sent.headers["authorization"] == f"Bearer {KEY}"

    openai_stub.script(content={"answer": 42, "reason": "it is"})
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}, "reason": {"type": "string"}},
        "required": ["answer", "reason"],
        "additionalProperties": False,
    }
    assert await do(ai.chat_json(MESSAGES, schema, model="gpt-4o")) == {
        "answer": 42,
        "reason": "it is",
    }
    fmt = openai_stub.requests[-1].json["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema
    assert fmt["json_schema"]["strict"] is True
    assert openai_stub.requests[-1].json["model"] == "gpt-4o"

    # a pydantic model: the stub answers an example of the schema it was sent
    assert await do(ai.chat_json(MESSAGES, Answer)) == {"answer": 0, "reason": ""}
    fmt = openai_stub.requests[-1].json["response_format"]
    assert fmt["json_schema"]["name"] == "Answer"
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    assert await do(ai.chat_json(MESSAGES)) == {}  # any JSON object
    assert openai_stub.requests[-1].json["response_format"] == {"type": "json_object"}

    vectors = await do(ai.embed(["alpha", "beta", "alpha"]))
    assert len(vectors) == 3 and all(len(v) == openai_stub.embedding_dimensions for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert openai_stub.requests[-1].json["input"] == ["alpha", "beta", "alpha"]
    assert len(await do(ai.embed("one text"))) == 1

    model = await do(generic(ai, "retrieve_model", ai.client.models.retrieve, "gpt-4o-mini"))
    assert model.id == "gpt-4o-mini"

    health = ai.health()
    assert health["success_rate"] == 1.0 and health["breaker"]["state"] == "closed"
    assert set(health["operations"]) == {"chat", "chat_json", "embed", "retrieve_model"}
    assert health["operations"]["chat_json"] == {"success": 3}
    assert health["totals"]["bytes_received"] > 0


async def test_chat_refuses_streams(make: Factory, openai_stub: OpenAIStub) -> None:
    ai = make(openai_stub.base_url)
    with pytest.raises(ValueError, match="does not stream"):
        await do(ai.chat(MESSAGES, stream=True))
    with pytest.raises(TypeError, match="response_format"):
        await do(ai.chat_json(MESSAGES, response_format={"type": "text"}))
    assert openai_stub.requests == []


# -- 2. failures open the breaker; rejections stay local --------------------------------


def assert_rejected_locally(
    ai: AnyAdapter, stub: OpenAIStub, proxy: ThreadedFaultProxy | None
) -> Callable[[], Any]:
    """Returns a coroutine function that makes 5 calls and checks nothing left the process."""

    async def check() -> None:
        requests = len(stub.requests)
        before = proxy.stats if proxy is not None else None
        for _ in range(5):
            with pytest.raises(BreakerOpen) as info:
                await do(ai.chat(MESSAGES))
            assert info.value.name == ai.name
        assert len(stub.requests) == requests
        if proxy is not None and before is not None:
            after = proxy.stats
            assert after.connections_total == before.connections_total
            assert after.bytes_up == before.bytes_up

    return check


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_open_the_breaker(
    make: Factory, openai_stub: OpenAIStub, openai_proxy: ThreadedFaultProxy, status: int
) -> None:
    ai = make(via(openai_stub, openai_proxy))
    events: list[OperationEvent] = []
    ai.add_listener(events.append)
    openai_stub.script(status, times=None)
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as info:
            await do(ai.chat(MESSAGES))
        assert info.value.status_code == status
    assert state(ai) is State.OPEN
    assert len(openai_stub.requests) == 3  # no SDK retries behind the breaker's back
    await assert_rejected_locally(ai, openai_stub, openai_proxy)()
    assert [e.outcome for e in events] == ["failure"] * 3 + ["rejected"] * 5
    assert {e.error_kind for e in events[:3]} == {"server_error"}
    health = ai.health()
    assert health["breaker"]["state"] == "open"
    assert health["last_error"].startswith(type(info.value).__name__)


@pytest.mark.parametrize(
    ("mode", "error", "kind"),
    [
        (Mode.BLACKHOLE, openai.APITimeoutError, "timeout"),
        (Mode.RESET, openai.APIConnectionError, "connection"),
        (Mode.REFUSE, openai.APIConnectionError, "connection"),
    ],
)
async def test_network_faults_open_then_recover(
    make: Factory,
    openai_stub: OpenAIStub,
    openai_proxy: ThreadedFaultProxy,
    mode: Mode,
    error: type[Exception],
    kind: str,
) -> None:
    clock = FakeClock()  # the break runs out when the test says, not after a real sleep
    ai = make(via(openai_stub, openai_proxy), clock=clock)
    events: list[OperationEvent] = []
    ai.add_listener(events.append)
    await do(ai.embed(["warm up"]))  # a pooled keep-alive connection exists

    openai_proxy.set_mode(mode)
    for _ in range(3):
        with pytest.raises(error):
            await do(ai.embed(["x"]))
    assert state(ai) is State.OPEN
    assert [e.error_kind for e in events if e.outcome == "failure"] == [kind] * 3
    await assert_rejected_locally(ai, openai_stub, openai_proxy)()

    # 5. recovery: fault gone, break over, two half-open probes close it
    openai_proxy.set_mode(Mode.PASS)
    clock.advance(OPEN_FOR + 0.1)
    assert state(ai) is State.HALF_OPEN
    await do(ai.embed(["probe 1"]))
    assert state(ai) is State.HALF_OPEN
    await do(ai.embed(["probe 2"]))
    assert state(ai) is State.CLOSED
    for i in range(5):
        reply = await do(ai.chat([{"role": "user", "content": f"again {i}"}]))
        assert len(reply.choices) == 1
    # no leaked connections: sequential calls share one keep-alive connection
    assert openai_proxy.stats.active <= 2
    await close(ai)
    await aeventually(
        lambda: openai_proxy.stats.active == 0, timeout=5, what="the connections to close"
    )


async def test_hanging_server_times_out_and_trips(make: Factory, openai_stub: OpenAIStub) -> None:
    clock = FakeClock()
    ai = make(openai_stub.base_url, clock=clock)
    openai_stub.hang(10, times=None)
    for _ in range(3):
        with pytest.raises(openai.APITimeoutError):
            await do(ai.chat(MESSAGES))
    assert state(ai) is State.OPEN
    await assert_rejected_locally(ai, openai_stub, None)()
    openai_stub.reset()
    clock.advance(OPEN_FOR + 0.1)
    await do(ai.chat(MESSAGES))
    await do(ai.chat(MESSAGES))
    assert state(ai) is State.CLOSED


async def test_server_error_recovery_with_two_probes(
    make: Factory, openai_stub: OpenAIStub
) -> None:
    clock = FakeClock()
    ai = make(openai_stub.base_url, clock=clock)
    openai_stub.script(500, times=3)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            await do(ai.chat(MESSAGES))
    assert state(ai) is State.OPEN
    clock.advance(OPEN_FOR + 0.1)
    # a failing probe reopens at once
    openai_stub.script(503)
    with pytest.raises(openai.InternalServerError):
        await do(ai.chat(MESSAGES))
    assert state(ai) is State.OPEN
    clock.advance(OPEN_FOR + 0.1)
    await do(ai.chat(MESSAGES))
    await do(ai.embed(["x"]))
    assert state(ai) is State.CLOSED
    assert ai.breaker.snapshot().trips == 2


# -- 3. caller errors never trip --------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (409, openai.ConflictError),
        (413, openai.APIStatusError),
        (422, openai.UnprocessableEntityError),
    ],
)
async def test_caller_errors_never_trip(
    make: Factory, openai_stub: OpenAIStub, status: int, error: type[Exception]
) -> None:
    ai = make(openai_stub.base_url)
    openai_stub.script(status, times=None)
    for _ in range(10):
        with pytest.raises(error):
            await do(ai.chat(MESSAGES))
    snap = ai.breaker.snapshot()
    assert snap.state is State.CLOSED and snap.total_failures == 0 and snap.total_ignored == 10
    assert ai.health()["operations"]["chat"] == {"caller_error": 10}
    assert ai.health()["credentials_problem"] is None


async def test_wrong_arguments_are_the_callers(make: Factory, openai_stub: OpenAIStub) -> None:
    ai = make(openai_stub.base_url)
    for _ in range(5):
        with pytest.raises(TypeError):
            await do(generic(ai, "bad", ai.client.models.retrieve, "m", no_such_argument=1))
    assert ai.breaker.snapshot().total_failures == 0


@pytest.mark.parametrize(
    ("status", "error"), [(401, openai.AuthenticationError), (403, openai.PermissionDeniedError)]
)
async def test_bad_credentials_do_not_trip_but_are_flagged(
    make: Factory, openai_stub: OpenAIStub, status: int, error: type[Exception]
) -> None:
    ai = make(openai_stub.base_url)
    openai_stub.script(status, times=10)
    for _ in range(10):
        with pytest.raises(error):
            await do(ai.embed(["x"]))
    assert state(ai) is State.CLOSED
    health = ai.health()
    assert health["credentials_problem"] == "credentials"
    assert health["credentials_error"].startswith(f"{error.__name__} ({status})")
    await do(ai.embed(["x"]))  # the key works again
    health = ai.health()
    assert health["credentials_problem"] is None and "credentials_error" not in health


# -- 4. slow calls ----------------------------------------------------------------------


async def test_latency_trips_a_slow_call_breaker(
    make: Factory, openai_stub: OpenAIStub, openai_proxy: ThreadedFaultProxy
) -> None:
    config = BreakerConfig(
        consecutive_failures=None,
        slow_call_rate=0.5,
        slow_call_duration=0.1,
        window_size=4,
        minimum_calls=4,
        open_for=OPEN_FOR,
    )
    ai = make(via(openai_stub, openai_proxy), config=config, timeout=openai.Timeout(3.0))
    await do(ai.chat(MESSAGES))
    openai_proxy.set_mode(Mode.LATENCY, downstream_delay=0.2)
    for _ in range(3):
        await do(ai.chat(MESSAGES))  # slow, but successful
    snap = ai.breaker.snapshot()
    assert snap.state is State.OPEN and snap.total_slow >= 3 and snap.total_failures == 0
    await assert_rejected_locally(ai, openai_stub, openai_proxy)()


# -- 6. Retry-After ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "2500"}, 2.5),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "9s",
                "x-ratelimit-remaining-tokens": "1000",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            9.0,
        ),
    ],
)
async def test_rate_limit_sets_the_break_from_its_headers(
    make: Factory, openai_stub: OpenAIStub, headers: dict[str, str], expected: float
) -> None:
    ai = make(openai_stub.base_url)
    openai_stub.script(429, headers=headers, times=3)
    for _ in range(3):
        with pytest.raises(openai.RateLimitError) as info:
            await do(ai.chat(MESSAGES))
        assert info.value.retry_after == expected  # type: ignore[attr-defined]
    snap = ai.breaker.snapshot()
    assert snap.state is State.OPEN
    assert snap.open_for == pytest.approx(expected)
    assert snap.retry_after is not None and snap.retry_after <= expected
    with pytest.raises(BreakerOpen) as rejected:
        await do(ai.chat(MESSAGES))
    assert rejected.value.retry_after is not None and rejected.value.retry_after > OPEN_FOR
    assert ai.health()["recent"][-2]["error_kind"] == "throttled"


async def test_server_error_with_retry_after_but_not_ratelimit_resets(
    make: Factory, openai_stub: OpenAIStub
) -> None:
    ai = make(openai_stub.base_url)
    openai_stub.script(503, headers={"retry-after": "5"}, times=3)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            await do(ai.chat(MESSAGES))
    assert ai.breaker.snapshot().open_for == pytest.approx(5.0)
    ai.breaker.reset()
    # x-ratelimit-reset-* is on every OpenAI response: it does not set a 5xx break
    openai_stub.script(500, headers={"x-ratelimit-reset-requests": "30s"}, times=3)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as info:
            await do(ai.chat(MESSAGES))
        assert not hasattr(info.value, "retry_after")
    assert ai.breaker.snapshot().open_for == pytest.approx(OPEN_FOR)


@pytest.mark.parametrize(
    ("status", "headers", "attempts"),
    [
        (429, {"retry-after": "30"}, 1),  # asks for longer than max_retry_wait: no retry
        (503, {"retry-after-ms": "50"}, 3),  # a short wait: retried as the SDK does
        (
            429,
            {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"},
            1,
        ),
    ],
)
async def test_a_retry_asked_to_wait_too_long_is_not_made(
    flavour: str,
    openai_stub: OpenAIStub,
    status: int,
    headers: dict[str, str],
    attempts: int,
) -> None:
    adapter_class = OpenAIAdapter if flavour == "sync" else AsyncOpenAIAdapter
    ai: AnyAdapter = adapter_class(
        base_url=openai_stub.base_url, api_key=KEY, max_retries=2, max_retry_wait=1.0
    )
    openai_stub.script(status, headers=headers, times=3)
    before = len(openai_stub.requests)
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        await do(ai.chat(MESSAGES))
    assert info.value.status_code == status
    assert len(openai_stub.requests) - before == attempts
    if attempts == 1:  # the SDK alone would have slept 30 s / 6 min before its retry
        assert time.monotonic() - start < 10
    await close(ai)


def test_max_retry_wait_is_checked() -> None:
    for bad in (-1, float("inf"), "2", True):
        with pytest.raises(ValueError, match="max_retry_wait"):
            OpenAIAdapter(api_key=KEY, max_retry_wait=bad)  # type: ignore[arg-type]


def test_retry_after_header_parsing() -> None:
    assert retry_after_from_headers({"Retry-After": "3"}) == 3.0
    assert retry_after_from_headers({"retry-after": "0"}) is None
    assert retry_after_from_headers({"retry-after": "soon"}) is None
    assert retry_after_from_headers({}) is None
    now = 1_700_000_000.0
    date = "Tue, 14 Nov 2023 22:13:40 GMT"  # now + 20 s
    assert retry_after_from_headers({"retry-after": date}, now=now) == pytest.approx(20.0)
    assert retry_after_from_headers({"retry-after": date}, now=now + 60) is None
    resets = {"x-ratelimit-reset-requests": "1h2m3.5s", "x-ratelimit-reset-tokens": "20ms"}
    assert retry_after_from_headers(resets) == 3723.5  # neither says exhausted: the longer
    assert retry_after_from_headers({**resets, "x-ratelimit-remaining-tokens": "0"}) == 0.02
    assert retry_after_from_headers({"x-ratelimit-reset-tokens": "6m0sx"}) is None
    assert retry_after_from_headers(resets, rate_limited=False) is None


# -- invalid JSON output ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "schema", "message"),
    [
        ("Sure! Here is the JSON you asked for", None, "not valid JSON"),
        ([1, 2, 3], None, "not an object"),
        ({"answer": "many"}, Answer, "does not match Answer"),
    ],
)
async def test_invalid_json_output_is_an_error_that_does_not_count(
    make: Factory, openai_stub: OpenAIStub, content: Any, schema: Any, message: str
) -> None:
    ai = make(openai_stub.base_url)
    events: list[OperationEvent] = []
    ai.add_listener(events.append)
    openai_stub.script(content=content, times=None)
    for _ in range(5):
        with pytest.raises(InvalidJSONOutput, match=message) as info:
            await do(ai.chat_json(MESSAGES, schema))
        assert isinstance(info.value, ValueError) and info.value.model == "gpt-4o-mini"
        assert info.value.content == (content if isinstance(content, str) else json.dumps(content))
    assert state(ai) is State.CLOSED
    assert [e.outcome for e in events] == ["caller_error"] * 5
    assert {e.error_kind for e in events} == {"invalid_output"}
    assert all(e.completion_tokens > 0 for e in events)  # the tokens were spent all the same
    assert ai.health()["tokens_by_model"]["gpt-4o-mini"]["completion"] > 0


# -- tokens -----------------------------------------------------------------------------


async def test_tokens_are_counted_per_model(make: Factory, openai_stub: OpenAIStub) -> None:
    ai = make(openai_stub.base_url)
    events: list[OperationEvent] = []
    ai.add_listener(events.append)
    expected: dict[str, dict[str, int]] = {}

    def add(model: str, usage: Any) -> None:
        per = expected.setdefault(model, {"prompt": 0, "completion": 0})
        per["prompt"] += usage.prompt_tokens
        per["completion"] += getattr(usage, "completion_tokens", 0) or 0

    for text in ("short", "a somewhat longer question to make more tokens"):
        reply = await do(ai.chat([{"role": "user", "content": text}]))
        add("gpt-4o-mini", reply.usage)
    reply = await do(ai.chat(MESSAGES, model="gpt-4o"))
    add("gpt-4o", reply.usage)
    await do(ai.chat_json(MESSAGES, model="gpt-4o"))
    add("gpt-4o", openai_stub_usage(openai_stub))
    await do(ai.embed(["one", "two", "three"]))
    add("text-embedding-3-small", openai_stub_usage(openai_stub, embeddings=True))
    result = await do(
        generic(
            ai,
            "raw_chat",
            ai.client.chat.completions.create,
            model="gpt-4.1",
            messages=MESSAGES,
        )
    )
    add("gpt-4.1", result.usage)

    assert ai.health()["tokens_by_model"] == expected
    assert ai.stats.tokens_by_model == expected
    totals = ai.health()["totals"]
    assert totals["prompt_tokens"] == sum(m["prompt"] for m in expected.values())
    assert totals["completion_tokens"] == sum(m["completion"] for m in expected.values())
    embed_event = next(e for e in events if e.operation == "embed")
    assert embed_event.model == "text-embedding-3-small" and embed_event.completion_tokens == 0
    assert embed_event.prompt_tokens > 0


def openai_stub_usage(stub: OpenAIStub, *, embeddings: bool = False) -> Any:
    """The usage the stub reported for its last request (recomputed with its own rule)."""
    payload = stub.requests[-1].json
    if embeddings:
        items = payload["input"]
        return pydantic_usage(sum(_tokens(i) for i in items), 0)
    return pydantic_usage(_tokens(payload["messages"]), _tokens("{}"))


def pydantic_usage(prompt: int, completion: int) -> Any:
    return openai.types.CompletionUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


# -- 7. secrets -------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, "proj-key-NOT-SK-SHAPED-98765"])
async def test_the_api_key_never_leaks(
    make: Factory, openai_stub: OpenAIStub, caplog: pytest.LogCaptureFixture, key: str
) -> None:
    caplog.set_level(logging.DEBUG)
    ai = make(openai_stub.base_url, api_key=key, config=short(consecutive_failures=2))
    echo = {"error": {"message": f"Incorrect API key provided: {key}", "type": "x", "code": None}}
    texts: list[str] = []
    # 401 echoing the key: not counted, flagged, scrubbed
    openai_stub.script(401, body=echo, times=2)
    for _ in range(2):
        # scrubbed in place: the SDK's own exception type reaches the caller
        with pytest.raises(openai.AuthenticationError) as auth:
            await do(ai.chat(MESSAGES))
        assert "Incorrect API key provided: " in str(auth.value)
        texts += [str(auth.value), repr(auth.value), repr(auth.value.body), auth.value.message]
    assert state(ai) is State.CLOSED
    assert ai.health()["credentials_problem"] == "credentials"
    # 500 echoing the key: counted, opens the breaker (logged with its last error)
    openai_stub.script(500, body=echo, times=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as server:
            await do(ai.embed(["x"]))
        texts += [str(server.value), repr(server.value.body)]
    assert state(ai) is State.OPEN
    with pytest.raises(BreakerOpen) as rejected:
        await do(ai.chat(MESSAGES))
    texts.append(str(rejected.value))
    # a probe that gets the echo
    openai_stub.script(401, body=echo)
    probe = await do(ai.aprobe() if isinstance(ai, AsyncOpenAIAdapter) else ai.probe())
    assert not probe.ok and probe.error is not None
    texts.append(probe.error)

    health = ai.health()
    assert "Incorrect API key provided" in health["credentials_error"]
    texts += [json.dumps(health, default=str), repr(ai), repr(ai.breaker.snapshot())]
    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    assert any("open" in r.getMessage() for r in caplog.records if r.name == "brownout")
    for text in texts:
        assert key not in text
        assert "SECRETKEY" not in text and "NOT-SK-SHAPED" not in text
    assert key not in json.dumps(ai.extra_figures(), default=str)


# -- probe, construction, figures -------------------------------------------------------


async def test_probe_is_independent_of_the_breaker(
    make: Factory, openai_stub: OpenAIStub, openai_proxy: ThreadedFaultProxy
) -> None:
    ai = make(via(openai_stub, openai_proxy), probe_timeout=0.3)

    async def probe() -> Any:
        return await do(ai.aprobe() if isinstance(ai, AsyncOpenAIAdapter) else ai.probe())

    ai.breaker.force_open()
    result = await probe()
    assert result.ok and result.error is None
    assert openai_stub.requests[-1].path.endswith("/models")
    # a 401 to the probe flags the credentials; the next good probe clears the flag
    openai_stub.script(401)
    result = await probe()
    assert not result.ok and ai.health()["credentials_problem"] == "credentials"
    result = await probe()
    assert result.ok and ai.health()["credentials_problem"] is None
    # a probe has its own timeout
    openai_proxy.set_mode(Mode.BLACKHOLE)
    result = await probe()
    assert not result.ok and result.error is not None
    assert ai.health()["last_probe"]["ok"] is False
    openai_proxy.set_mode(Mode.PASS)
    assert ai.breaker.snapshot().total_failures == 0  # probes never count


async def test_built_from_an_existing_client(flavour: str, openai_stub: OpenAIStub) -> None:
    client: openai.OpenAI | openai.AsyncOpenAI
    ai: AnyAdapter
    tuned: AnyAdapter
    if flavour == "sync":
        client = openai.OpenAI(base_url=openai_stub.base_url, api_key=KEY)
        ai = OpenAIAdapter(client, config=short())
        assert ai.client is client and ai.client.max_retries == 2  # used as it is
        tuned = OpenAIAdapter(client, timeout=1.5, max_retries=1, name="tuned")
    else:
        client = openai.AsyncOpenAI(base_url=openai_stub.base_url, api_key=KEY)
        ai = AsyncOpenAIAdapter(client, config=short())
        assert ai.client is client and ai.client.max_retries == 2
        tuned = AsyncOpenAIAdapter(client, timeout=1.5, max_retries=1, name="tuned")
    assert tuned.client is not client
    assert tuned.client.max_retries == 1 and tuned.client.timeout == 1.5
    assert tuned.extra_figures()["timeout_s"] == 1.5
    assert (await do(ai.embed(["x"])))[0]
    await close(ai)  # not the adapter's client: still usable
    assert (await do(tuned.embed(["y"])))[0]
    await close(tuned)
    await do(client.models.list())
    await do(client.close())
    with pytest.raises(ValueError, match="not both"):
        OpenAIAdapter(openai.OpenAI(api_key=KEY), api_key=KEY)


async def test_defaults_and_extra_figures(make: Factory, openai_stub: OpenAIStub) -> None:
    ai = make(openai_stub.base_url, timeout=None, config=None)
    assert ai.kind == "openai"
    cfg = ai.breaker.config
    assert (cfg.consecutive_failures, cfg.open_for, cfg.half_open_calls) == (5, 60.0, 2)
    assert ai.client.max_retries == 0
    assert ai.client.timeout == openai.Timeout(30.0, connect=3.0)
    openai_stub.script(
        headers={"x-ratelimit-remaining-requests": "499", "x-ratelimit-remaining-tokens": "9000"}
    )
    await do(ai.chat(MESSAGES))
    figures = ai.extra_figures()
    assert figures["model"] == "gpt-4o-mini"
    assert figures["embedding_model"] == "text-embedding-3-small"
    assert figures["base_url"].rstrip("/") == openai_stub.base_url
    assert figures["timeout_s"] == 30.0 and figures["max_retries"] == 0
    assert figures["ratelimit"] == {"remaining_requests": 499, "remaining_tokens": 9000}
    health = ai.health()
    assert health["kind"] == "openai" and health["model"] == "gpt-4o-mini"
    assert KEY not in json.dumps(health, default=str)


def test_import_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['openai'] = None\n"
        "try:\n    import brownout.openai\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pip install 'brownout[openai]'" in out


def test_the_core_does_not_import_the_sdk() -> None:
    code = "import sys, brownout, brownout.adapter; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
