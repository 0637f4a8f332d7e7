"""Opaque, prefixed ids that sort by creation time: ``job_`` and a ULID in lower case."""

from ulid import LaxMonotonicPolicy, ULIDGenerator

# Ids made in the same millisecond by this process count up, so they still sort in order.
_generator = ULIDGenerator(policy=LaxMonotonicPolicy())


def new_id(prefix: str) -> str:
    """A new id such as ``job_01jd...`` (26 characters after the prefix)."""
    return f"{prefix}_{str(_generator.generate()).lower()}"
