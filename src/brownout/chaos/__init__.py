"""Fault injection for tests and demos.

* :class:`FaultProxy` / :class:`ThreadedFaultProxy`: a TCP proxy between a client and a
  real server whose :class:`Mode` (pass, latency, blackhole, reset, refuse) can be switched
  at run time.
* :class:`FaultInjector`: makes any sync or async callable slow and/or failing with a given
  probability.

Example::

    from brownout.chaos import FaultInjector, Mode, ThreadedFaultProxy

    with ThreadedFaultProxy("127.0.0.1", 6379) as proxy:
        client = redis.Redis(host=proxy.host, port=proxy.port)
        proxy.set_mode(Mode.BLACKHOLE)   # the server stops answering
        ...

    flaky = FaultInjector(TimeoutError("slow backend"), rate=0.2, seed=1).wrap(fetch)

Standard library only.
"""

from brownout.chaos._inject import ErrorSpec, FaultInjector
from brownout.chaos._proxy import FaultProxy, Mode, ProxyStats, ThreadedFaultProxy

__all__ = [
    "ErrorSpec",
    "FaultInjector",
    "FaultProxy",
    "Mode",
    "ProxyStats",
    "ThreadedFaultProxy",
]
