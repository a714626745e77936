"""What the device has to tell the cloud, kept while the control stream is down.

Latest wins: a pod's status is one slot, overwritten by each newer report,
so an outage of an hour costs one report per pod, not one per change. The
node status is one slot too. Only ``Error`` and ``PodDeleted`` messages queue
(bounded). After every (re)opened control stream the agent calls ``resync``
with every current pod status, so the cloud can rebuild its view from
scratch whatever was lost with the old stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

import fleetproto as fp

MAX_QUEUED = 256


class Outbox:
    def __init__(self) -> None:
        self._statuses: dict[str, fp.PodStatusReport] = {}
        self._node: fp.NodeStatus | None = None
        self._queue: deque[fp.Error | fp.PodDeleted] = deque(maxlen=MAX_QUEUED)
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._statuses) + len(self._queue) + (self._node is not None)

    def put_status(self, report: fp.PodStatusReport) -> None:
        self._statuses[report.uid] = report
        self._ready.set()

    def put_deleted(self, deleted: fp.PodDeleted) -> None:
        self._statuses.pop(deleted.uid, None)
        self._queue.append(deleted)
        self._ready.set()

    def put_error(self, error: fp.Error) -> None:
        self._queue.append(error)
        self._ready.set()

    def put_node_status(self, status: fp.NodeStatus) -> None:
        self._node = status
        self._ready.set()

    def resync(self, statuses: Iterable[fp.PodStatusReport]) -> None:
        """A new control stream: every pod's current status goes out again."""
        for report in statuses:
            self._statuses[report.uid] = report
        self._ready.set()

    async def wait(self) -> None:
        await self._ready.wait()

    def take(self) -> list[fp.NodeStatus | fp.PodStatusReport | fp.PodDeleted | fp.Error]:
        """Everything pending, node status first, in an order the cloud can apply as it comes."""
        out: list[fp.NodeStatus | fp.PodStatusReport | fp.PodDeleted | fp.Error] = []
        if self._node is not None:
            out.append(self._node)
            self._node = None
        out.extend(self._queue)
        self._queue.clear()
        out.extend(self._statuses.values())
        self._statuses.clear()
        self._ready.clear()
        return out
