"""Submits from 8 threads until killed; prints ``ACK <key>`` once each submit returned.

Run by tests/outbox/test_group_commit.py, which SIGKILLs it at random moments.
"""

from __future__ import annotations

import sys
import threading

from brownout.outbox import Outbox


def main() -> None:
    box = Outbox(sys.argv[1], max_pending=1_000_000)
    tag = sys.argv[2]
    out = threading.Lock()

    def work(t: int) -> None:
        j = 0
        while True:
            key = f"{tag}-{t}-{j}"
            box.submit("move", {"t": t, "j": j}, stream=f"s{t}", idempotency_key=key)
            with out:  # one write per line: a kill cannot interleave two keys
                sys.stdout.write(f"ACK {key}\n")
                sys.stdout.flush()
            j += 1

    for t in range(8):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
