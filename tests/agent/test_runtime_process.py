"""ProcessRuntime: containers as supervised host processes (no engine needed)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_agent.runtime import (
    ContainerSpec,
    ContainerState,
    ImageNotFound,
    InvalidSpec,
    ProcessRuntime,
    ProcessRuntimeConfig,
    PullProgress,
)
from tests.agent.contract import Kit, RuntimeContract, lines


@pytest.fixture
async def kit(process_runtime: ProcessRuntime, run_labels: dict[str, str], tmp_path: Path) -> AsyncIterator[Kit]:
    yield Kit(
        rt=process_runtime,
        image="host",
        labels=run_labels,
        root="$EDGEFLEET_CONTAINER_ROOT",
        workdir=str(tmp_path / "work"),
        has_network_stats=False,
        isolated=False,
        missing_images=[
            "edgefleet/busybox:test",
            "process:/nonexistent/bin/prog",
            "process:no-such-prog-xyz",
        ],
    )


class TestProcessContract(RuntimeContract):
    pass


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def test_image_rule(kit: Kit) -> None:
    sh = shutil.which("sh")
    assert sh
    reports: list[PullProgress] = []
    await kit.rt.ensure_image(f"process:{sh}", reports.append)
    assert reports and reports[0].image == f"process:{sh}"
    by_path = await kit.rt.create(
        ContainerSpec(name="by-path", image=f"process:{sh}", args=["-c", "echo by-path"], labels=kit.labels)
    )
    by_name = await kit.rt.create(
        ContainerSpec(name="by-name", image="process:sh", args=["-c", "echo by-name"], labels=kit.labels)
    )
    for cid, word in ((by_path, b"by-path"), (by_name, b"by-name")):
        await kit.rt.start(cid)
        assert (await kit.wait_exit(cid)).exit_code == 0
        assert lines(await kit.logs(cid)) == [word]
    with pytest.raises(InvalidSpec):
        await kit.rt.create(ContainerSpec(name="no-command", image="host", labels=kit.labels))
    with pytest.raises(ImageNotFound, match="process:<program>"):
        await kit.rt.ensure_image("busybox:latest")


async def test_exit_of_main_process_ends_container_and_its_leftovers(kit: Kit, tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    began = time.monotonic()
    cid = await kit.run(f"sleep 300 & echo $! > {pidfile}; echo started; exit 5")
    status = await kit.wait_exit(cid, timeout=10)
    assert status.exit_code == 5
    assert time.monotonic() - began < 5, "a background child kept the container running"
    background = int(pidfile.read_text())
    async with asyncio.timeout(5):
        while _alive(background):
            await asyncio.sleep(0.05)
    assert lines(await kit.logs(cid)) == [b"started"]


async def test_stop_kills_execs_too(kit: Kit) -> None:
    cid = await kit.run("sleep 300")
    session = await kit.rt.exec(cid, ["sleep", "300"])
    pid = session.pid  # type: ignore[attr-defined]
    await kit.rt.stop(cid, grace_seconds=5)
    async with asyncio.timeout(10):
        assert await session.wait() == 137
    assert not _alive(pid)
    await session.close()


async def test_restart_recovery_marks_and_kills_orphans(tmp_path: Path, run_labels: dict[str, str]) -> None:
    data = tmp_path / "data"
    first = ProcessRuntime(ProcessRuntimeConfig(data_dir=data))
    try:
        cid = await first.create(
            ContainerSpec(name="survivor", image="host", command=["sleep", "300"], labels=run_labels)
        )
        await first.start(cid)
        pid = (await first.inspect(cid)).pid
        assert pid and _alive(pid)
        # A second runtime on the same data dir (the agent restarted) takes over.
        second = ProcessRuntime(ProcessRuntimeConfig(data_dir=data))
        try:
            status = await second.inspect(cid)
            assert status.state is ContainerState.EXITED
            assert (status.exit_code, status.reason) == (255, "RuntimeRestarted")
            async with asyncio.timeout(5):
                while _alive(pid):
                    await asyncio.sleep(0.05)
            assert [s.name for s in await second.list(run_labels)] == ["survivor"]
        finally:
            await second.aclose()
    finally:
        await first.aclose()


async def test_log_rotation_keeps_recent_lines(tmp_path: Path, run_labels: dict[str, str]) -> None:
    runtime = ProcessRuntime(ProcessRuntimeConfig(data_dir=tmp_path / "data", max_log_bytes=4096))
    try:
        cid = await runtime.create(
            ContainerSpec(
                name="chatty",
                image="host",
                labels=run_labels,
                # Bursts of 50 lines (~0.5 KiB), so output reaches the log in many writes.
                command=[
                    "sh",
                    "-c",
                    "i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo line-$i;"
                    " [ $((i % 50)) -eq 0 ] && sleep 0.05; done; true",
                ],
            )
        )
        await runtime.start(cid)
        async with asyncio.timeout(20):
            while (await runtime.inspect(cid)).state is not ContainerState.EXITED:
                await asyncio.sleep(0.05)
        log_dir = tmp_path / "data" / "containers" / cid
        assert (log_dir / "log.1").exists()
        assert os.path.getsize(log_dir / "log") <= 4096
        tail = [c async for c in runtime.logs(cid, tail=3)]
        assert lines(tail) == [b"line-398", b"line-399", b"line-400"]
        everything = lines([c async for c in runtime.logs(cid)])
        assert everything[-1] == b"line-400"
        assert 40 < len(everything) < 400  # the oldest were rotated away
        numbers = [int(line.split(b"-")[1]) for line in everything]
        assert numbers == list(range(numbers[0], 401))  # contiguous: nothing lost in between
    finally:
        await runtime.aclose()


async def test_partial_lines_are_written_immediately(kit: Kit) -> None:
    cid = await kit.run("printf 'prompt> '; sleep 60")
    async with asyncio.timeout(10):
        while True:
            data = b"".join(c.data for c in await kit.logs(cid))
            if data:
                break
            await asyncio.sleep(0.05)
    assert data == b"prompt> "
