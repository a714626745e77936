"""The kubelet ``Provider`` over seqstream + fleetproto.

The Pod's ``spec.nodeName`` (from ``PodSync``'s cache) says which device
serves a request; each exec/attach/logs/port-forward becomes one seqstream
stream of the matching kind. An offline device fails fast (``Unavailable``)
instead of waiting for retransmission timeouts; a device's RESET maps to the
kubelet error of the same HTTP status.

Node-scoped documents (``/stats/summary``, ``/metrics/resource``) come from a
``stats`` stream to that device (one per ``STATS_TTL`` at most, see
``stats_sampler.py``), converted by ``stats_format.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import fleetproto as fp
from seqstream import StreamResetError
from seqstream.mqtt import PeerOfflineError, Stream

from . import stats_format
from .devices import DeviceHub
from .hostpods import HostPods
from .kubelet import BadRequest, ByteConn, LogOptions, NotFound, ProviderError, StreamIO, Unavailable
from .pods import PodEntry, PodSync
from .stats_sampler import Samples, StatsSampler

log = logging.getLogger("cloud_bridge.provider")

FIRST_LOG_WAIT = 3.0
STATS_TIMEOUT = 4.0
"""Below the apiserver's 5 s kubelet client timeout, so the caller gets our answer."""
STATS_TTL = 1.5
MAX_STATS_MESSAGE = 4 * 1024 * 1024


def reset_error(exc: StreamResetError) -> ProviderError:
    """A device RESET as the kubelet error with the same meaning."""
    reason = exc.reason or f"device reset the stream (0x{exc.code:x})"
    if exc.code == fp.AppError.NOT_FOUND:
        return NotFound(reason)
    if exc.code in (fp.AppError.BAD_REQUEST, fp.AppError.CONFLICT, fp.AppError.FORBIDDEN, fp.AppError.BAD_GATEWAY):
        return BadRequest(reason)
    if exc.code in (fp.AppError.UNAVAILABLE, fp.AppError.TIMEOUT):
        return Unavailable(reason)
    return ProviderError(reason)


