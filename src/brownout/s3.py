"""S3 behind a circuit breaker: :class:`S3Adapter` (boto3), :class:`AsyncS3Adapter` (aiobotocore).

Each adapter is bound to a default bucket (every operation takes ``bucket=`` to
override it) and runs every request to S3 through its breaker: ``upload``,
``download``, ``download_to`` (streamed into a file object), ``delete``,
``list`` (one guarded call per page), ``head`` and ``copy``. Connection errors,
timeouts, 5xx answers and throttling count against S3; caller errors (a
missing key or bucket, access denied, an invalid request) pass through and
count as nothing. A throttling answer's ``Retry-After`` sets the break.

The client's own retries are off by default (see :func:`client_config`): the
breaker must see every failure, quickly, rather than a retry loop that hides
an outage behind a few seconds of latency. ``use_options(read_timeout=...,
max_retries=...)`` changes them for the calls that follow (one botocore client
per setting; inventario: per degradation level).

>>> from brownout import BreakerConfig
>>> s3 = S3Adapter.create(  # doctest: +SKIP
...     "invoices",
...     endpoint_url="http://127.0.0.1:9000",
...     config=BreakerConfig(consecutive_failures=5, open_for=30),
... )
>>> s3.upload("2024/01.pdf", b"%PDF...", content_type="application/pdf")  # doctest: +SKIP
>>> s3.download("2024/01.pdf")  # doctest: +SKIP
b'%PDF...'

Install with ``pip install 'brownout[s3]'``; the core ``brownout`` package
never imports this module.
"""

from __future__ import annotations

import builtins
import contextlib
import email.utils
import inspect
import math
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self, TypeVar, Unpack

try:
    import aiobotocore.session  # type: ignore[import-untyped,unused-ignore]
    import aiohttp
    import boto3  # type: ignore[import-untyped,unused-ignore]
    import botocore.exceptions as bex  # type: ignore[import-untyped,unused-ignore]
    from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"brownout.s3 needs boto3 and aiobotocore ({exc}): pip install 'brownout[s3]'"
    ) from exc

from brownout._lifetime import AsyncResource, SyncResource
from brownout._options import AdapterOptions
from brownout.adapter import Adapter, ErrorRule, ErrorTable, Figures
from brownout.overload._clients import budget_botocore_client

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "S3_ERRORS",
    "AsyncS3Adapter",
    "Data",
    "ObjectInfo",
    "Readable",
    "S3Adapter",
    "S3Options",
    "Writable",
    "client_config",
]

R = TypeVar("R")


class Readable(Protocol):
    """A binary file object to upload from (``open(path, "rb")``, ``io.BytesIO``...)."""

    def read(self, size: int = ..., /) -> bytes | None: ...


class Writable(Protocol):
    """A binary file object to download into; for the async adapter ``write`` may be async."""

    def write(self, data: bytes, /) -> object: ...


#: What ``upload`` accepts.
Data = bytes | bytearray | memoryview | Readable

#: Seconds to wait for a TCP connection to S3 (botocore's own default is 60).
DEFAULT_CONNECT_TIMEOUT = 1.0
#: Seconds to wait for each read from S3's socket (botocore's own default is 60).
DEFAULT_READ_TIMEOUT = 5.0
#: Keys per ``ListObjectsV2`` page (S3's maximum).
DEFAULT_PAGE_SIZE = 1000
#: Bytes per chunk when :meth:`S3Adapter.download_to` streams into a file.
DEFAULT_CHUNK_SIZE = 64 * 1024

# ------------------------------------------------------------------ classification

THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "SlowDownRead",
        "SlowDownWrite",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "429",
        "503",  # a HEAD answered 503 has no body: S3's 503 is "slow down"
    }
)
SERVER_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "InternalServerError", "500", "502", "503", "504"}
)
TIMEOUT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "408"})
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccountProblem",
        "403",
    }
)
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NoSuchVersion", "404"})

_LOCAL_MARK = "_brownout_s3_local"


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def _status(exc: BaseException) -> int:
    response = getattr(exc, "response", None) or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else 0


def _is_local(exc: BaseException) -> bool:
    """an error raised by the caller's own file object (read for upload, write for download_to)"""
    return bool(getattr(exc, _LOCAL_MARK, False))


def _is_throttled(exc: BaseException) -> bool:
    """ClientError SlowDown, Throttling, RequestLimitExceeded, 429, 503 (HEAD)"""
    return isinstance(exc, bex.ClientError) and (
        _code(exc) in THROTTLE_CODES or _status(exc) == 429
    )


def _is_server_error(exc: BaseException) -> bool:
    """ClientError InternalError, ServiceUnavailable, any 5xx status"""
    return isinstance(exc, bex.ClientError) and (_code(exc) in SERVER_CODES or _status(exc) >= 500)


