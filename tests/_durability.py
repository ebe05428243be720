"""Helpers shared by the durability tests (outbox, spool, metrics of both).

A real full disk, two ways: a child interpreter under ``RLIMIT_FSIZE`` (``EFBIG``,
works anywhere, no privileges) is plain :func:`run_python` code; a tiny tmpfs
(``ENOSPC``) is mounted by :func:`in_a_tiny_tmpfs` in a user + mount namespace
(``unshare -rm``; skipped where the kernel or the container forbids it). A child
prints one JSON document on its last line: what it saw, for the test to check.

:class:`MemoryS3` stands in for an async S3 adapter in spool uploader tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest


def run_child(argv: list[str], *, timeout: float = 60, **kwargs: Any) -> dict[str, Any]:
    """Run ``argv``; it must succeed and print one JSON document on its last line."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_python(code: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run ``code`` (dedented) in a fresh interpreter with ``args``: see :func:`run_child`."""
    return run_child([sys.executable, "-c", textwrap.dedent(code), *args], timeout=timeout)


def in_a_tiny_tmpfs(code: str, size_kib: int, tmp_path: Path) -> dict[str, Any]:
    """Run ``code`` with a ``size_kib`` tmpfs at argv[1], in a user + mount namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed: no tmpfs without privileges")
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    probe = subprocess.run(
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mountpoint}"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.strip()}")
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return run_child(
        [
            unshare,
            "-rm",
            "sh",
            "-c",
            f'mount -t tmpfs -o size={size_kib}k tmpfs "$1" && exec "$2" "$3" "$1"',
            "sh",
            str(mountpoint),
            sys.executable,
            str(script),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


class MemoryS3:
    """An in-memory async S3 adapter stand-in: ``upload``, ``head`` and ``download``.

    ``fail``: raised by every upload while set; ``refuse``: keys whose upload raises
    ``PermissionError("AccessDenied")``; ``corrupt_on_upload``: store the data with its
    last byte changed (as a bad transfer would). ``objects`` holds (data, metadata).
    ``bucket`` is the default bucket (an S3 adapter's own), used when a call names none.
    """

    def __init__(self, bucket: str | None = None) -> None:
        self.bucket = bucket
        self.objects: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = {}
        self.fail: BaseException | None = None
        self.refuse: set[str] = set()
        self.uploads = 0
        self.corrupt_on_upload = False

    def bodies(self) -> dict[tuple[str, str], bytes]:
        """The stored bytes by (bucket, key)."""
        return {where: data for where, (data, _) in self.objects.items()}

    async def upload(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        bucket: str | None = None,
    ) -> str:
        if self.fail is not None:
            raise self.fail
        bucket = bucket or self.bucket
        assert bucket is not None
        if key in self.refuse:
            raise PermissionError("AccessDenied")  # an OSError: tests decide what it counts as
        self.uploads += 1
        stored = data[:-1] + b"?" if self.corrupt_on_upload else data
        self.objects[(bucket, key)] = (stored, dict(metadata or {}))
        return hashlib.md5(stored).hexdigest()

    async def head(self, key: str, *, bucket: str | None = None) -> Any:
        bucket = bucket or self.bucket
        assert bucket is not None
        data, meta = self.objects[(bucket, key)]
        return SimpleNamespace(size=len(data), metadata=meta, etag=hashlib.md5(data).hexdigest())

    async def download(self, key: str, *, bucket: str | None = None) -> bytes:
        bucket = bucket or self.bucket
        assert bucket is not None
        return self.objects[(bucket, key)][0]
