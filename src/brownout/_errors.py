"""brownout's exceptions.

    BrownoutError                 base of everything brownout raises itself
     └── BreakerOpen              a call was rejected: the breaker is open (or forced open)

Configuration mistakes raise the built-in ``ValueError`` / ``TypeError``
naming the field and the allowed range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brownout._state import State

__all__ = ["BreakerOpen", "BrownoutError"]


class BrownoutError(Exception):
    """Base class of the errors brownout raises itself."""


class BreakerOpen(BrownoutError):
    """A call was rejected without being attempted because its breaker is open.

    ``name`` is the breaker's (the dependency's) name, ``state`` its state and
    ``retry_after`` the seconds until a probe will be let through (``None``
    when that is not known: forced open, or half-open with every probe slot
    taken).

    >>> e = BreakerOpen("redis", State.OPEN, 12.5)
    >>> e.name, e.state, e.retry_after
    ('redis', <State.OPEN: 'open'>, 12.5)
    >>> str(e)
    "circuit breaker 'redis' is open; retry after 12.5 s"
    """

    # Rejections are the hot path of an open breaker: the arguments are kept in
    # ``args`` by the C-level constructor and the message is formatted lazily.
    args: tuple[str, State, float | None]

    if TYPE_CHECKING:  # BaseException's C __init__ is used at run time

        def __init__(self, name: str, state: State, retry_after: float | None) -> None: ...

    @property
    def name(self) -> str:
        return self.args[0]

    @property
    def state(self) -> State:
        return self.args[1]

    @property
    def retry_after(self) -> float | None:
        return self.args[2]

    def __str__(self) -> str:
        name, state, retry_after = self.args
        detail = "" if retry_after is None else f"; retry after {retry_after:.3g} s"
        return f"circuit breaker {name!r} is {state.value}{detail}"
