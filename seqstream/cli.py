"""seqstream-cat: a remote command over nothing but an MQTT broker.

    seqstream-cat device pi-1 --broker mqtt://broker:1883      # on the device
    seqstream-cat run pi-1 --broker mqtt://broker:1883 -- uname -a
    seqstream-cat demo                                          # all in one process

``demo`` starts the embedded broker (amqtt), a device and a cloud endpoint,
runs a few commands on the "device" through seqstream and measures a round
trip and a bulk transfer - the quickest way to see the layer work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import socket
import sys
import time

from .errors import ErrorCode, SeqstreamError
from .mqtt import BrokerConfig, Endpoint, Stream, cloud_endpoint, device_endpoint

log = logging.getLogger("seqstream.cli")
EXIT_STATUS = "exit-status"


async def _pump_to_stream(reader: asyncio.StreamReader, stream: Stream) -> None:
    while chunk := await reader.read(65536):
        stream.write(chunk)
        await stream.drain()


async def run_command(stream: Stream) -> None:
    """Device side of an ``exec`` stream: stdin from the stream, stdout+stderr back.

    The exit status is sent last as a line ``exit-status N`` after a NUL byte,
    a tiny framing good enough for a demo (the edge agent has a real protocol).
    """
    argv = stream.metadata.get("argv") or ["/bin/sh"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as exc:
        stream.reset(ErrorCode.REJECTED, f"cannot run {argv[0]}: {exc.strerror}")
        return
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None  # both are PIPE

    async def feed() -> None:
        with contextlib.suppress(SeqstreamError, ConnectionError):
            async for chunk in stream:
                stdin.write(chunk)
                await stdin.drain()
        with contextlib.suppress(ConnectionError):
            stdin.close()

    feeder = asyncio.create_task(feed())
    try:
        await _pump_to_stream(stdout, stream)
        code = await proc.wait()
        stream.write(f"\0{EXIT_STATUS} {code}\n".encode())
        stream.write_eof()
    except SeqstreamError:
        proc.kill()
    finally:
        feeder.cancel()


async def serve_device(endpoint: Endpoint) -> None:
    tasks: set[asyncio.Task[None]] = set()
    while True:
        stream = await endpoint.accept()
        if stream.metadata.get("kind") != "exec":
            stream.reset(ErrorCode.REJECTED, f"unknown stream kind {stream.metadata.get('kind')!r}")
            continue
        task = asyncio.create_task(run_command(stream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def remote_command(endpoint: Endpoint, device: str, argv: list[str], stdin: bytes | None) -> tuple[bytes, int]:
    """Run ``argv`` on ``device``; return (output, exit status)."""
    stream = await endpoint.open_stream({"kind": "exec", "argv": argv}, peer=device)
    if stdin:
        stream.write(stdin)
    stream.write_eof()
    output = await stream.readall()
    body, _, trailer = output.rpartition(f"\0{EXIT_STATUS} ".encode())
    if not trailer:
        return output, 255
    return body, int(trailer.strip() or 255)


# ---------------------------------------------------------------- commands


async def cmd_device(args: argparse.Namespace) -> int:
    async with device_endpoint(args.name, BrokerConfig.from_url(args.broker)) as endpoint:
        print(f"device {args.name} serving commands over {args.broker} (Ctrl-C to stop)", file=sys.stderr)
        await serve_device(endpoint)
    return 0


async def cmd_run(args: argparse.Namespace) -> int:
    async with cloud_endpoint(BrokerConfig.from_url(args.broker), replica=f"cli-{os.getpid()}") as endpoint:
        await endpoint.wait_connected(args.timeout)
        stdin = None if sys.stdin.isatty() else sys.stdin.buffer.read()
        output, code = await asyncio.wait_for(
            remote_command(endpoint, args.name, args.argv or ["/bin/sh"], stdin), args.timeout
        )
        sys.stdout.buffer.write(output)
        sys.stdout.flush()
        return code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def cmd_demo(args: argparse.Namespace) -> int:
    from amqtt.broker import Broker

    port = args.port or _free_port()
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    say = lambda text: print(text, flush=True)  # noqa: E731
    say(f"1. embedded MQTT broker (amqtt) on 127.0.0.1:{port}")
    config = BrokerConfig(port=port, protocol="3.1.1")  # amqtt speaks 3.1.1 only
    try:
        async with device_endpoint("demo-device", config) as device, cloud_endpoint(config) as cloud:
            server = asyncio.create_task(serve_device(device))
            await device.session().wait_established(15)
            protocol = device.link.info.protocol if device.link.info else "?"
            say(f"2. device 'demo-device' and the cloud endpoint are connected (MQTT {protocol})")
            for argv in (["uname", "-sr"], ["sh", "-c", "echo hello from $(hostname) over MQTT; exit 3"]):
                output, code = await remote_command(cloud, "demo-device", argv, None)
                say(f"3. $ {shlex.join(argv)}\n   {output.decode().strip()}\n   (exit status {code})")
            output, code = await remote_command(cloud, "demo-device", ["wc", "-c"], os.urandom(5_000_000))
            say(f"4. 5 MB piped through 'wc -c' on the device: {output.decode().strip()} bytes (exit {code})")
            session = cloud.session("demo-device")
            rtts = sorted([await session.ping() for _ in range(50)])
            say(f"5. end-to-end ping through the broker: p50 {rtts[25] * 1000:.2f} ms")
            stream = await cloud.open_stream({"kind": "exec", "argv": ["cat"]}, peer="demo-device")
            payload = b"x" * (20 * 1024 * 1024)
            start = time.perf_counter()

            async def send() -> None:
                for pos in range(0, len(payload), 256 * 1024):
                    stream.write(payload[pos : pos + 256 * 1024])
                    await stream.drain()
                stream.write_eof()

            sender = asyncio.create_task(send())
            echoed = await stream.readall()
            await sender
            elapsed = time.perf_counter() - start
            ok = echoed == payload + f"\0{EXIT_STATUS} 0\n".encode()
            verdict = "byte-exact" if ok else "CORRUPT"
            say(f"6. 20 MB echoed by 'cat' on the device: {verdict}, {40 / elapsed:.0f} MB/s both ways")
            say(f"   session stats: {dict(session.core.stats)}")
            server.cancel()
            return 0 if ok else 1
    finally:
        await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seqstream-cat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("device", help="serve commands as device NAME")
    p.add_argument("name")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    p = sub.add_parser("run", help="run a command on device NAME")
    p.add_argument("name")
    p.add_argument("argv", nargs="*")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    p.add_argument("--timeout", type=float, default=30.0)
    p = sub.add_parser("demo", help="embedded broker + device + cloud in one process")
    p.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        logging.getLogger("amqtt").setLevel(logging.ERROR)
    handler = {"device": cmd_device, "run": cmd_run, "demo": cmd_demo}[args.command]
    try:
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        return 130
    except TimeoutError:
        print("seqstream-cat: timed out", file=sys.stderr)
        return 124
    except (SeqstreamError, ValueError) as exc:
        print(f"seqstream-cat: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