def _is_request_timeout(exc: BaseException) -> bool:
    """ClientError RequestTimeout (400/408: S3 gave up waiting for the request body)"""
    return isinstance(exc, bex.ClientError) and (_code(exc) in TIMEOUT_CODES or _status(exc) == 408)


def _is_auth(exc: BaseException) -> bool:
    """ClientError AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, ExpiredToken, 403"""
    return isinstance(exc, bex.ClientError) and (_code(exc) in AUTH_CODES or _status(exc) == 403)


def _is_not_found(exc: BaseException) -> bool:
    """ClientError NoSuchKey, NoSuchBucket, NoSuchUpload, 404"""
    return isinstance(exc, bex.ClientError) and (
        _code(exc) in NOT_FOUND_CODES or _status(exc) == 404
    )


def _is_aiohttp_error(exc: BaseException) -> bool:
    """aiohttp.ClientError (async: connector, payload, server disconnected)"""
    return isinstance(exc, aiohttp.ClientError)


def _is_other_4xx(exc: BaseException) -> bool:
    """ClientError InvalidRequest, InvalidArgument, EntityTooLarge, ... any other 4xx"""
    return isinstance(exc, bex.ClientError) and 400 <= _status(exc) < 500


#: How the S3 adapters classify errors; the first matching rule wins.
S3_ERRORS = ErrorTable(
    ErrorRule(_is_local, False, "local_io", "the caller's own file failed, S3 did nothing wrong"),
    ErrorRule(
        _is_throttled, True, "throttled", "S3 asks us to back off; its Retry-After sets the break"
    ),
    ErrorRule(_is_server_error, True, "server", "S3 (or the gateway before it) is failing"),
    ErrorRule(_is_request_timeout, True, "timeout", "the request stalled on the network"),
    ErrorRule(
        _is_auth,
        False,
        "auth",
        "credentials or policy are wrong: opening the breaker fixes nothing",
    ),
    ErrorRule(
        _is_not_found, False, "not_found", "a missing key or bucket is an answer, not an outage"
    ),
    ErrorRule(
        _is_other_4xx, False, "caller", "S3 rejected the request as invalid: the caller's mistake"
    ),
    ErrorRule(bex.ConnectTimeoutError, True, "timeout", "S3 did not accept a connection in time"),
    ErrorRule(bex.ReadTimeoutError, True, "timeout", "S3 did not answer within read_timeout"),
    ErrorRule(bex.EndpointConnectionError, True, "connection", "S3 is unreachable (refused, DNS)"),
    ErrorRule(
        bex.ConnectionClosedError, True, "connection", "S3 closed the connection mid-request"
    ),
    ErrorRule(bex.ConnectionError, True, "connection", "the connection to S3 failed (proxy, TLS)"),
    ErrorRule(
        bex.HTTPClientError, True, "connection", "the HTTP exchange with S3 broke (stream cut)"
    ),
    ErrorRule(bex.IncompleteReadError, True, "connection", "the object's body was cut short"),
    ErrorRule(_is_aiohttp_error, True, "connection", "aiohttp could not talk to S3"),
    ErrorRule(TimeoutError, True, "timeout", "the request to S3 timed out"),
    ErrorRule(OSError, True, "connection", "a socket error talking to S3"),
    ErrorRule(bex.NoCredentialsError, False, "auth", "no credentials configured: a setup mistake"),
    ErrorRule(
        bex.PartialCredentialsError, False, "auth", "incomplete credentials: a setup mistake"
    ),
    ErrorRule(
        bex.ParamValidationError, False, "caller", "invalid parameters never left the process"
    ),
)


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return seconds if seconds > 0 else None


def _annotate(exc: BaseException) -> None:
    """Attach ``retry_after`` (seconds) to a throttling/5xx error whose answer had Retry-After.

    Runs inside the guarded call, before the breaker classifies the error, so
    the breaker's default ``retry_after`` hook sets the break from it.
    """
    if not isinstance(exc, bex.ClientError) or getattr(exc, "retry_after", None) is not None:
        return
    if not (_is_throttled(exc) or _is_server_error(exc)):
        return
    headers = (exc.response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    raw = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    seconds = _parse_retry_after(raw)
    if seconds is not None:
        exc.retry_after = seconds


def _mark_local(exc: BaseException) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _LOCAL_MARK, True)


# ------------------------------------------------------------------ client settings


def client_config(
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_pool_connections: int = 10,
    addressing_style: str | None = "path",
    override: Any = None,
) -> Any:
    """The botocore ``Config`` the adapters build their clients with.

    Short timeouts, and **no client retries** (``total_max_attempts=1``): a
    retry loop hides an outage from the breaker (three attempts of a 5 s read
    timeout look like one slow call) and keeps hammering a struggling S3. The
    breaker is the retry policy; put retries around it if you want them.
    ``override`` (a ``Config``) is merged last, its settings win, e.g.
    ``Config(retries={"total_max_attempts": 2})`` to allow one retry.

    >>> cfg = client_config(read_timeout=2)
    >>> cfg.read_timeout, cfg.retries
    (2, {'total_max_attempts': 1, 'mode': 'standard'})
    """
    settings: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "max_pool_connections": max_pool_connections,
        "retries": {"total_max_attempts": 1, "mode": "standard"},
    }
    if addressing_style is not None:
        settings["s3"] = {"addressing_style": addressing_style}
    config = Config(**settings)
    if override is not None:
        config = config.merge(override)
    return config


