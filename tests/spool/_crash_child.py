"""A drain that is SIGKILLed right after S3 accepted the N-th upload, before its local delete.

Usage: python _crash_child.py SPOOL_DIR ENDPOINT_URL BUCKET KILL_AFTER
Prints ``UPLOADED <key>`` for each verified upload, then dies by SIGKILL when
``KILL_AFTER`` removals have been reached (0: never; prints DONE at the end).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from brownout import BreakerConfig
from brownout.s3 import AsyncS3Adapter
from brownout.spool import Spool, SpoolEntry, SpoolUploader


async def main(directory: str, endpoint: str, bucket: str, kill_after: int) -> None:
    spool = Spool(directory)
    removed = 0
    real_remove = spool.remove

    def remove(entry: SpoolEntry) -> bool:
        nonlocal removed
        sys.stdout.write(f"UPLOADED {entry.key}\n")  # one write: lines never interleave
        sys.stdout.flush()
        removed += 1
        if kill_after and removed >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # S3 has it, the local copy is still there
        return real_remove(entry)

    spool.remove = remove  # type: ignore[method-assign]
    async with AsyncS3Adapter.create(
        bucket,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=BreakerConfig(consecutive_failures=3, open_for=0.5),
    ) as s3:
        # one upload at a time: the test counts exactly KILL_AFTER uploads per killed run
        # (with several in flight, others may reach S3, or print, before the kill lands)
        report = await SpoolUploader(spool, s3, concurrency=1).drain()
    print(f"REPORT {report.uploaded} {report.stopped}", flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
