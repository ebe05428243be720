"""Which of a client library's errors count against its dependency: an :class:`ErrorTable`.

An error either means "the dependency is failing" (it counts against the
breaker: an outage) or "the caller made a mistake" (it passes through and
counts as nothing). An adapter declares the difference once, as an ordered
table of rules, each with a one-line reason (shown in ``docs/adapters.md``).

Stdlib only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from brownout._config import BreakerConfig

__all__ = ["ErrorRule", "ErrorTable", "Matcher"]

Matcher = type[BaseException] | Callable[[BaseException], bool]


class ErrorRule(NamedTuple):
    """One row of an adapter's error classification."""

    match: Matcher
    counts: bool  # True: the dependency is failing; False: the caller's mistake
    kind: str  # short, low-cardinality label: "connection", "timeout", "throttled", ...
    why: str  # one line, shown in docs/adapters.md


class ErrorTable:
    """An ordered classification of a client library's errors; the first matching rule wins.

    Errors no rule matches count as failures with kind ``other`` (an unknown
    error from a dependency is more likely its fault than the caller's).

    >>> table = ErrorTable(
    ...     ErrorRule(ConnectionError, True, "connection", "the server is unreachable"),
    ...     ErrorRule(KeyError, False, "caller", "a missing key is an answer, not an outage"),
    ... )
    >>> table.counts(ConnectionRefusedError()), table.is_caller_error(KeyError("k"))
    (True, True)
    """

    def __init__(self, *rules: ErrorRule, default_kind: str = "other") -> None:
        for rule in rules:
            is_type = isinstance(rule.match, type) and issubclass(rule.match, BaseException)
            if not is_type and not callable(rule.match):
                raise TypeError(f"ErrorRule.match must be an exception type or predicate: {rule}")
        self.rules: tuple[ErrorRule, ...] = rules
        self._default = ErrorRule(Exception, True, default_kind, "not classified: assumed failing")

    def classify(self, exc: BaseException) -> ErrorRule:
        for rule in self.rules:
            match = rule.match
            if isinstance(match, type):
                if isinstance(exc, match):
                    return rule
            elif match(exc):
                return rule
        return self._default

    def counts(self, exc: BaseException) -> bool:
        """Predicate for ``BreakerConfig(record=...)``."""
        return self.classify(exc).counts

    def is_caller_error(self, exc: BaseException) -> bool:
        """Predicate for ``BreakerConfig(ignore=...)``."""
        return not self.classify(exc).counts

    def breaker_config(self, base: BreakerConfig) -> BreakerConfig:
        """``base`` with ``record``/``ignore`` taken from this table."""
        return base.replace(record=(self.counts,), ignore=(self.is_caller_error,))

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(error, counts/does not count, kind, why) for documentation."""
        out = []
        for rule in self.rules:
            name = rule.match.__name__ if isinstance(rule.match, type) else rule.match.__doc__
            out.append(
                (str(name), "counts" if rule.counts else "does not count", rule.kind, rule.why)
            )
        return out