#: What a client is built with that :meth:`_S3Base.use_options` changes: (connect
#: timeout s, read timeout s, retries). The adapters keep one client per key.
_Key = tuple[float, float, int]


def _max_retries(config: Any) -> int:
    """The retries a botocore ``Config`` allows (botocore's defaults when it names none:
    2 in standard and adaptive mode, 4 in legacy mode)."""
    retries = getattr(config, "retries", None) or {}
    if "total_max_attempts" in retries:
        return max(0, int(retries["total_max_attempts"]) - 1)
    if "max_attempts" in retries:
        return max(0, int(retries["max_attempts"]))
    return 2 if retries.get("mode") in ("standard", "adaptive") else 4


def _key_of(config: Any) -> _Key:
    return (float(config.connect_timeout), float(config.read_timeout), _max_retries(config))


def _config_for(base: Any, key: _Key) -> Any:
    """``base`` (the adapter's ``Config``) with the timeouts and retries of ``key``; its
    other settings (retry mode, pool, addressing style...) kept."""
    if _key_of(base) == key:
        return base
    connect, read, retries = key
    policy = {k: v for k, v in (base.retries or {}).items() if k != "max_attempts"}
    policy["total_max_attempts"] = retries + 1
    policy.setdefault("mode", "standard")
    return base.merge(Config(connect_timeout=connect, read_timeout=read, retries=policy))


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"use_options: {name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"use_options: {name} must be > 0 seconds, got {value!r}")
    return float(value)


def _retries(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"use_options: max_retries must be an integer >= 0, got {value!r}")
    return value


def _client_secrets(client: Any) -> builtins.list[str]:
    """Best effort: the secret key and session token the client signs with (never logged)."""
    out: builtins.list[str] = []
    try:
        creds = client._request_signer._credentials
        attrs = vars(creds)
    except (AttributeError, TypeError):
        return out
    for name in ("secret_key", "_secret_key", "token", "_token"):
        value = attrs.get(name)
        if isinstance(value, str) and value:
            out.append(value)
    return out


