"""One control stream: NodeHello first, then the outbox out and the cloud's messages in.

Bad input from the cloud never stops the agent:

* a message that does not validate is dropped, counted
  (``control_bad_messages``) and answered with an ``Error``; a pod upsert
  that fails validation but names its uid also gets a ``Failed`` status with
  reason ``InvalidSpec``, so the cluster shows why the pod never ran;
* broken framing (an absurd length) cannot be resynchronised: the stream is
  reset with 0x400, counted (``control_framing_errors``), and the agent opens
  a new control stream - with a new NodeHello and a full status resync.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import fleetproto as fp
from seqstream import SeqstreamError
from seqstream.mqtt import Stream

from .outbox import Outbox
from .podstatus import invalid_pod_status
from .reconciler import Reconciler

log = logging.getLogger("edge_agent.control")


class ControlSession:
    def __init__(
        self,
        stream: Stream,
        *,
        reconciler: Reconciler,
        outbox: Outbox,
        counters: Counter[str],
        hello: Callable[[], Awaitable[fp.NodeHello]],
        on_services: Callable[[fp.ServiceTable], Awaitable[None]] | None = None,
    ) -> None:
        self.stream = stream
        self.reconciler = reconciler
        self.outbox = outbox
        self.counters = counters
        self.hello = hello
        self.on_services = on_services

    async def run(self) -> None:
        """Until the stream ends or is reset (raises ``StreamResetError`` then)."""
        self.stream.write(fp.frame(await self.hello()))
        self.outbox.resync(self.reconciler.statuses.values())
        reader = asyncio.create_task(self._read(), name="control-reader")
        writer = asyncio.create_task(self._write(), name="control-writer")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        except SeqstreamError:
            raise
        except Exception as exc:  # our bug: tell the cloud, let the caller open a fresh stream
            self.stream.reset(fp.AppError.INTERNAL, f"agent error: {type(exc).__name__}")
            raise
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    async def _write(self) -> None:
        while True:
            await self.outbox.wait()
            for message in self.outbox.take():
                try:
                    self.stream.write(fp.frame(message))
                except ValueError as exc:  # too large to send: a bug, not a reason to stop
                    log.error("cannot send %s: %s", type(message).__name__, exc)
            await self.stream.drain()

    async def _read(self) -> None:
        decoder = fp.MessageDecoder()
        async for chunk in self.stream:
            decoder.feed(chunk)
            while True:
                try:
                    raw = decoder.next_message()
                except fp.FramingError as exc:
                    self.counters["control_framing_errors"] += 1
                    log.warning("control stream framing broken (%s); resetting it", exc)
                    self.stream.reset(fp.AppError.BAD_REQUEST, f"control stream framing: {exc}")
                    return
                except fp.MessageError as exc:
                    self._bad_message(exc, "")
                    continue
                if raw is None:
                    break
                await self._handle(raw)
        log.info("the cloud closed the control stream")
        self.stream.write_eof()

    def _bad_message(self, exc: Exception, about: str) -> None:
        self.counters["control_bad_messages"] += 1
        count = self.counters["control_bad_messages"]
        if count <= 10 or count % 1000 == 0:
            log.warning("bad control message (%d so far): %s", count, exc)
        self.outbox.put_error(fp.Error(code=fp.AppError.BAD_REQUEST, message=str(exc)[:1000], about=about))

    async def _handle(self, raw: dict[str, object]) -> None:
        type_ = str(raw.get("type"))
        try:
            message = fp.decode(raw, sender="cloud")
        except fp.MessageError as exc:
            self._bad_message(exc, type_)
            if type_ == fp.PodUpsert.TYPE and (identity := fp.pod_identity(raw.get("pod"))):
                self.outbox.put_status(invalid_pod_status(*identity, problem=str(exc)))
            return
        self.counters[f"control_{type_}"] += 1
        try:
            await self._apply(message)
        except Exception as exc:  # e.g. the disk is full: the message is lost, the agent is not
            log.exception("applying %s failed", type_)
            self.counters["control_apply_errors"] += 1
            self.outbox.put_error(fp.Error(code=fp.AppError.INTERNAL, message=f"applying failed: {exc}", about=type_))

    async def _apply(self, message: object) -> None:
        if isinstance(message, fp.PodUpsert):
            if message.pod.unknown_fields:
                self.counters["pods_with_unknown_fields"] += 1
                unknown = ", ".join(message.pod.unknown_fields)
                log.warning("pod %s: ignoring unknown fields %s", message.pod.key, unknown)
            await self.reconciler.upsert(message.pod, message.generation)
        elif isinstance(message, fp.PodDelete):
            await self.reconciler.delete(message.uid, message.grace_seconds, message.generation)
        elif isinstance(message, fp.Sync):
            log.info("sync: %d desired pod(s) at generation %d", len(message.pods), message.generation)
            await self.reconciler.sync(message.pods, message.generation)
        elif isinstance(message, fp.ServiceTable):
            if self.on_services is not None:
                await self.on_services(message)
            else:
                log.debug("ignoring a ServiceTable: [services] is not enabled")
        elif isinstance(message, fp.Error):
            code = fp.codes.describe(message.code)
            log.warning("the cloud reports an error (%s) about %s: %s", code, message.about or "-", message.message)
