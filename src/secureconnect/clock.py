"""What time it is, for everything that stamps or expires: tokens, blocks, incidents, receipts.

Services take a :class:`Clock` (the system's by default) so that a test can move time forward
instead of sleeping through a token's lifetime or an incident's verification window.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock milliseconds: integers sort and compare the same on every backend."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to (tests, drills)."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.ms = SystemClock().now_ms() if start_ms is None else start_ms

    def now_ms(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


SYSTEM_CLOCK = SystemClock()
