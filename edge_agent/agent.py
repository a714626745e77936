"""The agent: a seqstream device endpoint, the control stream, the stream handlers, the reconciler.

Task layout (all named; a task that crashes is logged and restarted, never
silently lost):

* ``reconciler`` - desired pods -> containers, independent of any connection:
  pods keep running and restarting while the cloud is away;
* ``connection`` - the device endpoint (one per broker URL in turn) and, in it,
  ``control`` (opens the control stream, reopens it after every reset) and
  ``accept`` (one task per stream the cloud opens);
* ``heartbeat`` - a ``NodeStatus`` into the outbox every ``heartbeat_seconds``.

Stopping the agent (SIGTERM, cancellation) leaves containers running: the
next agent adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import fleetproto as fp
from edge_agent.runtime import DockerConfig, DockerRuntime, ProcessRuntime, ProcessRuntimeConfig, Runtime
from seqstream import SeqstreamError, SessionConfig
from seqstream.mqtt import Endpoint, Stream, device_endpoint

from . import nodeinfo
from .backoff import Backoff
from .conditions import Transitions
from .config import AgentConfig
from .control import ControlSession
from .epoch import next_epoch
from .outbox import Outbox
from .podhosts import PodHostsFiles
from .reconciler import Reconciler, ReconcilerConfig
from .store import PodStore
from .streams import StreamContext, serve

if TYPE_CHECKING:
    from .services import ServiceManager  # imported when enabled: pyroute2 alone is 11 MB of RSS

log = logging.getLogger("edge_agent")

ESTABLISH_WAIT = 5.0
"""Check this often whether the session came up (bounded waits, no hang on a dead broker)."""
CONTROL_RETRY_MIN = 0.5
CONTROL_RETRY_MAX = 5.0
SUPERVISOR_DELAY = 2.0


def make_runtime(config: AgentConfig) -> Runtime:
    kind = config.runtime.kind
    if kind == "process":
        return ProcessRuntime(ProcessRuntimeConfig(data_dir=config.data_dir / "process-runtime"))
    return DockerRuntime(DockerConfig(base_url=config.runtime.resolved_socket))


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        runtime: Runtime | None = None,
        session_config: SessionConfig | None = None,
    ) -> None:
        self.config = config
        self.session_config = session_config
        self.runtime = runtime
        self._own_runtime = runtime is None
        self.counters: Counter[str] = Counter()
        self.outbox = Outbox()
        self.endpoint: Endpoint | None = None
        self.reconciler: Reconciler | None = None
        self.control: ControlSession | None = None
        self.stream_context: StreamContext | None = None
        self.services: ServiceManager | None = None
        self.epoch = 0
        self._epoch_used = False
        self._node_conditions = Transitions()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ready = asyncio.Event()
        """Set once the reconciler runs and the endpoint is started (for tests and health checks)."""

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until cancelled."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        runtime = self.runtime = self.runtime or make_runtime(config)
        try:
            self.epoch = await asyncio.to_thread(next_epoch, config.data_dir)
            self.reconciler = Reconciler(
                runtime,
                PodStore(config.data_dir),
                ReconcilerConfig(
                    node=config.name,
                    backoff=Backoff(config.pods.backoff_initial_seconds, config.pods.backoff_max_seconds),
                    poll_seconds=config.pods.poll_seconds,
                    default_grace_seconds=config.pods.default_grace_seconds,
                    host_ip=nodeinfo.primary_ip(),
                    shared_network=config.runtime.kind != "process",
                    seccomp_default=config.pods.seccomp_default,
                ),
                on_status=self.outbox.put_status,
                on_deleted=self.outbox.put_deleted,
                hosts=self._pod_hosts(),
            )
            self.stream_context = StreamContext(
                runtime=runtime,
                reconciler=self.reconciler,
                features=config.features,
                data_dir=config.data_dir,
                counters=self.counters,
            )
            if config.services.enabled:
                from .services import ServiceManager

                self.services = ServiceManager(
                    config.services, self._open_stream, self.counters, pod_hosts=self.reconciler.hosts
                )
                await self.services.start()
            log.info(
                "edge agent %s starting: runtime %s, %d desired pod(s), epoch %d",
                config.name,
                config.runtime.kind,
                len(self.reconciler.desired),
                self.epoch,
            )
            supervised = [
                asyncio.create_task(self._supervise(name, factory), name=f"agent-{name}")
                for name, factory in (
                    ("reconciler", self.reconciler.run),
                    ("connection", self._connection_loop),
                    ("heartbeat", self._heartbeat_loop),
                )
            ]
            try:
                await asyncio.gather(*supervised)
            finally:
                for task in supervised:
                    task.cancel()
                await asyncio.gather(*supervised, return_exceptions=True)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.services is not None:
                await self.services.close()
            if self.reconciler is not None:
                await self.reconciler.aclose()
            if self._own_runtime:
                await runtime.aclose()
            log.info("edge agent %s stopped (containers keep running)", config.name)

    def _pod_hosts(self) -> PodHostsFiles | None:
        """Per-pod hosts files for engines; the process runtime's pods read the device's own."""
        if self.config.runtime.kind == "process":
            return None
        services = self.config.services
        return PodHostsFiles(
            self.config.data_dir / "pods", host_network_file=services.hosts_file if services.enabled else None
        )

    async def _supervise(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``factory()`` forever: a crash is logged, counted and followed by a restart."""
        while True:
            try:
                await factory()
                log.warning("%s ended; restarting it", name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting it in %.0fs", name, SUPERVISOR_DELAY)
                self.counters[f"crashes_{name}"] += 1
            await asyncio.sleep(SUPERVISOR_DELAY)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed: %r", task.get_name(), task.exception())

    # ------------------------------------------------------------------ connection

    async def _connection_loop(self) -> None:
        """One endpoint per broker URL in turn; with one URL, one endpoint for the agent's life."""
        broker = self.config.broker
        index = 0
        while True:
            broker_config = await asyncio.to_thread(broker.broker_config, index)
            # Every endpoint is a new session incarnation and needs a new, higher epoch.
            epoch = self.epoch if not self._epoch_used else await asyncio.to_thread(next_epoch, self.config.data_dir)
            self._epoch_used = True
            endpoint = device_endpoint(self.config.name, broker_config, epoch=epoch, session_config=self.session_config)
            log.info("connecting to %s as %s", broker_config.url, self.config.name)
            async with endpoint:
                self.endpoint = endpoint
                self.ready.set()
                tasks = [
                    asyncio.create_task(self._control_loop(endpoint), name="control"),
                    asyncio.create_task(self._accept_loop(endpoint), name="accept"),
                    asyncio.create_task(self._watch_link(endpoint), name="link-watch"),
                ]
                try:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    self.endpoint = None
            index += 1

    async def _watch_link(self, endpoint: Endpoint) -> None:
        """Resync statuses after each MQTT reconnect; fail over to the next broker URL if down too long."""
        assert self.reconciler is not None
        was_connected = False
        down_since: float | None = time.monotonic()
        while True:
            connected = endpoint.link.connected.is_set()
            if connected:
                if not was_connected:
                    self.counters["broker_connects"] += 1
                    if self.counters["broker_connects"] > 1:
                        log.info("connected to the broker again; resending all statuses")
                    self.outbox.resync(self.reconciler.statuses.values())
                    await self._put_node_status()
                down_since = None
            else:
                if down_since is None:
                    down_since = time.monotonic()
                failover = self.config.broker.failover_seconds
                if len(self.config.broker.urls) > 1 and time.monotonic() - down_since > failover:
                    log.warning("no broker connection for %.0fs; trying the next broker URL", failover)
                    return
            was_connected = connected
            await asyncio.sleep(0.5)

    async def _control_loop(self, endpoint: Endpoint) -> None:
        """Keep one control stream open; reopen it (new NodeHello, full resync) whenever it ends."""
        assert self.reconciler is not None
        delay = CONTROL_RETRY_MIN
        while True:
            started = time.monotonic()
            try:
                session = endpoint.session()
                while not session.established.is_set():
                    with contextlib.suppress(TimeoutError):
                        await session.wait_established(ESTABLISH_WAIT)
                    session = endpoint.session()  # a closed session is replaced by a new one
                stream = await endpoint.open_stream(fp.ControlOpen().to_metadata())
                self.counters["control_streams"] += 1
                log.info("control stream %d open", stream.stream_id)
                self.control = ControlSession(
                    stream,
                    reconciler=self.reconciler,
                    outbox=self.outbox,
                    counters=self.counters,
                    hello=self._hello,
                    on_services=self.services.apply if self.services is not None else None,
                )
                await self.control.run()
            except SeqstreamError as exc:
                log.info("control stream ended: %s", exc)
            except Exception:
                self.counters["control_errors"] += 1
                log.exception("control stream failed; opening a new one")
            finally:
                self.control = None
            if time.monotonic() - started > 30:
                delay = CONTROL_RETRY_MIN
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, CONTROL_RETRY_MAX)

    async def _open_stream(self, metadata: dict[str, Any]) -> Stream:
        """A stream to the cloud on the current endpoint (for device-opened kinds such as ``service``)."""
        endpoint = self.endpoint
        if endpoint is None:
            raise ConnectionError("not connected to the broker")
        return await endpoint.open_stream(metadata)

    async def _accept_loop(self, endpoint: Endpoint) -> None:
        while True:
            stream = await endpoint.accept()
            if stream.metadata.get("kind") == fp.StreamKind.CONTROL:
                stream.reset(fp.AppError.BAD_REQUEST, "the device opens the control stream, not the cloud")
                continue
            assert self.stream_context is not None
            self._spawn(serve(self.stream_context, stream), name=f"stream-{stream.stream_id}")

    # ------------------------------------------------------------------ reports

    async def _runtime_info(self) -> fp.RuntimeInfo:
        assert self.runtime is not None
        try:
            version = await asyncio.wait_for(self.runtime.version(), 10)
        except Exception as exc:
            if self.reconciler is not None:
                self.reconciler.runtime_failed(exc)
            return fp.RuntimeInfo(self.config.runtime.kind, "")
        if self.reconciler is not None:
            self.reconciler.runtime_answered()
        return fp.RuntimeInfo(version.name, version.version)

    async def _hello(self) -> fp.NodeHello:
        assert self.reconciler is not None
        info = await asyncio.to_thread(
            nodeinfo.node_info,
            self.config.data_dir,
            runtime=await self._runtime_info(),
            features=self.config.features.enabled,
        )
        return fp.NodeHello(
            node=info, generation=self.reconciler.generation, pods=tuple(sorted(self.reconciler.desired))
        )

    def all_counters(self) -> dict[str, int]:
        out: Counter[str] = Counter(self.counters)
        if self.reconciler is not None:
            out.update(self.reconciler.counters)
        if self.endpoint is not None:
            out.update({f"seqstream_{k}": v for k, v in self.endpoint.stats.items()})
        return {key: value for key, value in out.items() if value >= 0}

    async def node_status(self) -> fp.NodeStatus:
        assert self.reconciler is not None
        await self._runtime_info()
        data_dir = self.config.data_dir
        conditions = await asyncio.to_thread(
            nodeinfo.conditions,
            data_dir,
            runtime_ok=self.reconciler.runtime_ok,
            runtime_message=self.reconciler.runtime_error,
        )
        capacity = await asyncio.to_thread(nodeinfo.capacity, data_dir)
        return fp.NodeStatus(
            time=time.time(),
            conditions=self._node_conditions.apply(conditions),
            capacity=capacity,
            allocatable=capacity,
            counters=self.all_counters(),
        )

    async def _put_node_status(self) -> None:
        self.outbox.put_node_status(await self.node_status())

    async def _heartbeat_loop(self) -> None:
        while True:
            if self.reconciler is not None:
                await self._put_node_status()
            await asyncio.sleep(self.config.heartbeat_seconds)
