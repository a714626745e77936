"""RFC 3339 timestamps with nanoseconds, the form Docker, CRI logs and the kubelet use.

Kept in integer nanoseconds since the epoch: ``datetime`` stops at
microseconds, and log ``since`` filters compare at full precision.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_NS = 1_000_000_000
_RFC3339 = re.compile(rb"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")
ZERO_DOCKER_TIME = "0001-01-01T00:00:00Z"


def now_ns() -> int:
    return time.time_ns()


def format_ns(ns: int) -> str:
    """``2024-05-01T10:00:00.000000123Z``: fixed nine digits, so text order is time order."""
    seconds, frac = divmod(ns, _NS)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


def parse_ns(text: str | bytes) -> int:
    """Parse an RFC 3339 timestamp with up to nine fraction digits; ValueError if malformed."""
    raw = text.encode() if isinstance(text, str) else text
    match = _RFC3339.match(raw)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    date, clock, frac, zone = (g.decode() if g else "" for g in match.groups())
    base = datetime.fromisoformat(f"{date}T{clock}{'+00:00' if zone in ('Z', 'z') else zone}")
    return int(base.timestamp()) * _NS + int((frac or "0").ljust(9, "0"))


def datetime_to_ns(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("naive datetime: give a timezone (UTC)")
    whole = int(value.replace(microsecond=0).timestamp())
    return whole * _NS + value.microsecond * 1000


def ns_to_datetime(ns: int) -> datetime:
    seconds, frac = divmod(ns, _NS)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=frac // 1000)


def parse_docker_time(text: str | None) -> datetime | None:
    """Docker's zero time (``0001-01-01T00:00:00Z``) and empty strings mean 'never'."""
    if not text or text.startswith("0001-01-01"):
        return None
    return ns_to_datetime(parse_ns(text))
