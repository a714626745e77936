"""Desired pods -> runtime containers, and their status back.

Invariants:

* The desired set is persisted (``store``) *before* it is acted on, so an
  agent that dies mid-change resumes the same work after a restart.
* Runtime labels (``podspec``) are the truth about containers: every pass
  lists the pod's containers from the runtime and decides from what it sees,
  so adopted containers (agent restart) and containers killed behind our
  back are handled by the same code as everything else.
* One worker task per pod (``podworker``), processing its pod in order (kopf-style): a slow
  image pull or a 30 s stop grace in one pod never delays another. Workers
  are woken by a change of the desired pod, by their own back-off timer, or by
  the poller that lists the node's containers every ``poll_seconds`` and wakes
  the pods whose containers changed.
* Containers of pods that are not desired are stopped and removed - only
  when the desired set is authoritative (see ``store``).
* Status callbacks never block: the agent queues the latest report per pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import fleetproto as fp
from edge_agent.runtime import (
    ContainerState,
    ContainerStatus,
    Runtime,
    RuntimeErrorBase,
    RuntimeUnavailable,
)

from .backoff import Backoff
from .podhosts import PodHostsFiles
from .podspec import LABEL_CONTAINER, LABEL_NODE, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, attempt_of
from .podworker import PodWorker
from .store import DesiredState, PodStore

log = logging.getLogger("edge_agent.reconciler")


class PodNotFound(LookupError):
    """No such pod or container on this device (RESET 0x404 on a stream)."""


@dataclass(frozen=True, kw_only=True)
class ReconcilerConfig:
    node: str
    backoff: Backoff = field(default_factory=Backoff)
    poll_seconds: float = 2.0
    default_grace_seconds: float = 30.0
    host_ip: str = ""
    shared_network: bool = True
    """Containers of a pod join the first one's network namespace (not for the process runtime)."""
    seccomp_default: bool = False
    """Pods that name no seccomp profile get the runtime's default (else unconfined, as the kubelet)."""


def _container_name(pod: fp.DesiredPod, container: str) -> str:
    """The container a stream names; none named means the pod's first, as kubectl's default."""
    return container or pod.containers[0].name


def _fingerprint(statuses: list[ContainerStatus]) -> frozenset[tuple[object, ...]]:
    return frozenset((s.id, s.state, s.exit_code, s.started_at, s.reason) for s in statuses)


