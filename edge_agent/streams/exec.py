"""``exec``, ``attach`` and ``hostexec`` streams: a process's stdio in channel frames."""

from __future__ import annotations

import contextlib
import os

import fleetproto as fp
from edge_agent.runtime import ContainerNotFound, ContainerNotRunning, ContainerState
from edge_agent.runtime._process_session import ProcessExecSession
from seqstream.mqtt import Stream

from ..config import ENV_PREFIX
from .context import StreamContext, StreamFailure
from .stdio import pump


async def _running_container(ctx: StreamContext, ref: fp.PodRef, container: str) -> str:
    status = await ctx.reconciler.resolve(ref, container)
    if status.state is not ContainerState.RUNNING:
        name = container or "default container"
        raise StreamFailure(
            fp.AppError.CONFLICT,
            f"container {name} in pod {ref.namespace}/{ref.pod} is not running ({status.state.value})",
        )
    return status.id


async def serve_exec(ctx: StreamContext, stream: Stream, req: fp.ExecOpen) -> None:
    session = None
    hint = ctx.reconciler.running_hint(req.ref, req.container)
    if hint is not None:  # the last poll's view: no list call before the exec
        with contextlib.suppress(ContainerNotFound, ContainerNotRunning):
            session = await ctx.runtime.exec(hint, req.command, tty=req.tty, stdin=req.stdin)
    if session is None:
        container_id = await _running_container(ctx, req.ref, req.container)
        session = await ctx.runtime.exec(container_id, req.command, tty=req.tty, stdin=req.stdin)
    ctx.counters["execs"] += 1
    await pump(stream, session, stdin=req.stdin, stdout=req.stdout, stderr=req.stderr, counters=ctx.counters)


async def serve_attach(ctx: StreamContext, stream: Stream, req: fp.AttachOpen) -> None:
    container_id = await _running_container(ctx, req.ref, req.container)
    session = await ctx.runtime.attach(container_id, stdin=req.stdin)
    await pump(stream, session, stdin=req.stdin, stdout=req.stdout, stderr=req.stderr, counters=ctx.counters)


async def serve_hostexec(ctx: StreamContext, stream: Stream, req: fp.HostExecOpen) -> None:
    """A command on the device itself; only where the operator allowed it (``[features] host_exec``)."""
    if not ctx.features.host_exec:
        raise StreamFailure(fp.AppError.FORBIDDEN, "host_exec is not allowed on this device")
    ctx.counters["host_execs"] += 1
    # The agent's own settings (broker password!) stay out of the command's environment.
    env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    session = ProcessExecSession.spawn(req.command, env=env, cwd="/", tty=req.tty, stdin=req.stdin)
    await pump(stream, session, stdin=req.stdin, counters=ctx.counters)
