"""A durable spool for S3 uploads: what cannot be uploaded now is kept on disk and uploaded later.

>>> from brownout.spool import Spool                 # stdlib only
>>> from brownout.spool import SpoolUploader         # drives an S3 adapter you pass in

See ``docs/durability.md`` for the guarantees.
"""

from brownout._journal_base import JournalEvent
from brownout.spool._store import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    SHA256_METADATA,
    Spool,
    SpoolCorrupted,
    SpoolEntry,
    SpoolError,
    SpoolFull,
)
from brownout.spool._upload import DrainReport, SpoolUploader, VerificationFailed

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "SHA256_METADATA",
    "DrainReport",
    "JournalEvent",
    "Spool",
    "SpoolCorrupted",
    "SpoolEntry",
    "SpoolError",
    "SpoolFull",
    "SpoolUploader",
    "VerificationFailed",
]
