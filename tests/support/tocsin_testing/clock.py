"""A clock the test moves by hand (the pipeline takes ``now`` as a callable)."""

from __future__ import annotations

from datetime import datetime, timedelta


class Clock:
    """Callable like ``datetime.now(UTC)``; ``advance`` moves it, ``sleep`` too (for drain)."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        """Move the clock forward by ``timedelta(**delta)``."""
        self.at += timedelta(**delta)

    def sleep(self, seconds: float) -> None:
        """What ``time.sleep`` would be on this clock."""
        self.advance(seconds=seconds)