# ------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What S3 says about one object (``head``) or one listing entry (``list``).

    ``etag`` is without its surrounding quotes. Listings carry no
    ``content_type`` and no ``metadata`` (``None`` / empty): ``head`` the key
    for those.
    """

    key: str
    size: int
    etag: str | None
    last_modified: datetime | None
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


def _etag(value: Any) -> str | None:
    return value.strip('"') if isinstance(value, str) else None


def _head_info(key: str, response: Mapping[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=int(response.get("ContentLength") or 0),
        etag=_etag(response.get("ETag")),
        last_modified=response.get("LastModified"),
        content_type=response.get("ContentType"),
        metadata=dict(response.get("Metadata") or {}),
    )


def _listed_info(item: Mapping[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        key=item["Key"],
        size=int(item.get("Size") or 0),
        etag=_etag(item.get("ETag")),
        last_modified=item.get("LastModified"),
    )


def _body(data: Any) -> tuple[Any, int]:
    """The request body and its size; a non-seekable stream is read into memory."""
    if isinstance(data, bytes):
        return data, len(data)
    if isinstance(data, bytearray | memoryview):
        raw = bytes(data)
        return raw, len(raw)
    if isinstance(data, str):
        raise TypeError("upload() takes bytes or a binary file object, not str: encode it first")
    if not hasattr(data, "read"):
        raise TypeError(f"upload() takes bytes or a binary file object, got {type(data).__name__}")
    seekable = getattr(data, "seekable", None)
    if callable(seekable) and seekable():
        start = data.tell()
        end = data.seek(0, 2)
        data.seek(start)
        return data, end - start
    raw = data.read()
    if not isinstance(raw, bytes):
        raise TypeError("upload() needs a binary file object (its read() returned str)")
    return raw, len(raw)


# ------------------------------------------------------------------ shared base


class S3Options(AdapterOptions, total=False):
    """:class:`~brownout.adapter.AdapterOptions` and the S3 adapters' own.

    - ``page_size``: keys per ListObjectsV2 page, 1..1000 (default 1000).
    - ``chunk_size``: bytes per piece ``download_to`` writes (default 64 KiB).
    """

    page_size: int
    chunk_size: int


@dataclass(frozen=True)
class _ClientSettings:
    """What :meth:`_S3Base.create` was given to build a client; the shells build it."""

    endpoint_url: str | None
    region_name: str | None
    aws_access_key_id: str | None
    aws_secret_access_key: str | None = field(repr=False)
    aws_session_token: str | None = field(repr=False)
    profile_name: str | None
    config: Any


class _S3Base(Adapter):
    """Construction, request building, result handling and accounting shared by both
    adapters; the shells differ in how they build (:meth:`_created`) and call the client."""

    kind: ClassVar[str] = "s3"
    errors: ClassVar[ErrorTable] = S3_ERRORS
    probe_timeout: float = 2.0
    #: What :meth:`create` built the client from (``None`` for a client passed in).
    _settings: _ClientSettings | None = None
    #: The settings of the client as built (the probe's); the current setting.
    _built_key: _Key | None = None
    _key: _Key | None = None

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        owns_client: bool = False,
        page_size: int = DEFAULT_PAGE_SIZE,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **options: Unpack[AdapterOptions],
    ) -> None:
        if not isinstance(bucket, str) or not bucket:
            raise ValueError(f"{type(self).__name__}: bucket must be a non-empty string")
        if not 1 <= page_size <= 1000:
            raise ValueError(f"{type(self).__name__}: page_size must be in 1..1000")
        if chunk_size < 1:
            raise ValueError(f"{type(self).__name__}: chunk_size must be >= 1")
        super().__init__(**options)
        self.bucket = bucket
        self.page_size = page_size
        self.chunk_size = chunk_size
        self._client: Any = client
        self._owns_client = owns_client
        #: the clients built per setting (:meth:`use_options`), the one as built included
        self._variants: dict[_Key, Any] = {}
        if client is not None:
            self._add_secrets(_client_secrets(client))
            self._budget_retries(client)

    def _budget_retries(self, client: Any) -> None:
        """botocore's (or aiobotocore's) own retries ask the adapter's retry budget."""
        budget = self.guards.retry_budget
        if budget is not None:
            budget_botocore_client(client, budget)

    @classmethod
    def create(
        cls,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_pool_connections: int = 10,
        addressing_style: str | None = None,
        botocore_config: Any = None,
        **options: Unpack[S3Options],
    ) -> Self:
        """An adapter with a client of its own (boto3, or aiobotocore opened on first use
        or by ``async with``), closed by ``close()`` / ``await aclose()``.

        ``addressing_style`` defaults to ``"path"`` with an ``endpoint_url``
        (MinIO, moto, Ceph...) and to botocore's choice without one (AWS).
        ``botocore_config`` is merged over :func:`client_config`'s settings.
        ``options`` go to the constructor (``name``, ``config``, ``registry``...).
        """
        settings = _ClientSettings(
            endpoint_url=endpoint_url,
            region_name=region_name,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            profile_name=profile_name,
            config=client_config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_pool_connections=max_pool_connections,
                addressing_style=addressing_style or ("path" if endpoint_url else None),
                override=botocore_config,
            ),
        )
        options["secrets"] = [*options.get("secrets", ()), aws_secret_access_key, aws_session_token]
        adapter = cls._created(bucket, settings, options)
        adapter._settings = settings
        adapter._built_key = adapter._key = _key_of(settings.config)
        if adapter._client is not None:
            adapter._variants[adapter._built_key] = adapter._client
        return adapter

    @classmethod
    def _created(cls, bucket: str, settings: _ClientSettings, options: S3Options) -> Self:
        """The adapter :meth:`create` returns, owning a client built from ``settings``."""
        raise NotImplementedError

    def use_options(
        self,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_retries: int | None = None,
    ) -> None:
        """Calls from now on use these timeouts (seconds) and botocore retries (``None``:
        as the adapter was built). botocore fixes a client's settings when it is built,
        so the adapter keeps one client per distinct setting, built on its first use
        (the sync adapter builds it here) and closed with the adapter; switching back
        and forth (inventario: on each change of degradation level) builds no new ones.
        A call already running finishes on the client it started on. Every client's
        retries ask the adapter's ``retry_budget``. The health probe keeps the client
        as built. Only for an adapter made by :meth:`create` (``TypeError`` otherwise:
        a client passed in keeps the settings it was built with).
        """
        built = self._built_key
        if self._settings is None or built is None:
            raise TypeError(
                f"{type(self).__name__}.use_options needs an adapter made by create(): "
                "a client passed in keeps the timeouts and retries it was built with"
            )
        key = (
            built[0] if connect_timeout is None else _seconds("connect_timeout", connect_timeout),
            built[1] if read_timeout is None else _seconds("read_timeout", read_timeout),
            built[2] if max_retries is None else _retries(max_retries),
        )
        self._switch(key)

    def _switch(self, key: _Key) -> None:
        """Make ``key``'s client the current one (the shells build or open it)."""
        raise NotImplementedError

    def _config(self, key: _Key) -> Any:
        assert self._settings is not None
        return _config_for(self._settings.config, key)

    @property
    def client_options(self) -> Mapping[str, float | int] | None:
        """The current setting: ``connect_timeout``, ``read_timeout`` (s), ``max_retries``
        (``None`` for a client passed in)."""
        key = self._key
        if key is None:
            return None
        return {"connect_timeout": key[0], "read_timeout": key[1], "max_retries": key[2]}

    def _open_clients(self) -> builtins.list[Any]:
        """Every client the adapter has open now, the current one first."""
        clients = [] if self._client is None else [self._client]
        clients += [c for c in builtins.list(self._variants.values()) if c is not self._client]
        return clients

    def _add_secrets(self, secrets: Iterable[str]) -> None:
        new = tuple(s for s in secrets if s and s not in self._secrets)
        if new:
            self._secrets = (*self._secrets, *new)

    def _on_error(self, exc: Exception, rule: ErrorRule) -> None:
        if rule.kind == "auth":
            self.stats.credentials_problem = self.describe(exc)

    # request builders: (parameters, figures)
    def _put(
        self,
        key: str,
        data: Data,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        bucket: str | None,
    ) -> tuple[dict[str, Any], Figures]:
        body, size = _body(data)
        params: dict[str, Any] = {"Bucket": bucket or self.bucket, "Key": key, "Body": body}
        if content_type is not None:
            params["ContentType"] = content_type
        if metadata:
            params["Metadata"] = dict(metadata)
        return params, Figures(key=key, bytes_sent=size)

    def _keyed(self, key: str, bucket: str | None) -> tuple[dict[str, Any], Figures]:
        return {"Bucket": bucket or self.bucket, "Key": key}, Figures(key=key)

    def _copy(
        self, src_key: str, dst_key: str, bucket: str | None, src_bucket: str | None
    ) -> tuple[dict[str, Any], Figures]:
        dst = bucket or self.bucket
        params = {
            "Bucket": dst,
            "Key": dst_key,
            "CopySource": {"Bucket": src_bucket or dst, "Key": src_key},
        }
        return params, Figures(key=dst_key)

    def _list_params(
        self, prefix: str, bucket: str | None, page_size: int | None, token: str | None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "Bucket": bucket or self.bucket,
            "Prefix": prefix,
            "MaxKeys": page_size or self.page_size,
        }
        if token:
            params["ContinuationToken"] = token
        return params

    @staticmethod
    def _page(response: Mapping[str, Any]) -> tuple[builtins.list[ObjectInfo], str | None]:
        items = [_listed_info(item) for item in response.get("Contents") or ()]
        token = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        return items, token

    # figures
    def _pool_figures(self) -> dict[str, int]:
        return {}

    def extra_figures(self) -> Mapping[str, Any]:
        """``bucket``, ``bytes_up``/``bytes_down`` totals and, when readable, pool use."""
        totals = dict(self.stats.totals)
        figures: dict[str, Any] = {
            "bucket": self.bucket,
            "bytes_up": totals.get("bytes_sent", 0),
            "bytes_down": totals.get("bytes_received", 0),
        }
        if self._open_clients():
            with contextlib.suppress(Exception):
                figures.update(self._pool_figures())
        return figures


