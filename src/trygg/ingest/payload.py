"""A payload too large to pass on whole: its head, with the whole one's size and SHA-256.

The MQTT receiver process (trygg.ingest.receiver) forwards a message above the
decoder's payload limit to the runner as a ``PayloadHead``: the first 64 KiB,
which is all a dead letter keeps (``DEAD_LETTER_PAYLOAD_BYTES``), and the size
and hash of the whole. So a burst of 5 MB messages never reaches the runner's
memory, and the decoder still refuses each as too large by its real size.
"""

from __future__ import annotations

import hashlib

from trygg.model import DEAD_LETTER_PAYLOAD_BYTES

# The decoder's payload limit unless set (DecodeLimits, TRYGG_MAX_PAYLOAD_BYTES).
MAX_PAYLOAD_BYTES = 256 * 1024


class PayloadHead(bytes):
    """The first bytes of a payload; ``size`` and ``sha256`` are of the whole payload."""

    size: int
    sha256: bytes

    def __new__(cls, head: bytes, size: int, sha256: bytes) -> PayloadHead:
        self = super().__new__(cls, head)
        self.size, self.sha256 = size, sha256
        return self

    def __repr__(self) -> str:
        return f"PayloadHead({len(self)} of {self.size} bytes)"


def head_of(payload: bytes) -> tuple[bytes, int, bytes]:
    """(the first 64 KiB, the size, the SHA-256) of ``payload``: a ``PayloadHead``'s parts."""
    return (
        payload[:DEAD_LETTER_PAYLOAD_BYTES],
        len(payload),
        hashlib.sha256(payload).digest(),
    )


def size_of(payload: bytes) -> int:
    """The size of the payload ``payload`` is, or is the head of."""
    return payload.size if isinstance(payload, PayloadHead) else len(payload)
