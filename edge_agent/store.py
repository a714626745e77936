"""The desired pods, persisted in the data dir so the device keeps working alone.

While the cloud is away (no broker, bridge down) and across agent restarts,
the agent must keep running - and restarting - the pods it was last told to
run. Every change is written atomically (``_fsutil.atomic_write``) before it
is acted on, and loaded at start.

A corrupt file (a bug, a bad disk) is moved aside, not deleted, and the state
it yields is marked *not authoritative*: the agent then adopts nothing and
garbage-collects nothing until the cloud sends a full ``Sync``, rather than
killing every container it can no longer account for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fleetproto as fp
from fleetproto.framing import pack, unpack

from ._fsutil import atomic_write

log = logging.getLogger("edge_agent.store")

STORE_FILE = "desired-pods.msgpack"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class DesiredState:
    generation: int = 0
    pods: Mapping[str, fp.DesiredPod] = field(default_factory=dict)
    """By uid."""
    authoritative: bool = True
    """False after a corrupt store: do not delete containers of pods we do not know."""


class PodStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / STORE_FILE

    def load(self) -> DesiredState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return DesiredState()
        try:
            return self._decode(raw)
        except (fp.MessageError, ValueError, TypeError, KeyError, AttributeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            self.path.rename(aside)
            log.error("desired pods in %s are unreadable (%s); moved to %s, waiting for a Sync", self.path, exc, aside)
            return DesiredState(authoritative=False)

    @staticmethod
    def _decode(raw: bytes) -> DesiredState:
        data = unpack(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unknown store format {data.get('format') if isinstance(data, dict) else data!r}")
        generation = data.get("generation")
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ValueError(f"bad generation {generation!r}")
        pods: dict[str, fp.DesiredPod] = {}
        for entry in data.get("pods") or []:
            pod = fp.DesiredPod.from_dict(entry["pod"]).with_unknown(tuple(entry.get("unknown_fields") or ()))
            pods[pod.uid] = pod
        return DesiredState(generation=generation, pods=pods)

    @staticmethod
    def encode(state: DesiredState) -> bytes:
        entries: list[dict[str, Any]] = [
            {"pod": pod.to_dict(), "unknown_fields": list(pod.unknown_fields)} for pod in state.pods.values()
        ]
        return pack({"format": FORMAT_VERSION, "generation": state.generation, "pods": entries})

    def save(self, state: DesiredState) -> None:
        atomic_write(self.path, self.encode(state))
