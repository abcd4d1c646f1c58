"""Restart timing for crashed instances: exponential backoff so a crash loop cannot spin the machine."""

from __future__ import annotations

from dataclasses import dataclass

MAX_DELAY_S = 300.0
STABLE_AFTER_S = 60.0


@dataclass(frozen=True)
class Backoff:
    """``min(base * 2**n, cap)`` seconds before the (n+1)-th consecutive restart."""

    base_s: float = 1.0
    cap_s: float = MAX_DELAY_S
    stable_after_s: float = STABLE_AFTER_S  # up this long = the crash streak is over

    def delay(self, consecutive_failures: int) -> float:
        """Seconds to wait after ``consecutive_failures`` failures in a row (the first is 1)."""
        exponent = max(0, consecutive_failures - 1)
        if exponent > 30:
            return self.cap_s
        return min(self.base_s * (2**exponent), self.cap_s)

    def streak_after_exit(self, streak: int, uptime_s: float | None) -> int:
        """The new consecutive-failure count after a crash that followed ``uptime_s`` of running."""
        if uptime_s is not None and uptime_s >= self.stable_after_s:
            return 1
        return streak + 1
