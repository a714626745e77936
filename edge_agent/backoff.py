"""Restart back-off, as the kubelet does it: 10 s, doubling per failure, capped at 5 min.

A container that ran for ``reset_after`` before it failed starts again from
the initial delay, so a service that crashes once a day is not punished for
last week's crash loop. Tests use short delays.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 10.0
    maximum: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("need 0 < initial <= maximum")

    @property
    def reset_after(self) -> float:
        """Run time after which the failure count starts over (kubelet: twice the cap)."""
        return 2 * self.maximum

    def delay(self, failures: int) -> float:
        """Wait before the next attempt after ``failures`` consecutive failures."""
        if failures <= 0:
            return 0.0
        return min(self.initial * 2 ** min(failures - 1, 62), self.maximum)
