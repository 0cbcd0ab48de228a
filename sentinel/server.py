"""Server scaffold shared by every role: aio server, health, reflection, graceful drain."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)

# Keepalive and size options shared by every server. Pings let a server notice dead peers on
# long-lived streams; permitting client pings every 20 s matches the client-side keepalive.
BASE_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
)


@dataclass
class GrpcServer:
    """An aio server with health + reflection, bound to one address.

    `service_names` are the fully-qualified services registered by `add_servicers`; health
    reports each (and "") as SERVING once started, and NOT_SERVING when draining.
    """

    bind_address: str
    service_names: tuple[str, ...]
    add_servicers: Callable[[grpc.aio.Server], None]
    max_message_bytes: int = 16 * 1024 * 1024
    server_credentials: grpc.ServerCredentials | None = None
    interceptors: Iterable[grpc.aio.ServerInterceptor] = ()
    extra_options: tuple[tuple[str, int | str], ...] = ()
    port: int = field(init=False, default=0)
    health: health.aio.HealthServicer = field(init=False)
    _server: grpc.aio.Server = field(init=False)

    async def start(self) -> int:
        options = (
            *BASE_SERVER_OPTIONS,
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            *self.extra_options,
        )
        self._server = grpc.aio.server(interceptors=tuple(self.interceptors), options=options)
        self.add_servicers(self._server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        if self.server_credentials is None:
            self.port = self._server.add_insecure_port(self.bind_address)
        else:
            self.port = self._server.add_secure_port(self.bind_address, self.server_credentials)
        await self._server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc server listening", extra={"port": self.port, "services": self.service_names})
        return self.port

    async def set_serving(self, service: str, serving: bool) -> None:
        """Health of one more service name (e.g. a startup signal); ignored once draining."""
        status = health_pb2.HealthCheckResponse
        await self.health.set(service, status.SERVING if serving else status.NOT_SERVING)

    async def mark_not_serving(self) -> None:
        """Flip every service to NOT_SERVING so load balancers and probes stop sending work."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace_seconds: float) -> None:
        """Stop accepting RPCs; in-flight ones get `grace_seconds` to finish."""
        await self._server.stop(grace_seconds)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT/SIGHUP set `stop` (the caller then drains and stops its children); a
    second signal is left to default. SIGHUP (the terminal closed) would otherwise end the
    process without its cleanup."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        log.info("stop signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()
        loop.remove_signal_handler(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass


def parse_bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def server_credentials(
    cert_file: str | None, key_file: str | None, client_ca_file: str | None
) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files; a client CA turns on mutual TLS. None = plaintext."""
    if not (cert_file and key_file):
        return None
    with open(cert_file, "rb") as cert, open(key_file, "rb") as key:
        pair = (key.read(), cert.read())
    root = None
    if client_ca_file:
        with open(client_ca_file, "rb") as ca:
            root = ca.read()
    return grpc.ssl_server_credentials(
        [pair], root_certificates=root, require_client_auth=root is not None
    )


async def drain_and_stop(
    server: GrpcServer,
    drain_delay_seconds: float,
    grace_seconds: float,
    end_streams: Callable[[], object] | None = None,
) -> None:
    """The SIGTERM sequence: NOT_SERVING, let routers notice, end streams, stop with grace."""
    await server.mark_not_serving()
    await asyncio.sleep(drain_delay_seconds)
    if end_streams is not None:
        result = end_streams()
        if asyncio.iscoroutine(result):
            await result
    await server.stop(grace_seconds)


def write_ready_file(path: str | None, port: int, metrics_port: int | None = None) -> None:
    """Tell a supervising process which port we bound (written atomically): the gRPC port on the
    first line, the metrics port (when there is an endpoint) on the second."""
    if not path:
        return
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(str(port) if metrics_port is None else f"{port}\n{metrics_port}")
    os.replace(tmp, path)


class ServedProcess(Protocol):
    async def start(self) -> int: ...

    async def stop(self) -> None: ...


async def serve_until_signalled(
    process: ServedProcess, ready_file: str | None, on_exit: Callable[[], None]
) -> None:
    """Start, announce the port, wait for a stop signal, then drain and stop (a role's `serve`)."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    port = await process.start()
    endpoint = getattr(process, "metrics_endpoint", None)
    write_ready_file(ready_file, port, endpoint.port if endpoint is not None else None)
    try:
        await stop.wait()
    finally:
        await process.stop()
        on_exit()
