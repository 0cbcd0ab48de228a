"""TLS and mutual TLS on the orchestrator's public port, with certificates made in the test.

Settings: SENTINEL_TLS_CERT_FILE + SENTINEL_TLS_KEY_FILE turn on TLS; SENTINEL_TLS_CLIENT_CA_FILE
additionally requires a client certificate signed by that CA (mutual TLS). Plaintext is served
only on a loopback address unless SENTINEL_ALLOW_INSECURE=true (e.g. behind an Istio sidecar).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import grpc
import pytest
from faultkit import make_pki
from mesh_fixtures import running_mesh
from pydantic import ValidationError
from readings import batch
from sentinel.orchestrator.settings import OrchestratorSettings
from sentinel.specialists.settings import SpecialistSettings

from sentinel.client import TelemetryClient
from sentinel.v1 import orchestrator_pb2 as pb
from sentinel.v1 import orchestrator_pb2_grpc


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _credentials(pki, cert: str | None = None) -> grpc.ChannelCredentials:
    if cert is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.read("ca.pem"))
    return grpc.ssl_channel_credentials(
        root_certificates=pki.read("ca.pem"),
        private_key=pki.read(f"{cert}.key"),
        certificate_chain=pki.read(f"{cert}.pem"),
    )


async def _detect(target: str, credentials: grpc.ChannelCredentials | None) -> pb.DetectResponse:
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        return await stub.Detect(batch(1, [1.0, 95.0]), timeout=5)


async def _stream_with_client(target: str, credentials: grpc.ChannelCredentials) -> tuple[int, int]:
    async with TelemetryClient(target, credentials=credentials) as client:
        for _ in range(3):
            await client.send(list(batch(0, [1.0, 2.0, 3.0]).readings))
    return client.stats.batches_acked, client.stats.readings_acked


async def test_tls_only_serves_encrypted_clients_and_refuses_plaintext(pki) -> None:
    async with running_mesh(
        engines=("threshold",),
        tls_cert_file=str(pki["server.pem"]),
        tls_key_file=str(pki["server.key"]),
    ) as mesh:
        port = mesh.orchestrator.port
        for host in ("127.0.0.1", "localhost"):  # both names are in the certificate's SANs
            response = await _detect(f"{host}:{port}", _credentials(pki))
            assert [v.anomaly for v in response.verdicts] == [False, True]
        assert await _stream_with_client(f"127.0.0.1:{port}", _credentials(pki)) == (3, 9)
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            await _detect(f"127.0.0.1:{port}", None)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
        # A client that does not trust the server's CA cannot connect either.
        untrusting = grpc.ssl_channel_credentials(root_certificates=pki.read("rogue-client.pem"))
        with pytest.raises(grpc.aio.AioRpcError) as untrusted:
            await _detect(f"127.0.0.1:{port}", untrusting)
        assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(pki) -> None:
    async with running_mesh(
        engines=("threshold",),
        tls_cert_file=str(pki["server.pem"]),
        tls_key_file=str(pki["server.key"]),
        tls_client_ca_file=str(pki["ca.pem"]),
    ) as mesh:
        target = mesh.target
        for refused_credentials in (_credentials(pki), _credentials(pki, "rogue-client")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _detect(target, refused_credentials)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        response = await _detect(target, _credentials(pki, "client"))
        assert len(response.verdicts) == 2
        assert await _stream_with_client(target, _credentials(pki, "client")) == (3, 9)
        # Refused handshakes left nothing behind.
        await asyncio.sleep(0.1)
        assert not mesh.orchestrator.servicer.sessions


def test_plaintext_is_refused_on_a_non_loopback_address_unless_allowed(pki, monkeypatch) -> None:
    for settings_class in (OrchestratorSettings, SpecialistSettings):
        for host in ("0.0.0.0", "10.1.2.3", "::", "orchestrator.example"):
            with pytest.raises(ValidationError, match="refusing plaintext gRPC"):
                settings_class(host=host)
            assert settings_class(host=host, allow_insecure=True).host == host
            assert settings_class(
                host=host, tls_cert_file=str(pki["server.pem"]), tls_key_file=str(pki["server.key"])
            ).tls_enabled
        for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
            assert not settings_class(host=host).tls_enabled
    with pytest.raises(ValidationError, match="set together"):
        OrchestratorSettings(tls_cert_file=str(pki["server.pem"]))
    monkeypatch.setenv("SENTINEL_HOST", "0.0.0.0")
    monkeypatch.setenv("SENTINEL_ALLOW_INSECURE", "true")
    assert OrchestratorSettings().allow_insecure


async def test_allow_insecure_serves_plaintext_on_all_interfaces() -> None:
    async with running_mesh(engines=("threshold",), host="0.0.0.0", allow_insecure=True) as mesh:
        response = await _detect(f"127.0.0.1:{mesh.orchestrator.port}", None)
        assert len(response.verdicts) == 2


def test_serve_refuses_plaintext_on_a_public_address_with_a_clear_message() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentinel",
            "serve",
            "orchestrator",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")},
    )
    assert result.returncode != 0
    assert "refusing plaintext gRPC on '0.0.0.0'" in result.stdout + result.stderr


async def test_serve_all_with_tls_from_the_environment_keeps_detection_on(pki, tmp_path) -> None:
    """TLS and a metrics port set as variables are the public face of `serve all`: the local
    specialists must not inherit them (they used to serve TLS to a plaintext orchestrator, so
    every verdict was degraded, and collide on the metrics port)."""
    from sentinel.app.local_mesh import serve_command, wait_ready

    ready = tmp_path / "ready"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env |= {
        "SENTINEL_TLS_CERT_FILE": str(pki["server.pem"]),
        "SENTINEL_TLS_KEY_FILE": str(pki["server.key"]),
        "SENTINEL_METRICS_PORT": "0",
        "SENTINEL_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        serve_command("all", ready, "--port", "0"), env=env, stdin=subprocess.DEVNULL
    )
    try:
        port = await wait_ready(process, ready, asyncio.get_running_loop().time() + 60)
        response = await _detect(f"localhost:{port}", _credentials(pki))
        assert len(response.verdicts) == 2
        for verdict in response.verdicts:
            assert verdict.status != pb.VERDICT_STATUS_DEGRADED, verdict
            assert {v.specialist for v in verdict.votes} == {"threshold", "statistical", "model"}
    finally:
        process.terminate()
        process.wait(timeout=30)
