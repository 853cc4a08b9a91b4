"""Random identifiers for decisions, events, guests and import jobs."""

from __future__ import annotations

import os


def new_id() -> str:
    """128 random bits as 32 hex characters: what ``uuid.uuid4().hex`` gives, less the six fixed version bits,
    without building a UUID object (3.3 → 0.5 µs; a decision makes one on the request path)."""
    return os.urandom(16).hex()
