"""Opaque, prefixed ids that sort by creation time.

The layout is ULID's: a 48-bit millisecond clock, then 80 random bits, in Crockford base32.
"""

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_lock = threading.Lock()
_last_ms = 0
_last_random = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new id such as ``job_01jd...``; ids made later in this process sort after earlier ones."""
    global _last_ms, _last_random
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            now_ms = _last_ms
            _last_random += 1
        else:
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1  # room to increment
        _last_ms = now_ms
        body = _encode(now_ms, 10) + _encode(_last_random, 16)
    return f"{prefix}_{body}"
