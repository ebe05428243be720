"""An in-process S3 (moto's server) on a free port that can be stopped, started and paused.

Built like ``moto.server.ThreadedMotoServer`` (same app and request handler) but it also
closes its listening socket and drops open keep-alive connections on ``stop()``, so the
endpoint really becomes unreachable, and it can ``pause()`` (requests hang until
``resume()``). Moto's data lives in this process, so it survives ``stop()``/``start()``.
"""

from __future__ import annotations

import importlib
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from brownout.testing.servers._process import (
    LOOPBACK,
    Connections,
    free_port,
    port_open,
    serve_in_thread,
    stop_serving,
    track,
    untrack,
    wait_until,
)

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def s3_unavailable() -> str | None:
    """Why :class:`S3Server` cannot run here (moto or boto3 missing), or None."""
    for module, pip_name in (
        ("moto.moto_server.werkzeug_app", "moto[server,s3]"),
        ("boto3", "boto3"),
    ):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"python package {pip_name!r} is not installed ({exc})"
    return None


class S3Server:
    """Moto's S3 on ``endpoint_url`` (path-style addressing, region ``us-east-1``)."""

    def __init__(self, *, host: str = LOOPBACK, port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.region = REGION
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._connections = Connections()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._closed = False
        track(self)

    # addresses and clients
    @property
    def endpoint_url(self) -> str:
        return self.endpoint_url_for()

    @property
    def url(self) -> str:
        return self.endpoint_url

    def endpoint_url_for(self, *, host: str | None = None, port: int | None = None) -> str:
        """The endpoint, optionally through another address (a proxy)."""
        return f"http://{host or self.host}:{port or self.port}"

    def client_kwargs(self, *, port: int | None = None) -> dict[str, Any]:
        """Keyword arguments for ``boto3.client("s3", ...)`` / aiobotocore ``create_client``
        (add ``config=Config(s3={"addressing_style": "path"})``, or use :meth:`client`)."""
        return {
            "endpoint_url": self.endpoint_url_for(port=port),
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }

    def client(self, *, port: int | None = None, **config: Any) -> Any:
        """A boto3 S3 client with path-style addressing; ``config`` goes to botocore Config."""
        boto3 = importlib.import_module("boto3")
        botocore_config = importlib.import_module("botocore.config")
        settings: dict[str, Any] = {"s3": {"addressing_style": "path"}, **config}
        return boto3.client(
            "s3", config=botocore_config.Config(**settings), **self.client_kwargs(port=port)
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:20]}"
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name

    # lifecycle
    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def paused(self) -> bool:
        return not self._unpaused.is_set()

    def _app(self) -> Callable[..., Iterable[bytes]]:
        moto_app = importlib.import_module("moto.moto_server.werkzeug_app")
        app: Callable[..., Iterable[bytes]] = moto_app.DomainDispatcherApplication(
            moto_app.create_backend_app
        )
        unpaused = self._unpaused

        def gated(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            unpaused.wait()
            return app(environ, start_response)

        return gated

    def _handler(self) -> type[Any]:
        moto_app = importlib.import_module("moto.moto_server.werkzeug_app")
        # older moto has no request handler of its own
        serving = importlib.import_module("werkzeug.serving")
        base: type[Any] = getattr(moto_app, "MotoRequestHandler", serving.WSGIRequestHandler)
        owner = self

        class Handler(base):  # type: ignore[misc]
            def setup(self) -> None:
                super().setup()
                owner._connections.add(self.connection)

            def finish(self) -> None:
                owner._connections.discard(self.connection)
                super().finish()

            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

            def log(self, *args: Any, **kwargs: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        """Listen (again) on the same port; moto's data is kept."""
        if self._closed:
            raise RuntimeError("the S3 server is closed")
        if self._server is not None:
            return
        serving = importlib.import_module("werkzeug.serving")
        server = serving.make_server(
            self.host, self.port, self._app(), threaded=True, request_handler=self._handler()
        )
        setattr(server, "daemon_threads", True)  # noqa: B010 - not in werkzeug's types
        self._server = server
        self._thread = serve_in_thread(server, f"moto-s3-{self.port}")
        wait_until(lambda: port_open(self.host, self.port), timeout=15, what="moto S3")

    def stop(self) -> None:
        """Stop listening and drop every open connection: the endpoint is unreachable."""
        self.resume()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            stop_serving(server, thread, self._connections)

    kill = stop

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """New requests hang (connections are still accepted) until :meth:`resume`."""
        self._unpaused.clear()

    def resume(self) -> None:
        self._unpaused.set()

    def ensure_running(self) -> None:
        if self._closed:
            return
        self.resume()
        self.start()

    def close(self) -> None:
        if self._closed:
            return
        self.stop()
        self._closed = True
        untrack(self)

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<S3Server {self.endpoint_url} {state}>"
