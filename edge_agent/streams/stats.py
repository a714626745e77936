"""``stats`` streams: ``StatsSummary`` messages for ``kubectl top`` (via the bridge's metrics endpoints)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import fleetproto as fp
from edge_agent.runtime import ContainerState, RuntimeErrorBase
from seqstream.mqtt import Stream

from ..nodeinfo import node_usage
from .context import StreamContext
from .logs import watch_reset


async def summary(ctx: StreamContext) -> fp.StatsSummary:
    pods = []
    for pod in list(ctx.reconciler.desired.values()):
        containers = []
        for spec in pod.containers:
            instances = await ctx.reconciler.instances(pod, spec.name)
            if not instances or instances[-1].state is not ContainerState.RUNNING:
                continue
            try:
                sample = await ctx.runtime.stats(instances[-1].id)
            except RuntimeErrorBase:
                continue  # exited between listing and sampling
            containers.append(
                fp.ContainerUsage(
                    name=spec.name,
                    cpu_usage_ns=sample.cpu_usage_ns,
                    memory_working_set_bytes=sample.memory_working_set_bytes,
                    memory_usage_bytes=sample.memory_usage_bytes,
                    memory_rss_bytes=sample.memory_rss_bytes,
                    fs_used_bytes=sample.fs_used_bytes,
                    net_rx_bytes=sample.net_rx_bytes,
                    net_tx_bytes=sample.net_tx_bytes,
                    pids=sample.pids,
                )
            )
        pods.append(fp.PodUsage(uid=pod.uid, namespace=pod.namespace, name=pod.name, containers=tuple(containers)))
    return fp.StatsSummary(time=time.time(), node=node_usage(ctx.data_dir), pods=tuple(pods))


async def _send(ctx: StreamContext, stream: Stream, req: fp.StatsOpen) -> None:
    while True:
        stream.write(fp.frame(await summary(ctx)))
        await stream.drain()
        if not req.interval:
            stream.write_eof()
            return
        await asyncio.sleep(req.interval)


async def serve_stats(ctx: StreamContext, stream: Stream, req: fp.StatsOpen) -> None:
    sender = asyncio.create_task(_send(ctx, stream, req), name="stats-send")
    watcher = asyncio.create_task(watch_reset(stream), name="stats-watch")
    try:
        await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done():
            sender.result()
    finally:
        for task in (sender, watcher):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(sender, watcher, return_exceptions=True)
