"""A retry budget on the client libraries' own retries.

The adapters turn their clients' retries off by default (the breaker must see
every failure). When an application turns them on (a redis-py ``Retry`` with
retries, the OpenAI SDK's ``max_retries``), an adapter given a
:class:`~brownout.overload.RetryBudget` makes those retries ask the budget
first: a retry beyond it is not made, and the attempt's own error is raised as
the client would have raised it once out of retries. The budget counts the
first attempts (``request()``) and the retries made and refused.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from brownout.overload._budget import RetryBudget

__all__ = [
    "budget_botocore_client",
    "budget_openai_client",
    "budget_redis_retry",
    "cap_openai_retry_wait",
]


# -- redis-py ---------------------------------------------------------------------------


_CLASSES: dict[type[Any], type[Any]] = {}


def _budgeted_retry_class(base: type[Any]) -> type[Any]:
    """The budgeted subclass of ``base``, made once."""
    cls = _CLASSES.get(base)
    if cls is None:
        cls = _CLASSES[base] = _make_budgeted_retry_class(base)
    return cls


def _make_budgeted_retry_class(base: type[Any]) -> type[Any]:
    """A subclass of redis-py's sync or asyncio ``Retry`` whose ``call_with_retry``
    asks a budget before each retry (through the failure handler it is given, which
    runs after the client's own clean-up and before the retry)."""
    is_async = base.__module__.startswith("redis.asyncio")

    def allowed(self: Any, error: BaseException, failures: int) -> bool:
        would_retry = self._retries < 0 or failures <= self._retries
        if not would_retry:
            return True  # out of retries anyway: the loop raises, nothing to ask
        checker = getattr(self, "_is_retryable", None)
        if checker is not None and not checker(error):
            return True  # not retryable: the loop raises
        budget: RetryBudget = self._brownout_budget
        return budget.try_retry()

    def __deepcopy__(self: Any, memo: dict[int, Any]) -> Any:
        # a connection deep-copies its retry: the copy shares the budget
        clone = copy.copy(self)
        clone._backoff = copy.deepcopy(self._backoff, memo)
        return clone

    if is_async:

        async def acall_with_retry(
            self: Any,
            do: Callable[[], Awaitable[Any]],
            fail: Callable[..., Any],
            *a: Any,
            **kw: Any,
        ) -> Any:
            self._brownout_budget.request()
            failures = 0

            async def guarded_fail(error: BaseException, *count: int) -> None:
                nonlocal failures
                await fail(error, *count)
                failures += 1
                if not allowed(self, error, failures):
                    raise error

            return await base.call_with_retry(self, do, guarded_fail, *a, **kw)

        namespace: dict[str, Any] = {"call_with_retry": acall_with_retry}
    else:

        def call_with_retry(
            self: Any, do: Callable[[], Any], fail: Callable[..., Any], *a: Any, **kw: Any
        ) -> Any:
            self._brownout_budget.request()
            failures = 0

            def guarded_fail(error: BaseException, *count: int) -> None:
                nonlocal failures
                fail(error, *count)
                failures += 1
                if not allowed(self, error, failures):
                    raise error

            return base.call_with_retry(self, do, guarded_fail, *a, **kw)

        namespace = {"call_with_retry": call_with_retry}
    namespace["__deepcopy__"] = __deepcopy__
    return type(f"Budgeted{base.__name__}", (base,), namespace)


def budget_redis_retry(retry: Any, budget: RetryBudget) -> Any:
    """A copy of redis-py's ``retry`` whose retries stay within ``budget``."""
    if getattr(retry, "_brownout_budget", None) is not None:
        retry = copy.copy(retry)
        retry._brownout_budget = budget
        return retry
    budgeted = copy.copy(retry)
    budgeted.__class__ = _budgeted_retry_class(type(retry))
    budgeted._brownout_budget = budget
    return budgeted


# -- OpenAI SDK -------------------------------------------------------------------------


def _openai_refusal(client: Any, response: Any) -> BaseException:
    """The error the OpenAI SDK raises once out of retries, for the attempt that failed:
    a status error for an HTTP answer, ``APITimeoutError`` / ``APIConnectionError`` for
    a failure to get one (called inside the SDK's error handler)."""
    import openai

    if response is not None:
        error: BaseException = client._make_status_error_from_response(response)
        return error
    failed = sys.exc_info()[1]
    try:
        request = failed.request  # type: ignore[union-attr]
    except Exception:  # httpx raises RuntimeError when the error has no request
        request = None
    # the SDK's httpx flavour (httpx or httpx2) is its own: match the class by name
    if any(c.__name__ == "TimeoutException" for c in type(failed).__mro__):
        return openai.APITimeoutError(request=request)
    return openai.APIConnectionError(request=request)


def cap_openai_retry_wait(
    client: Any, max_wait: float, asked: Callable[[Any], float | None]
) -> None:
    """A retry of the OpenAI SDK client whose answer asks to wait longer than
    ``max_wait`` seconds (``asked(response)``: its ``Retry-After``, or a rate limit's
    reset) is not made: the attempt's own error is raised at once, as when out of
    retries. The SDK honours a ``Retry-After`` of up to minutes, which would hold the
    request (and its caller's slot) that long; the breaker and the throttle see the
    error instead and keep the API's wish for the calls that follow.
    """
    _check_openai_client(client, "max_retry_wait")
    sleep = client._sleep_for_retry

    def too_long(response: Any) -> bool:
        if response is None:
            return False
        wait = asked(response)
        return wait is not None and wait > max_wait

    if _is_coroutine_function(sleep):

        async def asleep_for_retry(*args: Any, response: Any = None, **kwargs: Any) -> None:
            if too_long(response):
                raise _openai_refusal(client, response) from sys.exc_info()[1]
            await sleep(*args, response=response, **kwargs)

        client._sleep_for_retry = asleep_for_retry
    else:

        def sleep_for_retry(*args: Any, response: Any = None, **kwargs: Any) -> None:
            if too_long(response):
                raise _openai_refusal(client, response) from sys.exc_info()[1]
            sleep(*args, response=response, **kwargs)

        client._sleep_for_retry = sleep_for_retry


def _check_openai_client(client: Any, what: str) -> None:
    import openai

    for name in ("_build_request", "_sleep_for_retry", "_make_status_error_from_response"):
        if not callable(getattr(client, name, None)):
            raise TypeError(
                f"{what}: this openai SDK ({openai.__version__}) has no {name}() on its "
                "client; its retries cannot be seen"
            )


def budget_openai_client(client: Any, budget: RetryBudget) -> None:
    """Make the OpenAI SDK client's own retries (``max_retries``) ask ``budget``.

    The SDK builds a request per attempt (``_build_request(options,
    retries_taken=n)``: a first attempt when ``n == 0``) and calls
    ``_sleep_for_retry`` inside its error handler before each retry. Refused, the
    retry is not made and the error the SDK raises when out of retries is raised
    (a status error for an HTTP answer, ``APITimeoutError`` /
    ``APIConnectionError`` for a failure to get one).
    """
    _check_openai_client(client, "retry_budget")
    build = client._build_request
    sleep = client._sleep_for_retry

    def build_request(options: Any, *args: Any, retries_taken: int = 0, **kwargs: Any) -> Any:
        if retries_taken == 0:
            budget.request()
        return build(options, *args, retries_taken=retries_taken, **kwargs)

    if _is_coroutine_function(sleep):

        async def asleep_for_retry(*args: Any, response: Any = None, **kwargs: Any) -> None:
            if not budget.try_retry():
                raise _openai_refusal(client, response) from sys.exc_info()[1]
            await sleep(*args, response=response, **kwargs)

        client._sleep_for_retry = asleep_for_retry
    else:

        def sleep_for_retry(*args: Any, response: Any = None, **kwargs: Any) -> None:
            if not budget.try_retry():
                raise _openai_refusal(client, response) from sys.exc_info()[1]
            sleep(*args, response=response, **kwargs)

        client._sleep_for_retry = sleep_for_retry
    client._build_request = build_request


def _is_coroutine_function(fn: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


# -- botocore ---------------------------------------------------------------------------


def budget_botocore_client(client: Any, budget: RetryBudget) -> None:
    """Make a botocore client's own retries (``Config(retries=...)``, standard or
    adaptive mode) ask ``budget``.

    A first attempt is counted on the client's public ``before-call`` event. Each
    retry goes through the retry handler botocore registered for the client
    (``retry-config-<service>``); its quota check is wrapped so that a retry the
    budget refuses is not made (botocore then returns the attempt's own answer or
    raises its error, as when its quota is spent). Raises ``TypeError`` when the
    client has no such handler (legacy retry mode).
    """
    events = client.meta.events
    service = client.meta.service_model.service_id.hyphenize()
    emitter = getattr(events, "_emitter", events)
    entry = getattr(emitter, "_unique_id_handlers", {}).get(f"retry-config-{service}")
    handler = getattr(entry.get("handler") if entry else None, "__self__", None)
    quota = getattr(handler, "_retry_quota", None)
    if quota is None or not callable(getattr(quota, "acquire_retry_quota", None)):
        raise TypeError(
            "retry_budget: this botocore client has no standard retry handler to budget "
            "(use Config(retries={'mode': 'standard'}) or 'adaptive')"
        )
    acquire = quota.acquire_retry_quota

    def acquire_retry_quota(context: Any) -> bool:
        return bool(acquire(context)) and budget.try_retry()

    quota.acquire_retry_quota = acquire_retry_quota

    def count_request(**_: Any) -> None:
        budget.request()

    events.register(
        f"before-call.{service}", count_request, unique_id=f"brownout-budget-{id(budget)}"
    )
