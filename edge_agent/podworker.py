"""One pod's worker: every runtime action for the pod happens in its task, in order.

A pass (``sync``) lists the pod's containers from the runtime and, per desired
container, decides from what it sees: start the first attempt, start a
created one, replace one whose spec changed, restart an exited one per
restart policy after its back-off, or leave it. The in-memory
``ContainerTrack`` only remembers what the runtime cannot tell (back-off
deadlines, pull failures, why a container is still waiting); losing it (agent
restart) costs at most one early restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import fleetproto as fp
from edge_agent.runtime import (
    ContainerConflict,
    ContainerNotFound,
    ContainerStartError,
    ContainerState,
    ContainerStatus,
    ImageNotFound,
    PullProgress,
    RuntimeErrorBase,
    RuntimeUnavailable,
)

from . import podspec
from .conditions import Transitions
from .nodeinfo import netns_addresses, shares_our_netns
from .podspec import LABEL_CONTAINER, LABEL_NODE, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, attempt_of
from .podstatus import ContainerView, is_finished, pod_status, should_restart

if TYPE_CHECKING:
    from .reconciler import Reconciler

log = logging.getLogger("edge_agent.reconciler")

PULL_REPORT_INTERVAL = 1.0
"""At most one status update per second while an image is being pulled."""


@dataclass
class ContainerTrack:
    """What a worker remembers about one desired container between passes (memory only)."""

    crashes: int = 0
    restart_at: float | None = None
    handled_exit: str | None = None
    waiting: tuple[str, str] | None = None
    pull_failures: int = 0
    pull_retry_at: float | None = None
    last_pull_report: float = 0.0
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)


class PodWorker:
    """Drives one pod; all its runtime actions happen in this task, in order."""

    def __init__(self, rec: Reconciler, uid: str, pod: fp.DesiredPod | None) -> None:
        self.rec = rec
        self.uid = uid
        self.pod = pod
        self.task: asyncio.Task[None] | None = None
        self.tracks: dict[str, ContainerTrack] = {}
        self.transitions = Transitions()
        self.start_time: float | None = None
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._observed: dict[str, list[ContainerStatus]] = {}
        self._loop = asyncio.get_running_loop()

    def kick(self) -> None:
        self._wake.set()

    def wake_at(self, when: float) -> None:
        if self._wake_at is None or when < self._wake_at:
            self._wake_at = when

    async def run(self) -> None:
        self._wake.set()
        while True:
            timeout = None if self._wake_at is None else max(0.0, self._wake_at - self._loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            self._wake_at = None
            pod = self.rec.desired.get(self.uid)
            try:
                if pod is None:
                    await self.teardown()
                    if self.rec.worker_finished(self):
                        return
                    continue
                self.pod = pod
                if await self.sync(pod):
                    self._wake.set()  # acted: look again at once
            except RuntimeUnavailable as exc:
                self.rec.runtime_failed(exc)
                self.wake_at(self._loop.time() + self.rec.config.poll_seconds)
            except Exception:
                log.exception("pod %s: reconcile failed; retrying", self.pod.key if self.pod else self.uid)
                self.wake_at(self._loop.time() + self.rec.config.backoff.initial)

    # ------------------------------------------------------------------ one pass

    async def _observe(self) -> dict[str, list[ContainerStatus]]:
        found = await self.rec.runtime.list({LABEL_NODE: self.rec.config.node, LABEL_POD_UID: self.uid})
        self.rec.runtime_answered()
        by_name: dict[str, list[ContainerStatus]] = defaultdict(list)
        for status in found:
            by_name[status.labels.get(LABEL_CONTAINER, "")].append(status)
        for instances in by_name.values():
            instances.sort(key=attempt_of)
        return dict(by_name)

    async def sync(self, pod: fp.DesiredPod) -> bool:
        """One reconcile pass; True if it changed something (another pass should follow)."""
        observed = self._observed = await self._observe()
        self._update_hosts(pod)
        if self.start_time is None:
            created = [s.created_at.timestamp() for group in observed.values() for s in group if s.created_at]
            self.start_time = min(created) if created else time.time()
        acted = False
        for name, instances in observed.items():
            if pod.container(name) is None:
                log.info("pod %s: removing container %r, no longer in the spec", pod.key, name)
                await self._remove_all(instances, pod.termination_grace_seconds)
                acted = True
        for index, spec in enumerate(pod.containers):
            acted |= await self._sync_container(pod, index, spec, observed.get(spec.name, []))
        self.report(pod)
        return acted

    async def _sync_container(
        self, pod: fp.DesiredPod, index: int, spec: fp.Container, instances: list[ContainerStatus]
    ) -> bool:
        track = self.tracks.setdefault(spec.name, ContainerTrack())
        for old in instances[:-2]:  # keep the current and the previous instance only
            await self._remove(old)
        current = instances[-1] if instances else None
        want = podspec.spec_hash(pod, spec)
        if current is not None and current.labels.get(podspec.LABEL_SPEC_HASH) != want:
            log.info("pod %s: container %s changed; replacing it", pod.key, spec.name)
            await self._stop(current, pod.termination_grace_seconds)
            track.crashes, track.restart_at, track.handled_exit = 0, None, None
            return await self._start_new(pod, index, spec, track, attempt_of(current) + 1)
        if current is None:
            return await self._start_new(pod, index, spec, track, 0)
        if current.state is ContainerState.RUNNING:
            track.waiting = None
            joined = current.labels.get(podspec.LABEL_NETWORK_OF)
            provider = self._network_of(pod, index)
            if joined and isinstance(provider, str) and provider != joined:
                # The first container was replaced: its network namespace (ours) is gone from the pod.
                log.info("pod %s: container %s follows the pod's new network namespace", pod.key, spec.name)
                await self._stop(current, pod.termination_grace_seconds)
                return await self._start_new(pod, index, spec, track, attempt_of(current) + 1)
            return False
        if current.state is ContainerState.CREATED and not is_finished(current):
            await self._start(current)
            return True
        if current.state is ContainerState.UNKNOWN or not should_restart(pod.restart_policy, current.exit_code):
            track.waiting = None
            return False
        now = self._loop.time()
        if track.handled_exit != current.id:
            track.handled_exit = current.id
            ran = 0.0
            if current.started_at and current.finished_at:
                ran = (current.finished_at - current.started_at).total_seconds()
            track.crashes = 1 if ran >= self.rec.config.backoff.reset_after else track.crashes + 1
            track.restart_at = now + self.rec.config.backoff.delay(track.crashes)
            log.info(
                "pod %s: container %s exited (%s, code %s); restart in %.1fs",
                pod.key,
                spec.name,
                current.reason,
                current.exit_code,
                track.restart_at - now,
            )
        if track.restart_at is not None and now < track.restart_at:
            self.wake_at(track.restart_at)
            return False
        self.rec.counters["container_restarts"] += 1
        return await self._start_new(pod, index, spec, track, attempt_of(current) + 1)

    async def _start_new(
        self, pod: fp.DesiredPod, index: int, spec: fp.Container, track: ContainerTrack, attempt: int
    ) -> bool:
        now = self._loop.time()
        if track.pull_retry_at is not None and now < track.pull_retry_at:
            self.wake_at(track.pull_retry_at)
            message = track.waiting[1] if track.waiting else ""
            track.waiting = ("ImagePullBackOff", message)
            return False
        if track.waiting is None or track.waiting[0] != "ContainerCreating":
            track.waiting = ("ContainerCreating", "")
            self.report(pod)
        track.layers.clear()
        try:
            await self.rec.runtime.ensure_image(
                spec.image, lambda p: self._pull_progress(pod, track, p), policy=podspec.pull_policy(spec)
            )
        except ImageNotFound as exc:
            track.pull_failures += 1
            delay = self.rec.config.backoff.delay(track.pull_failures)
            track.pull_retry_at = now + delay
            track.waiting = ("ErrImagePull", str(exc))
            # Look again soon, to show ImagePullBackOff for the rest of the wait (as kubelet does).
            self.wake_at(min(track.pull_retry_at, now + self.rec.config.poll_seconds))
            self.rec.counters["image_pull_errors"] += 1
            log.warning("pod %s: %s (retry in %.1fs)", pod.key, exc, delay)
            return False
        track.pull_failures, track.pull_retry_at = 0, None
        network_of = self._network_of(pod, index)
        if network_of is False:
            track.waiting = ("ContainerCreating", "waiting for the pod's first container, whose network it joins")
            self.wake_at(now + self.rec.config.poll_seconds)
            return False
        hosts = self.rec.hosts.mount_for(pod) if self.rec.hosts is not None else None
        runtime_spec = podspec.runtime_spec(
            pod,
            spec,
            node=self.rec.config.node,
            attempt=attempt,
            network_of=network_of if isinstance(network_of, str) else None,
            mounts=[hosts] if hosts is not None else [],
            seccomp_default=self.rec.config.seccomp_default,
        )
        try:
            try:
                cid = await self.rec.runtime.create(runtime_spec)
            except ContainerConflict:
                # A container by that name but without our labels: a leftover of a crash mid-create.
                with contextlib.suppress(ContainerNotFound):
                    await self.rec.runtime.remove(runtime_spec.name, force=True)
                cid = await self.rec.runtime.create(runtime_spec)
        except RuntimeUnavailable:
            raise
        except RuntimeErrorBase as exc:
            track.crashes += 1
            track.restart_at = now + self.rec.config.backoff.delay(track.crashes)
            track.waiting = ("CreateContainerError", str(exc))
            self.wake_at(track.restart_at)
            log.warning("pod %s: creating container %s failed: %s", pod.key, spec.name, exc)
            return False
        track.waiting = None
        await self._start(
            ContainerStatus(id=cid, name=runtime_spec.name, image=spec.image, state=ContainerState.CREATED)
        )
        return True

    def _update_hosts(self, pod: fp.DesiredPod) -> None:
        """Keep the pod's hosts file's address line current (the first container may have a new one)."""
        if self.rec.hosts is None or pod.host_network:
            return
        try:
            self.rec.hosts.update(pod, self._pod_ip(pod))
        except OSError as exc:
            self.rec.counters["pod_hosts_errors"] += 1
            log.warning("pod %s: cannot write its hosts file: %s", pod.key, exc)

    def _network_of(self, pod: fp.DesiredPod, index: int) -> str | bool:
        """Whose network namespace container ``index`` joins: the first container's id, ``True``
        for its own (the first container itself, host network, or a first container that ended
        for good), or ``False`` to wait until the first container runs.

        A pod shares one network namespace; without a sandbox ("pause") container - no such
        image can be assumed on a device - the first container provides it.
        """
        if index == 0 or pod.host_network or not self.rec.config.shared_network:
            return True
        first = self._observed.get(pod.containers[0].name) or []
        if first and first[-1].state is ContainerState.RUNNING:
            return first[-1].id
        return bool(first and is_finished(first[-1]) and not should_restart(pod.restart_policy, first[-1].exit_code))

    async def _start(self, status: ContainerStatus) -> None:
        try:
            await self.rec.runtime.start(status.id)
        except ContainerStartError as exc:
            log.warning("starting %s failed: %s", status.name, exc)  # seen as StartError next pass

    def _pull_progress(self, pod: fp.DesiredPod, track: ContainerTrack, progress: PullProgress) -> None:
        # The first byte count is reported at once (a fast pull would otherwise only ever
        # show "Pulling from ..."); after that at most once per interval.
        first_bytes = False
        if progress.layer and progress.total:
            first_bytes = not track.layers
            track.layers[progress.layer] = (progress.current or 0, progress.total)
        done = sum(c for c, _ in track.layers.values())
        total = sum(t for _, t in track.layers.values())
        detail = f": {done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f": {progress.status}"
        track.waiting = ("ContainerCreating", f"pulling image {progress.image}{detail}")
        now = self._loop.time()
        if first_bytes or now - track.last_pull_report >= PULL_REPORT_INTERVAL:
            track.last_pull_report = now
            self.report(pod)

    # ------------------------------------------------------------------ stopping

    async def _stop(self, status: ContainerStatus, grace: float) -> None:
        with contextlib.suppress(ContainerNotFound):
            if status.state is ContainerState.RUNNING:
                await self.rec.runtime.stop(status.id, grace_seconds=grace)
            await self.rec.runtime.remove(status.id, force=True)

    async def _remove(self, status: ContainerStatus) -> None:
        with contextlib.suppress(ContainerNotFound):
            await self.rec.runtime.remove(status.id, force=True)

    async def _remove_all(self, instances: list[ContainerStatus], grace: float) -> None:
        await asyncio.gather(*(self._stop(s, grace) for s in instances))

    async def teardown(self) -> None:
        """The pod is no longer desired: stop (with grace) and remove all its containers."""
        observed = await self._observe()
        instances = [s for group in observed.values() for s in group]
        namespace = self.pod.namespace if self.pod else ""
        name = self.pod.name if self.pod else ""
        if instances and not self.pod:
            namespace = instances[0].labels.get(LABEL_POD_NAMESPACE, "")
            name = instances[0].labels.get(LABEL_POD_NAME, "")
        grace = self.rec.delete_grace(self.uid, self.pod)
        if instances:
            log.info("pod %s/%s: stopping %d container(s), grace %.0fs", namespace, name, len(instances), grace)
        await self._remove_all(instances, grace)
        self.tracks.clear()
        if self.rec.hosts is not None:
            self.rec.hosts.remove(self.uid)
        self.rec.deleted(self.uid, namespace, name)

    # ------------------------------------------------------------------ status

    def report(self, pod: fp.DesiredPod) -> None:
        views = []
        for spec in pod.containers:
            instances = self._observed.get(spec.name, [])
            track = self.tracks.get(spec.name) or ContainerTrack()
            current = instances[-1] if instances else None
            restarting = (
                current is not None and is_finished(current) and should_restart(pod.restart_policy, current.exit_code)
            )
            views.append(
                ContainerView(
                    spec=spec,
                    current=current,
                    previous=instances[-2] if len(instances) > 1 else None,
                    waiting=track.waiting,
                    will_restart=restarting,
                    # The full delay, as the kubelet reports it; a countdown would change every pass.
                    backoff_seconds=self.rec.config.backoff.delay(track.crashes),
                )
            )
        report, conditions = pod_status(
            pod, views, pod_ip=self._pod_ip(pod), host_ip=self.rec.config.host_ip, start_time=self.start_time
        )
        report = replace(report, conditions=self.transitions.apply(conditions))
        self.rec.report(report)

    def _pod_ip(self, pod: fp.DesiredPod) -> str:
        if pod.host_network:
            return self.rec.config.host_ip
        for spec in pod.containers:
            instances = self._observed.get(spec.name) or []
            pid = instances[-1].pid if instances and instances[-1].state is ContainerState.RUNNING else None
            if pid:
                if shares_our_netns(pid):
                    return self.rec.config.host_ip
                addresses = netns_addresses(pid)
                if addresses:
                    return addresses[0]
        return ""
