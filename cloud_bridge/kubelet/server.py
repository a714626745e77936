"""The bridge's kubelet API: one TLS port serving every virtual node.

    async with KubeletServer(provider, config=ServerConfig(...)) as server:
        print(server.port)
        await server.serve_forever()

Node-scoped endpoints (``/stats/summary``, ``/metrics/resource``, ``/pods``)
carry no pod, so they need to know which virtual node a request is for:
with ``node_ports`` the server also listens on every port of that range and
``node_for_port`` (the bridge's assignment, see ``cloud_bridge/node_ports.py``
for why ports) names the node behind each. Else ``node_for_host`` may name it
from the server name the client dialled (TLS SNI), or from the Host header
(nodes that advertise a per-device DNS name; the apiserver's node proxy keeps
its own client's Host header, so there it is the SNI that names it). On the
shared ``port`` without either, every pod-scoped request works for every
node, ``/pods`` lists every node's pods and the stats endpoints answer 400
with a hint instead of guessing.

Authentication is TLS client certificates: with ``client_ca_file`` a
certificate, if presented, must chain to it (kube-apiserver presents its
``--kubelet-client-certificate``); requests without one get 401, except
``/healthz``. ``insecure=True`` (tests) serves clients without certificates.
There is no authorization for certificate clients: any may do anything. With
a ``token_authorizer``, a client without a certificate may instead send a
bearer token, checked and authorized per request as a kubelet does (see
``auth.py``): that is how metrics-server scrapes with its ServiceAccount.

Every connection runs in a tracked task; ``close()`` cancels what is left
after ``shutdown_timeout``. Provider calls run inside the connection's task
tree and are cancelled with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import auth, negotiate, routes
from ._http import HttpConnection, Request
from ._remotecommand import run_remote_command
from ._spdy_portforward import SpdyByteConn, SpdyPortForward
from ._spdy_remotecommand import SpdyRemoteCommand
from ._spdy_session import SpdySession
from ._streamio import LazyStreamIO
from ._tasks import cancel_and_wait
from ._ws_remotecommand import WsRemoteCommand, check_handshake
from .auth import TokenAuthorizer
from .errors import ProviderError
from .provider import Provider

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    insecure: bool = False
    """Serve clients without a certificate (tests only)."""
    host: str | Sequence[str] = "0.0.0.0"
    """One address or several (all share ``port``)."""
    port: int = 10250
    """0 picks a free port (see ``KubeletServer.port``)."""
    node_ports: tuple[int, int] | None = None
    """Also listen on each port FIRST..LAST (inclusive): one per virtual node,
    for node-scoped endpoints (see the module docstring)."""
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024
    header_timeout: float = 30.0
    idle_timeout: float = 120.0
    """Keep-alive: how long a connection may sit between requests."""
    upgrade_delay: float = 2.0
    """Exec/attach: how long a provider may take before the 101 is sent
    anyway (errors raised before it are plain HTTP errors)."""
    stream_creation_timeout: float = 30.0
    """kubelet's streamCreationTimeout: waiting for SPDY streams / pairs."""
    stream_buffer: int = 1024 * 1024
    """Unread input kept per stream before the connection stops reading."""
    max_ws_message: int = 1024 * 1024
    max_connections: int = 1024
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.client_ca_file is None and not self.insecure:
            raise ValueError("client_ca_file is required unless insecure=True")
        if self.node_ports is not None:
            first, last = self.node_ports
            if not 0 < first <= last < 65536:
                raise ValueError(f"node_ports {first}-{last}: expected 1 <= FIRST <= LAST <= 65535")
            if first <= self.port <= last:
                raise ValueError(f"the shared port {self.port} lies inside node_ports {first}-{last}")


@dataclass(frozen=True)
class Arrival:
    """How a connection reached us: the local port, and the server name the client
    dialled (TLS SNI). Node-scoped requests name no node; these can."""

    port: int = 0
    server_name: str | None = None


