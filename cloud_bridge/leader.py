"""Leader election on a coordination.k8s.io Lease: one active bridge per broker.

Two bridges on one broker would both answer every device (a rolling update
of the Deployment does exactly that for a while), so only the holder of the
Lease connects to MQTT; standbys wait and take over when it stops renewing.

Expiry is judged by the local clock from when *we* last saw the record
change (as client-go does), never by comparing another host's renewTime
with ours, so clock skew between replicas cannot hand the lease to two.
``LeaseObserver`` is that rule without I/O; ``LeaderElection`` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("cloud_bridge.leader")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    holder: str
    duration: float
    renew_time: str
    transitions: int


class LeaseObserver:
    """Decides, from observed records and local times, whether we may take the lease."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self._seen: LeaseRecord | None = None
        self._seen_at = 0.0

    def observe(self, record: LeaseRecord | None, now: float) -> None:
        if record != self._seen:
            self._seen = record
            self._seen_at = now

    def may_acquire(self, now: float) -> bool:
        """Free, ours, released (empty holder) or unchanged for longer than its duration."""
        record = self._seen
        if record is None or not record.holder or record.holder == self.identity:
            return True
        return now - self._seen_at > record.duration

    def held_by_us(self) -> bool:
        return self._seen is not None and self._seen.holder == self.identity


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    """``await acquire()`` blocks until we lead; ``lost`` is set if we stop leading."""

    def __init__(
        self,
        api_client: Any,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: float = 15.0,
        renew_seconds: float = 5.0,
        retry_seconds: float = 2.0,
    ) -> None:
        from kubernetes import client

        self._coord: Any = client.CoordinationV1Api(api_client)
        self._errors = client.exceptions.ApiException
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self.lost = asyncio.Event()
        self._observer = LeaseObserver(identity)
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        waiting_logged = False
        while not await asyncio.to_thread(self._try_acquire_or_renew):
            if not waiting_logged:
                log.info("waiting for lease %s/%s (another bridge leads)", self.namespace, self.name)
                waiting_logged = True
            await asyncio.sleep(self.retry_seconds)
        log.info("leading as %s (lease %s/%s)", self.identity, self.namespace, self.name)
        self._renewer = asyncio.create_task(self._renew_loop(), name="bridge-leader-renew")

    async def release(self) -> None:
        """Stop renewing and hand the lease back so a standby takes over at once."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(BaseException):
                await self._renewer
            self._renewer = None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._release)

    async def _renew_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                ok = await asyncio.to_thread(self._try_acquire_or_renew)
            except Exception as exc:  # apiserver unreachable: keep trying until the lease would expire
                log.warning("lease renewal failed: %s", exc)
                ok = None
            if ok:
                last_ok = loop.time()
            elif ok is False or loop.time() - last_ok > self.lease_seconds - self.renew_seconds:
                log.error("lost the lease %s/%s", self.namespace, self.name)
                self.lost.set()
                return

    # ------------------------------------------------------------------ blocking calls

    def _record(self, lease: Any) -> LeaseRecord:
        spec = lease.spec
        renew = spec.renew_time.isoformat() if spec.renew_time else ""
        return LeaseRecord(
            spec.holder_identity or "", float(spec.lease_duration_seconds or 0), renew, spec.lease_transitions or 0
        )

    def _body(self, transitions: int, acquire_time: str | None, version: str | None) -> dict[str, Any]:
        now = _micro_now()
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version:
            meta["resourceVersion"] = version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_seconds),
                "acquireTime": acquire_time or now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    def _try_acquire_or_renew(self) -> bool:
        now = time.monotonic()
        try:
            lease = self._coord.read_namespaced_lease(self.name, self.namespace)
        except self._errors as exc:
            if exc.status != 404:
                raise
            try:
                self._coord.create_namespaced_lease(self.namespace, self._body(0, None, None))
            except self._errors as create_exc:
                if create_exc.status == 409:
                    return False  # someone else created it first
                raise
            self._observer.observe(None, now)
            return True
        record = self._record(lease)
        self._observer.observe(record, now)
        if not self._observer.may_acquire(now):
            return False
        ours = record.holder == self.identity
        acquire_time = lease.spec.acquire_time.isoformat() if ours and lease.spec.acquire_time else None
        transitions = record.transitions if ours else record.transitions + 1
        body = self._body(transitions, acquire_time, lease.metadata.resource_version)
        try:
            self._coord.replace_namespaced_lease(self.name, self.namespace, body)
        except self._errors as exc:
            if exc.status == 409:
                return False  # raced with another candidate; it won this round
            raise
        return True

    def _release(self) -> None:
        lease = self._coord.read_namespaced_lease(self.name, self.namespace)
        if (lease.spec.holder_identity or "") != self.identity:
            return
        lease.spec.holder_identity = ""
        lease.spec.lease_duration_seconds = 1
        self._coord.replace_namespaced_lease(self.name, self.namespace, lease)