def _guard(fn: Callable[..., R]) -> Callable[..., R]:
    """``fn`` with Retry-After attached to its errors (before the breaker sees them)."""

    def guarded(*args: Any, **kwargs: Any) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            _annotate(exc)
            raise

    return guarded


def _aguard(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """The async :func:`_guard`."""

    async def guarded(*args: Any, **kwargs: Any) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            _annotate(exc)
            raise

    return guarded


# ------------------------------------------------------------------ sync

# Deliberate twins, not a hot path: the sync and async shells repeat each operation's
# signature (a def and an async def cannot be one function), and their bodies differ in
# the client's I/O (boto3 vs aiobotocore's streams, awaited). Everything else, the
# request parameters and the figures, is built once in _S3Base (_put, _keyed, ...).
# `duplicates` lists the signatures as shared lines; each call is a network round trip,
# so nothing here is measured for speed.


class S3Adapter(_S3Base, SyncResource):
    """A boto3 S3 client behind a circuit breaker, bound to one bucket.

    Build it with :meth:`create` (the adapter makes and owns the client, with
    :func:`client_config`'s short timeouts and no retries), or pass your own
    ``boto3.client("s3")`` (ideally made with ``config=client_config()``;
    the adapter never closes a client it was given unless ``owns_client``).

    >>> s3 = S3Adapter.create("avatars", endpoint_url="http://127.0.0.1:9000")  # doctest: +SKIP
    >>> with s3:  # doctest: +SKIP
    ...     s3.upload("u/1.png", b"...", content_type="image/png")
    ...     [o.key for o in s3.list("u/")]
    ['u/1.png']
    """

    #: Builds a client from a ``Config`` (set by :meth:`create`); None for a client passed in.
    _build: Callable[[Any], Any] | None = None
    _closed = False

    def __init__(
        self, client: Any, bucket: str, *, owns_client: bool = False, **options: Unpack[S3Options]
    ) -> None:
        super().__init__(client, bucket, owns_client=owns_client, **options)
        self._built_client = client
        self._build_lock = threading.Lock()

    @classmethod
    def _created(cls, bucket: str, settings: _ClientSettings, options: S3Options) -> Self:
        session = boto3.session.Session(
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            aws_session_token=settings.aws_session_token,
            region_name=settings.region_name,
            profile_name=settings.profile_name,
        )

        def build(config: Any) -> Any:
            return session.client("s3", endpoint_url=settings.endpoint_url, config=config)

        adapter = cls(build(settings.config), bucket, owns_client=True, **options)
        adapter._build = build
        return adapter

    @property
    def client(self) -> Any:
        """The boto3 client of the current setting (calls made on it directly bypass the
        breaker)."""
        return self._client

    def _switch(self, key: _Key) -> None:
        build = self._build
        assert build is not None
        with self._build_lock:  # one builder at a time: a boto3 session is not thread-safe
            client = self._variants.get(key)
            if client is None:
                if self._closed:
                    return  # closed: nothing is built any more
                client = build(self._config(key))
                try:
                    self._budget_retries(client)
                except BaseException:
                    client.close()
                    raise
                self._variants[key] = client
            self._key, self._client = key, client

    def close(self) -> None:
        """Close the clients' connection pools if the adapter owns the client (with
        :meth:`use_options`, every client it built)."""
        if not self._owns_client:
            return
        with self._build_lock:
            self._closed = True
            clients = self._open_clients()
        for client in clients:
            client.close()

    # operations
    def upload(
        self,
        key: str,
        data: Data,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        bucket: str | None = None,
    ) -> str | None:
        """Store ``data`` (bytes or a binary file object) at ``key`` with one PutObject.

        Returns the new object's ETag. A seekable file is streamed from its
        current position; a non-seekable one is read into memory first.
        """
        params, figs = self._put(key, data, content_type, metadata, bucket)
        response = self._run("upload", _guard(self._client.put_object), figures=figs, **params)
        return _etag(response.get("ETag"))

    def download(self, key: str, *, bucket: str | None = None) -> bytes:
        """The object's content (raises ``ClientError`` NoSuchKey if it does not exist)."""
        params, figs = self._keyed(key, bucket)

        def fetch() -> bytes:
            body = self._client.get_object(**params)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
            figs.bytes_received = len(data)
            return data

        return self._run("download", _guard(fetch), figures=figs)

    def download_to(self, key: str, fileobj: Writable, *, bucket: str | None = None) -> int:
        """Stream the object into ``fileobj`` in ``chunk_size`` pieces; returns the byte count.

        The whole transfer is one guarded call; errors raised by ``fileobj``
        itself pass through without counting against S3.
        """
        params, figs = self._keyed(key, bucket)

        def fetch() -> int:
            body = self._client.get_object(**params)["Body"]
            try:
                for chunk in body.iter_chunks(self.chunk_size):
                    try:
                        fileobj.write(chunk)
                    except Exception as exc:
                        _mark_local(exc)
                        raise
                    figs.bytes_received += len(chunk)
            finally:
                body.close()
            return figs.bytes_received

        return self._run("download_to", _guard(fetch), figures=figs)

    def delete(self, key: str, *, bucket: str | None = None) -> None:
        """Delete the object (S3 answers success for a key that does not exist)."""
        params, figs = self._keyed(key, bucket)
        self._run("delete", _guard(self._client.delete_object), figures=figs, **params)

    def head(self, key: str, *, bucket: str | None = None) -> ObjectInfo:
        """Size, ETag, content type, metadata and last-modified time of the object."""
        params, figs = self._keyed(key, bucket)
        response = self._run("head", _guard(self._client.head_object), figures=figs, **params)
        return _head_info(key, response)

    def copy(
        self,
        src_key: str,
        dst_key: str,
        *,
        bucket: str | None = None,
        src_bucket: str | None = None,
    ) -> str | None:
        """Server-side copy (no bytes through this process); returns the copy's ETag."""
        params, figs = self._copy(src_key, dst_key, bucket, src_bucket)
        response = self._run("copy", _guard(self._client.copy_object), figures=figs, **params)
        return _etag((response.get("CopyObjectResult") or {}).get("ETag"))

    def list(
        self, prefix: str = "", *, bucket: str | None = None, page_size: int | None = None
    ) -> Iterator[ObjectInfo]:
        """The objects under ``prefix``, in key order, following pagination lazily.

        Every page is one guarded ``ListObjectsV2`` call, made when the
        iteration reaches it: a breaker that opens mid-listing raises
        ``BreakerOpen`` from the loop.
        """
        token: str | None = None
        while True:
            params = self._list_params(prefix, bucket, page_size, token)
            response = self._run(
                "list",
                _guard(self._client.list_objects_v2),
                figures=Figures(key=prefix),
                **params,
            )
            items, token = self._page(response)
            yield from items
            if token is None:
                return

    # probe and figures
    def _probe_once(self) -> None:
        """HeadBucket, abandoned after ``probe_timeout`` (the client's read timeout ends it)."""
        done = threading.Event()
        failure: builtins.list[BaseException] = []

        client = self._built_client  # the client as built: no retries of the level's

        def run() -> None:
            try:
                client.head_bucket(Bucket=self.bucket)
            except BaseException as exc:
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=run, name=f"brownout-s3-probe-{self.name}", daemon=True).start()
        if not done.wait(self.probe_timeout):
            raise TimeoutError(f"probe timed out after {self.probe_timeout:g} s")
        if failure:
            raise failure[0]

    def _pool_figures(self) -> dict[str, int]:
        clients = self._open_clients()
        figures = {"pool_size": int(clients[0].meta.config.max_pool_connections)}
        in_use = 0
        for client in clients:  # a call on another setting's client holds a connection too
            manager = client._endpoint.http_session._manager
            for key in builtins.list(manager.pools.keys()):
                pool = manager.pools.get(key)
                queue = getattr(pool, "pool", None)
                if queue is not None:  # a LifoQueue of idle connections (or None placeholders)
                    in_use += queue.maxsize - queue.qsize()
        figures["pool_in_use"] = in_use
        return figures