def _remember_server_name(tls: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    # Read back as Arrival.server_name. Never fail the handshake over it: an object
    # that takes no attributes just leaves the name unknown (the Host header remains).
    with contextlib.suppress(AttributeError):
        tls.edgefleet_server_name = server_name  # type: ignore[attr-defined]


def make_ssl_context(config: ServerConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.sni_callback = _remember_server_name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(config.cert_file), str(config.key_file))
    if config.client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(config.client_ca_file))
        ctx.verify_mode = ssl.CERT_OPTIONAL  # verified if given; 401 later if absent
    # No h2: Go clients offer it, but everything here is HTTP/1.1 (and upgrades need it).
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class KubeletServer:
    def __init__(
        self,
        provider: Provider,
        *,
        config: ServerConfig,
        node_for_port: Callable[[int], str | None] | None = None,
        node_for_host: Callable[[str], str | None] | None = None,
        token_authorizer: TokenAuthorizer | None = None,
    ) -> None:
        self.provider = provider
        self.config = config
        self.node_for_port = node_for_port
        self.node_for_host = node_for_host
        """A dialled name (TLS SNI or Host header; lower case, no port) -> virtual node, or None."""
        self.token_authorizer = token_authorizer
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[None], HttpConnection | None] = {}
        self._callbacks: set[asyncio.Task[None]] = set()  # asyncio.streams' tasks around ours
        self._counter = 0

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._servers:
            return
        hosts = [self.config.host] if isinstance(self.config.host, str) else list(self.config.host)
        ctx = make_ssl_context(self.config)
        port = self.config.port

        async def listen(host: str, port: int) -> int:
            server = await asyncio.start_server(
                self._on_connection,
                host,
                port,
                ssl=ctx,
                ssl_handshake_timeout=self.config.header_timeout,
                limit=64 * 1024,
            )
            self._servers.append(server)
            return int(server.sockets[0].getsockname()[1])

        try:
            for host in hosts:  # one by one: port 0 resolves on the first, the rest share it
                port = await listen(host, port)
            if self.config.node_ports is not None:
                first, last = self.config.node_ports
                for host in hosts:
                    for node_port in range(first, last + 1):
                        await listen(host, node_port)
        except BaseException:
            await self.close()
            raise

    @property
    def port(self) -> int:
        if not self._servers or not self._servers[0].sockets:
            raise RuntimeError("the server is not started")
        return self._servers[0].sockets[0].getsockname()[1]

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def serve_forever(self) -> None:
        await self.start()
        await asyncio.gather(*(server.serve_forever() for server in self._servers))

    async def close(self) -> None:
        """Stop listening, drop idle keep-alive connections, let the others
        finish for ``shutdown_timeout``, then cancel what is left."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        idle = [task for task, http in self._connections.items() if http is not None and http.idle]
        await cancel_and_wait(idle, timeout=self.config.shutdown_timeout)
        if self._connections:
            _done, pending = await asyncio.wait(set(self._connections), timeout=self.config.shutdown_timeout)
            await cancel_and_wait(pending, timeout=self.config.shutdown_timeout)
        if self._callbacks:
            await asyncio.wait(set(self._callbacks), timeout=1)
        for server in servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.shutdown_timeout):
                    await server.wait_closed()

    async def __aenter__(self) -> KubeletServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connections ------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._counter += 1
        peer = writer.get_extra_info("peername")
        name = f"conn#{self._counter} {peer[0]}:{peer[1]}" if peer else f"conn#{self._counter}"
        if len(self._connections) >= self.config.max_connections:
            log.warning("%s: refused, %d connections open", name, len(self._connections))
            writer.close()
            return
        # Our own task, so close() can cancel it without asyncio.streams
        # reporting the cancelled client_connected_cb task as an error.
        task = asyncio.create_task(self._connection(reader, writer, name), name=name)
        self._connections[task] = None
        outer = asyncio.current_task()
        assert outer is not None
        self._callbacks.add(outer)
        try:
            await asyncio.wait({task})
        finally:
            self._callbacks.discard(outer)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
        task = asyncio.current_task()
        try:
            await self._serve_connection(reader, writer, name)
        except (ConnectionError, ssl.SSLError, TimeoutError) as exc:
            log.debug("%s: %s", name, exc)
        except asyncio.CancelledError:
            writer.transport.abort()  # shutting down: no TLS goodbye
            raise
        except Exception:
            log.exception("%s: unexpected error", name)
        finally:
            writer.close()
            try:
                async with asyncio.timeout(2):
                    await writer.wait_closed()
            except (Exception, asyncio.CancelledError):
                writer.transport.abort()
            self._connections.pop(task, None)  # type: ignore[arg-type]

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
        cfg = self.config
        authenticated = bool(writer.get_extra_info("peercert"))
        http = HttpConnection(
            reader,
            writer,
            max_header_bytes=cfg.max_header_bytes,
            max_body_bytes=cfg.max_body_bytes,
            header_timeout=cfg.header_timeout,
            idle_timeout=cfg.idle_timeout,
        )
        task = asyncio.current_task()
        if task in self._connections:
            self._connections[task] = http
        sockname = writer.get_extra_info("sockname")
        tls = writer.get_extra_info("ssl_object")
        arrival = Arrival(
            port=int(sockname[1]) if sockname else 0,
            server_name=getattr(tls, "edgefleet_server_name", None),
        )
        while (request := await http.next_request()) is not None:
            keep = await self._serve_request(http, request, authenticated, name, arrival)
            if not keep or not http.next_cycle():
                return

    async def _serve_request(
        self, http: HttpConnection, request: Request, authenticated: bool, name: str, arrival: Arrival
    ) -> bool:
        """Answer one request; False if the connection must not be reused."""
        try:
            route = routes.parse_target(request.method, request.target)
            if not isinstance(route, routes.Healthz) and not (authenticated or self.config.insecure):
                await self._authorize_token(request, arrival)
            if isinstance(route, routes.STREAMING):
                await self._serve_streaming(http, request, route, f"{name} {request.target[:120]}")
                return False
            await self._serve_plain(http, route, arrival, request.header("host"))
            return True
        except routes.RouteError as exc:
            extra = list(exc.headers)
            if exc.status == 401:
                extra.append(("www-authenticate", "Certificate"))
            await http.respond_error(exc.status, exc.message, extra=extra)
            return exc.status < 500 and exc.status not in (401, 408, 413, 414)
        except ProviderError as exc:
            await http.respond_error(exc.status, exc.message, exc.reason)
            return True
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("%s: %s %s failed", name, request.method, request.target[:120])
            with contextlib.suppress(Exception):  # only possible if no response started
                await http.respond_error(500, f"internal error: {exc}")
            return False

    # -- plain requests -----------------------------------------------------------------

    async def _authorize_token(self, request: Request, arrival: Arrival) -> None:
        """A request without a client certificate: its bearer token must be allowed this, or 401/403."""
        token = auth.bearer_token(request.header("authorization"))
        if token is None or self.token_authorizer is None:
            what = "a client certificate or bearer token" if self.token_authorizer else "a client certificate"
            raise routes.RouteError(401, f"Unauthorized: {what} is required")
        node = self._node_at(arrival, request.header("host"))
        path = urlsplit(request.target).path
        await self.token_authorizer.authorize(token, auth.request_attributes(request.method, path, node))

    def _node_at(self, arrival: Arrival, host: str | None) -> str | None:
        """The virtual node a request is for: by the node port it came to, else by the
        name the client dialled (TLS SNI; the apiserver's node proxy passes its own
        client's Host header on), else by its Host header; None if nothing names one."""
        ports = self.config.node_ports
        if ports is not None and ports[0] <= arrival.port <= ports[1]:
            node = self.node_for_port(arrival.port) if self.node_for_port is not None else None
            if node is None:
                raise routes.RouteError(404, f"no virtual node is assigned kubelet port {arrival.port} of this bridge")
            return node
        if self.node_for_host is not None:
            for name in (arrival.server_name, host and host_name(host)):
                if name and (node := self.node_for_host(name.lower())) is not None:
                    return node
        return None

    def _require_node(self, arrival: Arrival, host: str | None, path: str) -> str:
        node = self._node_at(arrival, host)
        if node is None:
            if self.node_for_host is not None and arrival.server_name:  # dialled by a name
                raise routes.RouteError(
                    404, f"{path} is per node, and no device of this bridge goes by {arrival.server_name!r}"
                )
            raise routes.RouteError(
                400,
                f"{path} is per node, but port {arrival.port} serves every virtual node of this bridge and the "
                "request does not say which; the bridge answers it on each node's own port "
                "(status.daemonEndpoints.kubeletEndpoint.Port) when started with --kubelet-node-ports",
            )
        return node

    async def _serve_plain(
        self, http: HttpConnection, route: routes.Route, arrival: Arrival, host: str | None = None
    ) -> None:
        p = self.provider
        if isinstance(route, routes.Healthz):
            await http.respond(200, b"ok")
        elif isinstance(route, routes.Pods):
            items = await p.pods(self._node_at(arrival, host))
            pod_list = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
            await http.respond(200, _json(pod_list), "application/json")
        elif isinstance(route, routes.StatsSummary):
            summary = await p.stats_summary(self._require_node(arrival, host, "/stats/summary"))
            await http.respond(200, _json(summary), "application/json")
        elif isinstance(route, routes.MetricsResource):
            text = await p.metrics_resource(self._require_node(arrival, host, "/metrics/resource"))
            await http.respond(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif isinstance(route, routes.ContainerLogs):
            await self._serve_logs(http, route)
        else:  # pragma: no cover - parse_target returns nothing else
            raise routes.RouteError(404, "no such path")

    async def _serve_logs(self, http: HttpConnection, route: routes.ContainerLogs) -> None:
        chunks = await self.provider.logs(route.namespace, route.pod, route.container, route.options)
        limit = route.options.limit_bytes
        watcher = asyncio.create_task(_watch_peer(http))
        sender: asyncio.Task[None] | None = None
        try:
            await http.start_stream(200, "text/plain")
            sender = asyncio.create_task(_send_chunks(http, chunks, limit))
            done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if sender not in done:
                raise ConnectionAbortedError("the client went away while logs were streaming")
            exc = sender.exception()
            if exc is not None:
                # Headers are out: all we can do is cut the response short.
                if not isinstance(exc, ConnectionError):
                    log.error("logs of %s/%s/%s failed", route.namespace, route.pod, route.container, exc_info=exc)
                raise ConnectionAbortedError(f"log stream failed: {exc}")
            await http.end_stream()
        finally:
            await cancel_and_wait([watcher, sender])
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    # -- streaming requests ---------------------------------------------------------------

    async def _serve_streaming(
        self,
        http: HttpConnection,
        request: Request,
        route: routes.Exec | routes.Attach | routes.PortForward,
        name: str,
    ) -> None:
        cfg = self.config
        kind = negotiate.upgrade_kind(request.headers)
        if kind is negotiate.Upgrade.NONE:
            raise routes.RouteError(400, "unable to upgrade: missing upgrade headers (SPDY/3.1 or websocket)")
        if isinstance(route, routes.PortForward):
            if kind is not negotiate.Upgrade.SPDY:
                raise routes.RouteError(400, "port-forward is served over SPDY/3.1 only")
            protocol = negotiate.negotiate_spdy(request.headers, negotiate.SPDY_PORTFORWARD)
            log.debug("%s: port-forward over SPDY (%s)", name, protocol)
            await self._serve_port_forward(http, route, protocol, name)
            return

        if kind is negotiate.Upgrade.SPDY:
            protocol = negotiate.negotiate_spdy(request.headers, negotiate.SPDY_REMOTECOMMAND)
            log.debug("%s: %s over SPDY (%s)", name, type(route).__name__.lower(), protocol)
            transport: SpdyRemoteCommand | WsRemoteCommand = SpdyRemoteCommand(
                http,
                protocol,
                route.streams,
                stream_timeout=cfg.stream_creation_timeout,
                stream_buffer=cfg.stream_buffer,
                name=name,
            )
        else:
            key = check_handshake(request)
            offered = negotiate.split_tokens(request.header_values("sec-websocket-protocol"))
            ws_protocol = negotiate.negotiate_websocket(offered)
            log.debug("%s: %s over WebSocket (%s)", name, type(route).__name__.lower(), ws_protocol.name)
            transport = WsRemoteCommand(
                http,
                key,
                ws_protocol,
                route.streams,
                stream_buffer=cfg.stream_buffer,
                max_message=cfg.max_ws_message,
                name=name,
            )

        p = self.provider
        if isinstance(route, routes.Exec):
            r = route

            async def call(io: LazyStreamIO) -> int | None:
                return await p.exec(r.namespace, r.pod, r.container, list(r.command), io)
        else:
            a = route

            async def call(io: LazyStreamIO) -> int | None:
                await p.attach(a.namespace, a.pod, a.container, io)
                return None

        async def reject(code: int, message: str, reason: str) -> None:
            await http.respond_error(code, message, reason)

        await run_remote_command(call, route.streams, transport, reject, upgrade_delay=cfg.upgrade_delay, name=name)

    async def _serve_port_forward(
        self, http: HttpConnection, route: routes.PortForward, protocol: str, name: str
    ) -> None:
        cfg = self.config
        trailing = http.switch_protocols(
            [("connection", "Upgrade"), ("upgrade", "SPDY/3.1"), ("x-stream-protocol-version", protocol)]
        )
        session = SpdySession(http.reader, http.writer, stream_buffer=cfg.stream_buffer, max_streams=1024, name=name)
        provider = self.provider

        async def forward(port: int, conn: SpdyByteConn) -> None:
            await provider.port_forward(route.namespace, route.pod, port, conn)

        pf = SpdyPortForward(
            session, forward, pod=route.pod, uid=route.uid, pair_timeout=cfg.stream_creation_timeout, name=name
        )
        run = asyncio.create_task(session.run(trailing), name=f"spdy {name}")
        serve = asyncio.create_task(pf.run(), name=f"port-forward {name}")
        try:
            await asyncio.wait({run, serve}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([serve, run])
            session.goaway()


async def _send_chunks(http: HttpConnection, chunks: AsyncIterator[bytes], limit: int | None) -> None:
    remaining = limit
    async for chunk in chunks:
        if remaining is not None:
            chunk = chunk[:remaining]
            remaining -= len(chunk)
        await http.send_chunk(bytes(chunk))
        if remaining == 0:
            return


async def _watch_peer(http: HttpConnection) -> None:
    """Returns when the peer closes its side (bytes it sends meanwhile are kept)."""
    while True:
        try:
            data = await http.reader.read(64 * 1024)
        except (ConnectionError, OSError):
            return
        http.feed(data)
        if not data:
            return


def host_name(value: str) -> str:
    """A Host header's name without the port, lower case (``[v6]:port`` keeps the address)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, sep, port = value.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else value


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
