"""Streams the cloud opens to the device: one handler per stream kind.

``serve`` validates the OPEN metadata (``fleetproto.parse_open``), runs the
handler and turns any failure into one RESET with an ``AppError`` code. A
stream handler never raises into the agent: a bad stream costs that stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import fleetproto as fp
from seqstream import StreamResetError
from seqstream.mqtt import Stream

from .context import StreamContext, StreamFailure, classify
from .exec import serve_attach, serve_exec, serve_hostexec
from .logs import serve_logs
from .portforward import serve_portforward
from .stats import serve_stats

log = logging.getLogger("edge_agent.streams")

Handler = Callable[[StreamContext, Stream, Any], Awaitable[None]]
HANDLERS: dict[type, Handler] = {
    fp.ExecOpen: serve_exec,
    fp.AttachOpen: serve_attach,
    fp.HostExecOpen: serve_hostexec,
    fp.LogsOpen: serve_logs,
    fp.PortForwardOpen: serve_portforward,
    fp.StatsOpen: serve_stats,
}


async def serve(ctx: StreamContext, stream: Stream) -> None:
    """Handle one stream the cloud opened, start to end."""
    try:
        request = fp.parse_open(stream.metadata)
        handler = HANDLERS.get(type(request))
        if handler is None:
            raise StreamFailure(fp.AppError.BAD_REQUEST, f"the device does not accept {request.kind.value} streams")
        ctx.counters[f"streams_{request.kind.value}"] += 1
        await handler(ctx, stream, request)
    except StreamResetError as exc:
        log.debug("stream %s ended by reset: %s", stream.stream_id, exc)
    except Exception as exc:
        code, reason = classify(exc)
        if code == fp.AppError.INTERNAL:
            log.exception("stream %s (%s) failed", stream.stream_id, stream.metadata.get("kind"))
        else:
            log.info(
                "stream %s (%s) refused: %s %s",
                stream.stream_id,
                stream.metadata.get("kind"),
                fp.codes.describe(code),
                reason,
            )
        ctx.counters["streams_failed"] += 1
        stream.reset(code, reason[:1000])


__all__ = ["HANDLERS", "StreamContext", "StreamFailure", "classify", "serve"]
