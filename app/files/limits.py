"""How much work checking one upload may take: one budget for the whole upload, not per member,
so a small archive of many members cannot multiply it."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Limits:
    """The bounds of one upload's check; the API fills them from its settings."""

    pickle_opcodes: int = 2_000_000
    seconds: float = 60.0
    expansion_ratio: float = 100.0
    unpacked_bytes: int = 4 * 1024**3
    safetensors_header_bytes: int = 100 * 1024**2
    safetensors_tensors: int = 100_000

    def as_dict(self) -> dict:
        return asdict(self)


class OverBudget(Exception):
    """Checking the upload took more opcodes or time than its budget."""


class Budget:
    """What one upload's check has spent so far."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.opcodes = 0
        self.deadline = time.monotonic() + limits.seconds

    def spend_opcodes(self, n: int) -> None:
        self.opcodes += n
        if self.opcodes > self.limits.pickle_opcodes:
            raise OverBudget(
                f"This file's pickles hold more than {self.limits.pickle_opcodes} opcodes in all "
                "(DISTILL_UPLOAD_MAX_PICKLE_OPCODES)."
            )

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise OverBudget(
                f"Checking this file took more than {self.limits.seconds:g} seconds "
                "(DISTILL_UPLOAD_CHECK_SECONDS)."
            )


_current: ContextVar[Budget | None] = ContextVar("upload_budget", default=None)


def current() -> Budget:
    """The budget of the check under way; outside one, a fresh default budget."""
    return _current.get() or Budget(Limits())


@contextmanager
def checking(limits: Limits) -> Iterator[Budget]:
    budget = Budget(limits)
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)