class MqttProvider:
    def __init__(self, hub: DeviceHub, pods: PodSync, *, stats_ttl: float = STATS_TTL) -> None:
        self.hub = hub
        self.pods_sync = pods
        self.host_pods: HostPods | None = None
        """Set by the bridge when EdgeDevices are in use: exec on ``host-<device>`` runs on the device itself."""
        self.stats = StatsSampler(self._fetch_stats, ttl=stats_ttl)
        self.stats_errors = 0
        """Stats requests that failed other than by the device being offline (bad data, resets, timeouts)."""

    # ------------------------------------------------------------------ helpers

    def _entry(self, namespace: str, pod: str) -> PodEntry:
        entry = self.pods_sync.lookup(namespace, pod)
        if entry is None:
            raise NotFound(f'pod "{pod}" in namespace "{namespace}" is not on any device of this bridge')
        return entry

    def _ref(self, entry: PodEntry) -> fp.PodRef:
        return fp.PodRef(namespace=entry.namespace, pod=entry.name, uid=entry.uid)

    async def _open(self, entry: PodEntry, request: Any) -> Stream:
        if not self.hub.online(entry.device):
            raise Unavailable(f"device {entry.device} (node of pod {entry.namespace}/{entry.name}) is offline")
        try:
            return await self.hub.endpoint.open_stream(request.to_metadata(), peer=entry.device)
        except PeerOfflineError as exc:
            raise Unavailable(str(exc)) from exc

    # ------------------------------------------------------------------ exec / attach

    async def exec(self, namespace: str, pod: str, container: str, command: Sequence[str], io: StreamIO) -> int:
        host = self.host_pods.device_for(namespace, pod) if self.host_pods is not None else None
        if host is not None:
            return await self._host_exec(host.name, command, io)
        entry = self._entry(namespace, pod)
        request = fp.ExecOpen(
            ref=self._ref(entry),
            container=container,
            command=tuple(command),
            tty=io.tty,
            stdin=io.stdin is not None,
            stdout=io.stdout is not None,
            stderr=io.stderr is not None,
        )
        status = await self._session(await self._open(entry, request), io)
        if status is None or status.error:
            raise ProviderError((status.reason or status.error or "") if status else "the device sent no exit status")
        return status.exit_code or 0

    async def _host_exec(self, device: str, command: Sequence[str], io: StreamIO) -> int:
        """``kubectl exec host-<device>``: a ``hostexec`` stream (the agent refuses it unless it allows host_exec)."""
        if not self.hub.online(device):
            raise Unavailable(f"device {device} is offline")
        request = fp.HostExecOpen(command=tuple(command), tty=io.tty, stdin=io.stdin is not None)
        try:
            stream = await self.hub.endpoint.open_stream(request.to_metadata(), peer=device)
        except PeerOfflineError as exc:
            raise Unavailable(str(exc)) from exc
        status = await self._session(stream, io)
        if status is None or status.error:
            raise ProviderError((status.reason or status.error or "") if status else "the device sent no exit status")
        return status.exit_code or 0

    async def attach(self, namespace: str, pod: str, container: str, io: StreamIO) -> None:
        entry = self._entry(namespace, pod)
        request = fp.AttachOpen(
            ref=self._ref(entry),
            container=container,
            stdin=io.stdin is not None,
            stdout=io.stdout is not None,
            stderr=io.stderr is not None,
        )
        status = await self._session(await self._open(entry, request), io)
        if status is not None and status.error:
            raise ProviderError(status.reason or status.error)

    async def _session(self, stream: Stream, io: StreamIO) -> fp.ExitStatus | None:
        """Pipe the client's streams through channel frames until the device's FIN."""
        pumps: list[asyncio.Task[None]] = []
        try:
            await io.ready()
            if io.stdin is not None:
                pumps.append(asyncio.create_task(self._stdin(stream, io), name="bridge-exec-stdin"))
            else:
                stream.write_eof()
            if io.tty:
                pumps.append(asyncio.create_task(self._resize(stream, io), name="bridge-exec-resize"))
            return await self._output(stream, io)
        except StreamResetError as exc:
            raise reset_error(exc) from exc
        finally:
            for task in pumps:
                task.cancel()
            for task in pumps:
                with contextlib.suppress(BaseException):
                    await task
            if not stream.finished:
                with contextlib.suppress(Exception):
                    stream.reset(0x499, "client went away")

    async def _stdin(self, stream: Stream, io: StreamIO) -> None:
        assert io.stdin is not None
        while data := await io.stdin.read(65536):
            stream.write(fp.encode_chunks(fp.Channel.STDIN, data))
            await stream.drain()
        stream.write_eof()

    async def _resize(self, stream: Stream, io: StreamIO) -> None:
        async for size in io.resizes():
            stream.write(fp.resize_frame(size.width, size.height))

    async def _output(self, stream: Stream, io: StreamIO) -> fp.ExitStatus | None:
        decoder = fp.ChannelDecoder()
        status: fp.ExitStatus | None = None
        async for chunk in stream:
            decoder.feed(chunk)
            while (frame := decoder.next_frame()) is not None:
                if frame.channel is fp.Channel.STDOUT and io.stdout is not None:
                    await io.stdout.write(frame.payload)
                elif frame.channel is fp.Channel.STDERR:
                    target = io.stderr or io.stdout
                    if target is not None:
                        await target.write(frame.payload)
                elif frame.channel is fp.Channel.STATUS:
                    status = fp.ExitStatus.decode(frame.payload)
        decoder.eof()
        return status

    # ------------------------------------------------------------------ port-forward

    async def port_forward(self, namespace: str, pod: str, port: int, conn: ByteConn) -> None:
        host = self.host_pods.device_for(namespace, pod) if self.host_pods is not None else None
        if host is not None:
            if not host.host_port_forward:
                raise BadRequest(f"EdgeDevice {host.name} does not allow hostPortForward")
            if not self.hub.online(host.name):
                raise Unavailable(f"device {host.name} is offline")
            try:
                request = fp.PortForwardOpen(port=port, host=True)
                stream = await self.hub.endpoint.open_stream(request.to_metadata(), peer=host.name)
            except PeerOfflineError as exc:
                raise Unavailable(str(exc)) from exc
        else:
            entry = self._entry(namespace, pod)
            stream = await self._open(entry, fp.PortForwardOpen(port=port, ref=self._ref(entry)))

        async def upstream() -> None:
            while data := await conn.read(65536):
                stream.write(data)
                await stream.drain()
            stream.write_eof()

        up = asyncio.create_task(upstream(), name="bridge-pf-up")
        try:
            async for chunk in stream:
                await conn.write(chunk)
            await conn.close_write()
            await up
        except StreamResetError as exc:
            raise reset_error(exc) from exc
        finally:
            up.cancel()
            with contextlib.suppress(BaseException):
                await up
            if not stream.finished:
                with contextlib.suppress(Exception):
                    stream.reset(0x499, "client went away")

    # ------------------------------------------------------------------ logs

    async def logs(self, namespace: str, pod: str, container: str, opts: LogOptions) -> AsyncIterator[bytes]:
        entry = self._entry(namespace, pod)
        since_time = opts.since_time.timestamp() if opts.since_time is not None else None
        request = fp.LogsOpen(
            ref=self._ref(entry),
            container=container,
            follow=opts.follow,
            tail_lines=opts.tail_lines,
            since_seconds=opts.since_seconds,
            since_time=since_time,
            timestamps=opts.timestamps,
            limit_bytes=opts.limit_bytes,
            previous=opts.previous,
        )
        stream = await self._open(entry, request)
        stream.write_eof()
        # Wait briefly for the first bytes so a device's "no such container" is a plain 404.
        first = asyncio.create_task(stream.read(65536))
        await asyncio.wait({first}, timeout=FIRST_LOG_WAIT)
        if first.done() and isinstance(first.exception(), StreamResetError):
            raise reset_error(first.exception())  # type: ignore[arg-type]
        return self._log_chunks(stream, first)

    async def _log_chunks(self, stream: Stream, first: asyncio.Task[bytes]) -> AsyncIterator[bytes]:
        try:
            data = await first
            while data:
                yield data
                data = await stream.read(65536)
        except StreamResetError as exc:
            raise reset_error(exc) from exc
        finally:
            first.cancel()
            if not stream.finished:
                with contextlib.suppress(Exception):
                    stream.reset(0x499, "client went away")

    # ------------------------------------------------------------------ node-wide documents

    async def pods(self, node: str | None = None) -> list[dict[str, Any]]:
        return [e.obj for e in self.pods_sync.pods.values() if node is None or e.device == node]

    async def stats_summary(self, node: str) -> dict[str, Any]:
        samples = await self._samples(node)
        return stats_format.summary_document(
            node, samples.current, self._known(node), previous=samples.previous, node_start=samples.first_time
        )

    async def metrics_resource(self, node: str) -> str:
        samples = await self._samples(node)
        return stats_format.resource_metrics_text(samples.current, self._known(node))

    def _known(self, node: str) -> dict[str, stats_format.PodMeta]:
        entries = [e for e in self.pods_sync.pods.values() if e.device == node and not e.deleting]
        return {e.uid: stats_format.pod_meta(e.obj) for e in entries}

    async def _samples(self, node: str) -> Samples:
        if not self.hub.online(node):  # before the cache: a cached sample of an offline device would mislead
            raise Unavailable(f"device {node} is offline: no stats")
        try:
            return await self.stats.get(node)
        except Unavailable:
            raise
        except ProviderError:
            self.stats_errors += 1
            raise

    async def _fetch_stats(self, device: str) -> fp.StatsSummary:
        """One ``StatsSummary`` over a fresh ``stats`` stream; offline -> ``Unavailable`` at once."""
        if not self.hub.online(device):
            raise Unavailable(f"device {device} is offline: no stats")
        try:
            stream = await self.hub.endpoint.open_stream(fp.StatsOpen().to_metadata(), peer=device)
        except PeerOfflineError as exc:
            raise Unavailable(str(exc)) from exc
        decoder = fp.MessageDecoder(max_size=MAX_STATS_MESSAGE)
        try:
            stream.write_eof()
            async with asyncio.timeout(STATS_TIMEOUT):
                raw = None
                while raw is None:
                    chunk = await stream.read(65536)
                    if not chunk:
                        break
                    decoder.feed(chunk)
                    raw = decoder.next_message()
            if raw is None:
                raise ProviderError(f"device {device} closed its stats stream without a summary")
            message = fp.decode(raw, sender="device")
        except StreamResetError as exc:
            raise reset_error(exc) from exc
        except TimeoutError:
            raise Unavailable(f"device {device} sent no stats within {STATS_TIMEOUT:g}s") from None
        except fp.FleetProtoError as exc:
            log.warning("device %s sent malformed stats: %s", device, exc)
            raise ProviderError(f"device {device} sent malformed stats: {exc}") from exc
        finally:
            if not stream.finished:
                with contextlib.suppress(Exception):
                    stream.reset(0x499, "done")
        if not isinstance(message, fp.StatsSummary):
            raise ProviderError(f"device {device} answered a stats request with {type(message).__name__}")
        return message
