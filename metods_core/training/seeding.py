"""Counter-based seeds: every random stream is a pure function of (seed, rank, step).

Deriving each outer step's generators from its step number, instead of carrying generator
state along, makes a resumed run draw exactly what an uninterrupted one would have drawn.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: int | str) -> int:
    """Return a 63-bit seed that depends on every part (a stable hash, not Python's ``hash``)."""
    text = "/".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1
