"""Instruction counts of a bulkhead acquire/release pair, for ``valgrind --tool=callgrind``.

Wall-clock figures on a shared machine are noise; instruction counts are not. Run
each variant at two loop lengths and divide the difference by the difference in
calls, which cancels the interpreter's start-up and imports::

    for v in bare bulkhead breaker lock; do for n in 20000 60000; do
      valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/overload_callgrind.py $v $n 2>&1 | grep refs
    done; done

``bare``: ``f(i)``; ``bulkhead``: ``with bulkhead.acquire(): f(i)`` (fixed limit);
``breaker``: ``breaker.call(f, i)``; ``lock``: ``with threading.Lock(): f(i)``.
"""

from __future__ import annotations

import sys
import threading

from brownout import CircuitBreaker
from brownout.overload import Bulkhead


def f(x: int) -> int:
    return x


def main() -> int:
    variant, n = sys.argv[1], int(sys.argv[2])
    bulkhead = Bulkhead("bulkhead")
    breaker = CircuitBreaker("breaker")
    lock = threading.Lock()
    if variant == "bare":
        for i in range(n):
            f(i)
    elif variant == "bulkhead":
        for i in range(n):
            with bulkhead.acquire():
                f(i)
    elif variant == "breaker":
        for i in range(n):
            breaker.call(f, i)
    elif variant == "lock":
        for i in range(n):
            with lock:
                f(i)
    else:
        print(f"unknown variant {variant!r}: bare, bulkhead, breaker or lock", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