# ------------------------------------------------------------------ async


class AsyncS3Adapter(_S3Base, AsyncResource):
    """An aiobotocore S3 client behind a circuit breaker, bound to one bucket.

    :meth:`create` returns an adapter that opens its own client on first use
    and closes it on :meth:`close` or at the end of ``async with``. Passing an
    open aiobotocore client instead leaves its lifetime to you.

    >>> async def main() -> None:  # doctest: +SKIP
    ...     async with AsyncS3Adapter.create("avatars", endpoint_url=URL) as s3:
    ...         await s3.upload("u/1.png", b"...", content_type="image/png")
    ...         async for obj in s3.list("u/"):
    ...             print(obj.key, obj.size)
    """

    #: Opens an owned client from a ``Config`` (set by :meth:`create`); None for a client
    #: passed in.
    _factory: Callable[[Any], Any] | None = None
    _closed = False

    def __init__(
        self, client: Any, bucket: str, *, owns_client: bool = False, **options: Unpack[S3Options]
    ) -> None:
        super().__init__(client, bucket, owns_client=owns_client, **options)
        self._open_lock = threading.Lock()
        #: one per client opened (each closes its client)
        self._stacks: builtins.list[contextlib.AsyncExitStack] = []

    @classmethod
    def _created(cls, bucket: str, settings: _ClientSettings, options: S3Options) -> Self:
        def factory(config: Any) -> Any:
            session = aiobotocore.session.get_session()
            if settings.profile_name is not None:
                session.set_config_variable("profile", settings.profile_name)
            return session.create_client(
                "s3",
                endpoint_url=settings.endpoint_url,
                region_name=settings.region_name,
                aws_access_key_id=settings.aws_access_key_id,
                aws_secret_access_key=settings.aws_secret_access_key,
                aws_session_token=settings.aws_session_token,
                config=config,
            )

        adapter = cls(None, bucket, **options)
        adapter._factory = factory
        return adapter

    @property
    def client(self) -> Any:
        """The aiobotocore client of the current setting, ``None`` until opened (direct
        calls bypass the breaker)."""
        return self._client

    async def open(self) -> Self:
        """Open the owned client now (otherwise the first operation does it)."""
        await self._get_client()
        return self

    def _switch(self, key: _Key) -> None:
        with self._open_lock:  # the client is opened (awaited) by the next call
            self._key, self._client = key, self._variants.get(key)

    async def _get_client(self) -> Any:
        client = self._client
        if client is not None:
            return client
        key = self._key
        if key is None:  # a client passed in, closed
            raise RuntimeError(f"{type(self).__name__} {self.name!r} is closed")
        return await self._open(key)

    async def _open(self, key: _Key) -> Any:
        """The client of ``key``, opened now if it is not yet."""
        client = self._variants.get(key)
        if client is not None:
            return client
        if self._factory is None or self._closed:
            raise RuntimeError(f"{type(self).__name__} {self.name!r} is closed")
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(self._factory(self._config(key)))
        try:
            self._budget_retries(client)
        except BaseException:
            await stack.aclose()
            raise
        with self._open_lock:
            won = key not in self._variants and not self._closed
            if won:
                self._variants[key] = client
                self._stacks.append(stack)
                if key == self._key:
                    self._client = client
        if not won:  # another task opened one meanwhile, or aclose() ran
            await stack.aclose()
            return await self._open(key)
        self._add_secrets(_client_secrets(client))
        return client

    async def aclose(self) -> None:
        """Close the owned clients (idempotent; with :meth:`use_options`, every client
        opened); a client passed in is left open unless ``owns_client=True``. A level
        change after this opens nothing."""
        passed_in = None
        with self._open_lock:
            stacks, self._stacks = self._stacks, []
            if self._factory is not None:
                self._closed = True
                self._client = None
                self._variants = {}
            elif self._owns_client:
                passed_in, self._owns_client = self._client, False
        async with contextlib.AsyncExitStack() as closing:  # all closed if one raises
            for stack in stacks:
                closing.push_async_exit(stack)
        if passed_in is not None:
            await passed_in.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def close(self) -> None:
        """Deprecated: ``await aclose()`` (every async resource of brownout closes so)."""
        warnings.warn(
            "AsyncS3Adapter.close() is deprecated, use 'await adapter.aclose()'",
            DeprecationWarning,
            stacklevel=2,
        )
        await self.aclose()

    # operations
    async def upload(
        self,
        key: str,
        data: Data,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        bucket: str | None = None,
    ) -> str | None:
        """Store ``data`` at ``key`` with one PutObject (see :meth:`S3Adapter.upload`)."""
        client = await self._get_client()
        params, figs = self._put(key, data, content_type, metadata, bucket)
        response = await self._arun("upload", _aguard(client.put_object), figures=figs, **params)
        return _etag(response.get("ETag"))

    async def download(self, key: str, *, bucket: str | None = None) -> bytes:
        """The object's content (raises ``ClientError`` NoSuchKey if it does not exist)."""
        client = await self._get_client()
        params, figs = self._keyed(key, bucket)

        async def fetch() -> bytes:
            response = await client.get_object(**params)
            async with response["Body"] as body:
                data: bytes = await body.read()
            figs.bytes_received = len(data)
            return data

        return await self._arun("download", _aguard(fetch), figures=figs)

    async def download_to(self, key: str, fileobj: Writable, *, bucket: str | None = None) -> int:
        """Stream the object into ``fileobj`` (whose ``write`` may be sync or async)."""
        client = await self._get_client()
        params, figs = self._keyed(key, bucket)

        async def fetch() -> int:
            response = await client.get_object(**params)
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(self.chunk_size):
                    try:
                        written = fileobj.write(chunk)
                        if inspect.isawaitable(written):
                            await written
                    except Exception as exc:
                        _mark_local(exc)
                        raise
                    figs.bytes_received += len(chunk)
            return figs.bytes_received

        return await self._arun("download_to", _aguard(fetch), figures=figs)

    async def delete(self, key: str, *, bucket: str | None = None) -> None:
        """Delete the object (S3 answers success for a key that does not exist)."""
        client = await self._get_client()
        params, figs = self._keyed(key, bucket)
        await self._arun("delete", _aguard(client.delete_object), figures=figs, **params)

    async def head(self, key: str, *, bucket: str | None = None) -> ObjectInfo:
        """Size, ETag, content type, metadata and last-modified time of the object."""
        client = await self._get_client()
        params, figs = self._keyed(key, bucket)
        response = await self._arun("head", _aguard(client.head_object), figures=figs, **params)
        return _head_info(key, response)

    async def copy(
        self,
        src_key: str,
        dst_key: str,
        *,
        bucket: str | None = None,
        src_bucket: str | None = None,
    ) -> str | None:
        """Server-side copy; returns the copy's ETag."""
        client = await self._get_client()
        params, figs = self._copy(src_key, dst_key, bucket, src_bucket)
        response = await self._arun("copy", _aguard(client.copy_object), figures=figs, **params)
        return _etag((response.get("CopyObjectResult") or {}).get("ETag"))

    async def list(
        self, prefix: str = "", *, bucket: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """An async iterator over the objects under ``prefix``; one guarded call per page."""
        client = await self._get_client()
        token: str | None = None
        while True:
            params = self._list_params(prefix, bucket, page_size, token)
            response = await self._arun(
                "list",
                _aguard(client.list_objects_v2),
                figures=Figures(key=prefix),
                **params,
            )
            items, token = self._page(response)
            for item in items:
                yield item
            if token is None:
                return

    # probe and figures
    async def _aprobe_once(self) -> None:
        # the client as built (no retries of the level's), a client passed in otherwise
        built = self._built_key
        client = await (self._get_client() if built is None else self._open(built))
        await client.head_bucket(Bucket=self.bucket)

    def _probe_once(self) -> None:
        raise NotImplementedError("AsyncS3Adapter has an async probe only: await adapter.aprobe()")

    def _pool_figures(self) -> dict[str, int]:
        clients = self._open_clients()
        figures = {"pool_size": int(clients[0].meta.config.max_pool_connections)}
        in_use = 0
        for client in clients:  # a call on another setting's client holds a connection too
            sessions = client._endpoint.http_session._sessions or {}
            for session in builtins.list(sessions.values()):
                connector = session.connector
                if connector is not None:
                    in_use += len(connector._acquired)
        figures["pool_in_use"] = in_use
        return figures
