"""The session epoch, persisted so it grows across restarts even without a real-time clock.

seqstream tells incarnations apart by epoch (seqstream PROTOCOL.md "Session
handshake and epochs"): a peer drops packets from an epoch lower than the one
it knows. The reference adapter uses microseconds since 1970, which breaks on
a device that boots with its clock at 1970 (no RTC, no NTP yet): its new
epoch would be lower than the last one and the cloud would ignore it.

So the agent keeps the last epoch in ``<data_dir>/epoch`` and uses
``max(last + 1, now_us)``: the clock when it is right, a counter when not.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ._fsutil import atomic_write

log = logging.getLogger("edge_agent.epoch")

EPOCH_FILE = "epoch"
MAX_EPOCH = 2**64 - 1


def read_epoch(data_dir: Path) -> int:
    """The last persisted epoch; 0 if none (or unreadable, which is logged)."""
    path = Path(data_dir) / EPOCH_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    try:
        value = int(text)
    except ValueError:
        log.warning("%s holds %r, not an epoch; starting from the clock", path, text[:40])
        return 0
    return value if 0 <= value <= MAX_EPOCH else 0


def next_epoch(data_dir: Path, *, now_us: int | None = None) -> int:
    """A new epoch greater than every earlier one from this data dir; persisted before it is used."""
    clock = time.time_ns() // 1000 if now_us is None else now_us
    epoch = max(read_epoch(data_dir) + 1, clock, 1)
    if epoch > MAX_EPOCH:
        raise OverflowError("session epoch exhausted")
    atomic_write(Path(data_dir) / EPOCH_FILE, f"{epoch}\n".encode(), mode=0o644)
    return epoch