class Reconciler:
    def __init__(
        self,
        runtime: Runtime,
        store: PodStore,
        config: ReconcilerConfig,
        *,
        on_status: Callable[[fp.PodStatusReport], None] = lambda report: None,
        on_deleted: Callable[[fp.PodDeleted], None] = lambda deleted: None,
        hosts: PodHostsFiles | None = None,
    ) -> None:
        """``hosts``: give each pod its own hosts file at ``/etc/hosts`` (engines; not the process runtime)."""
        self.runtime = runtime
        self.store = store
        self.config = config
        self.on_status = on_status
        self.on_deleted = on_deleted
        state = store.load()
        self.generation = state.generation
        self.desired: dict[str, fp.DesiredPod] = dict(state.pods)
        self.authoritative = state.authoritative
        self.statuses: dict[str, fp.PodStatusReport] = {}
        self.counters: Counter[str] = Counter()
        self.runtime_error: str = ""
        self._workers: dict[str, PodWorker] = {}
        self._delete_grace: dict[str, float] = {}
        self._fingerprints: dict[str, frozenset[tuple[object, ...]]] = {}
        self._observed: dict[str, list[ContainerStatus]] = {}
        """The last poll's containers by pod UID (for ``running_hint``)."""
        self.hosts = hosts
        self._hosts_pruned = False
        self._poke = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def runtime_ok(self) -> bool:
        return not self.runtime_error

    def runtime_failed(self, exc: BaseException) -> None:
        if not self.runtime_error:
            log.error("container runtime unavailable: %s", exc)
        self.runtime_error = str(exc) or type(exc).__name__

    def runtime_answered(self) -> None:
        if self.runtime_error:
            log.info("container runtime is back")
        self.runtime_error = ""

    # ------------------------------------------------------------------ desired state

    async def _persist(self) -> None:
        state = DesiredState(generation=self.generation, pods=dict(self.desired), authoritative=self.authoritative)
        await asyncio.to_thread(self.store.save, state)

    async def upsert(self, pod: fp.DesiredPod, generation: int = 0) -> None:
        async with self._lock:
            self.desired[pod.uid] = pod
            if generation:
                self.generation = generation
            await self._persist()
        self._worker(pod.uid).kick()

    async def delete(self, uid: str, grace_seconds: float | None = None, generation: int = 0) -> None:
        async with self._lock:
            pod = self.desired.pop(uid, None)
            if generation:
                self.generation = generation
            await self._persist()
        if grace_seconds is not None:
            self._delete_grace[uid] = grace_seconds
        elif pod is not None:
            self._delete_grace[uid] = pod.termination_grace_seconds
        self._worker(uid, pod).kick()

    async def sync(self, pods: tuple[fp.DesiredPod, ...], generation: int) -> None:
        """Replace the whole desired set (and trust it: orphans may now be collected)."""
        async with self._lock:
            old = self.desired
            self.desired = {pod.uid: pod for pod in pods}
            self.generation = generation
            self.authoritative = True
            await self._persist()
        for uid in old.keys() - self.desired.keys():
            self._delete_grace.setdefault(uid, old[uid].termination_grace_seconds)
        for uid in old.keys() | self.desired.keys():
            self._worker(uid, old.get(uid)).kick()
        self._poke.set()

    # ------------------------------------------------------------------ workers

    def _worker(self, uid: str, pod: fp.DesiredPod | None = None) -> PodWorker:
        worker = self._workers.get(uid)
        if worker is None:
            worker = PodWorker(self, uid, pod or self.desired.get(uid))
            self._workers[uid] = worker
            worker.task = asyncio.create_task(worker.run(), name=f"pod-worker-{uid}")
            worker.task.add_done_callback(self._worker_done)
        return worker

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("pod worker %s died: %r", task.get_name(), task.exception())

    def worker_finished(self, worker: PodWorker) -> bool:
        """Called by a worker after teardown; False if the pod became desired again meanwhile."""
        if worker.uid in self.desired:
            return False
        if self._workers.get(worker.uid) is worker:
            del self._workers[worker.uid]
        return True

    def delete_grace(self, uid: str, pod: fp.DesiredPod | None) -> float:
        grace = self._delete_grace.pop(uid, None)
        if grace is not None:
            return grace
        return pod.termination_grace_seconds if pod is not None else self.config.default_grace_seconds

    def report(self, report: fp.PodStatusReport) -> None:
        if self.statuses.get(report.uid) == report:
            return
        self.statuses[report.uid] = report
        try:
            self.on_status(report)
        except Exception:
            log.exception("status callback failed")

    def deleted(self, uid: str, namespace: str, name: str) -> None:
        self.statuses.pop(uid, None)
        self._fingerprints.pop(uid, None)
        try:
            self.on_deleted(fp.PodDeleted(uid=uid, namespace=namespace, name=name))
        except Exception:
            log.exception("deleted callback failed")

    # ------------------------------------------------------------------ the poller

    async def run(self) -> None:
        """Start a worker per desired pod (adopting their containers), then poll for changes."""
        for uid in list(self.desired):
            self._worker(uid)
        try:
            while True:
                await self._poll_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), self.config.poll_seconds)
                self._poke.clear()
        finally:
            await self.aclose()

    async def _poll_once(self) -> None:
        try:
            observed = await self.runtime.list({LABEL_NODE: self.config.node})
        except RuntimeUnavailable as exc:
            self.runtime_failed(exc)
            return
        except RuntimeErrorBase as exc:
            log.warning("listing containers failed: %s", exc)
            return
        self.runtime_answered()
        by_uid: dict[str, list[ContainerStatus]] = defaultdict(list)
        for status in observed:
            uid = status.labels.get(LABEL_POD_UID)
            if uid:
                by_uid[uid].append(status)
        self._observed = dict(by_uid)
        for uid, statuses in by_uid.items():
            fingerprint = _fingerprint(statuses)
            changed = self._fingerprints.get(uid) != fingerprint
            self._fingerprints[uid] = fingerprint
            if uid in self.desired or uid in self._workers:
                if changed:
                    self._worker(uid).kick()
            elif self.authoritative:
                labels = statuses[0].labels
                log.info(
                    "removing containers of unknown pod %s/%s (%s)",
                    labels.get(LABEL_POD_NAMESPACE),
                    labels.get(LABEL_POD_NAME),
                    uid,
                )
                self._worker(uid).kick()
        for uid in self.desired.keys() - by_uid.keys():
            if self._fingerprints.pop(uid, None) is not None:
                self._worker(uid).kick()  # its containers vanished
        if self.hosts is not None and not self._hosts_pruned:
            self._hosts_pruned = True
            gone = self.hosts.prune(self.desired.keys() | self._workers.keys() | by_uid.keys())
            if gone:
                log.info("removed the hosts files of %d pod(s) gone while the agent was away", len(gone))

    def poke(self) -> None:
        """Poll now (e.g. after a stream saw a container exit)."""
        self._poke.set()

    async def aclose(self) -> None:
        workers = list(self._workers.values())
        for worker in workers:
            if worker.task is not None:
                worker.task.cancel()
        for worker in workers:
            if worker.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(worker.task, 5)
        self._workers.clear()

    # ------------------------------------------------------------------ lookups for streams

    def find_pod(self, ref: fp.PodRef) -> fp.DesiredPod:
        for pod in self.desired.values():
            if pod.namespace == ref.namespace and pod.name == ref.pod and (not ref.uid or ref.uid == pod.uid):
                return pod
        raise PodNotFound(f"pod {ref.namespace}/{ref.pod} not found on node {self.config.node}")

    async def instances(self, pod: fp.DesiredPod, container: str) -> list[ContainerStatus]:
        """The runtime containers of one pod container, oldest attempt first."""
        found = await self.runtime.list(
            {LABEL_NODE: self.config.node, LABEL_POD_UID: pod.uid, LABEL_CONTAINER: container}
        )
        return sorted(found, key=attempt_of)

    async def resolve(self, ref: fp.PodRef, container: str = "", *, previous: bool = False) -> ContainerStatus:
        """The runtime container behind (pod, container); the one before it with ``previous``."""
        pod = self.find_pod(ref)
        name = _container_name(pod, container)
        if pod.container(name) is None:
            raise PodNotFound(f"container {name!r} not found in pod {pod.namespace}/{pod.name}")
        instances = await self.instances(pod, name)
        if previous:
            if len(instances) < 2:
                raise PodNotFound(f"previous terminated container {name!r} in pod {pod.key} not found")
            return instances[-2]
        if not instances:
            raise PodNotFound(f"container {name!r} in pod {pod.key} has not been created yet")
        return instances[-1]

    def running_hint(self, ref: fp.PodRef, container: str = "") -> str | None:
        """The id of the container's latest attempt if the last poll saw it running.

        Saves an exec or attach the engine's list call. It may be stale (the
        container stopped or was replaced since): the caller falls back to
        ``resolve`` when the engine says it is not running or gone.
        """
        try:
            pod = self.find_pod(ref)
        except PodNotFound:
            return None
        name = _container_name(pod, container)
        mine = [s for s in self._observed.get(pod.uid, ()) if s.labels.get(LABEL_CONTAINER) == name]
        latest = max(mine, key=attempt_of, default=None)
        return latest.id if latest is not None and latest.state is ContainerState.RUNNING else None

    async def pod_pid(self, pod: fp.DesiredPod) -> int | None:
        """A process in the pod's network namespace (its first running container's main process)."""
        for spec in pod.containers:
            instances = await self.instances(pod, spec.name)
            if instances and instances[-1].state is ContainerState.RUNNING and instances[-1].pid:
                return instances[-1].pid
        return None
