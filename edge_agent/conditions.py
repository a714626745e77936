"""Condition bookkeeping: ``last_transition`` changes only when a condition's status does.

Kubernetes conditions carry the time of the last *change*; reporting "now"
on every heartbeat would turn each one into a fake transition.
"""

from __future__ import annotations

import dataclasses
import time

import fleetproto as fp


class Transitions:
    def __init__(self) -> None:
        self._since: dict[str, tuple[fp.ConditionStatus, float]] = {}

    def apply(self, conditions: list[fp.Condition], now: float | None = None) -> tuple[fp.Condition, ...]:
        now = time.time() if now is None else now
        out = []
        for condition in conditions:
            previous = self._since.get(condition.type)
            if previous is None or previous[0] != condition.status:
                previous = (condition.status, now)
                self._since[condition.type] = previous
            out.append(dataclasses.replace(condition, last_transition=previous[1]))
        return tuple(out)
