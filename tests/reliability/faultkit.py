"""Helpers of the fault-matrix tests: meshes of real processes, counting producers, certificates."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from mesh_fixtures import no_tracing
from sentinel.orchestrator.main import OrchestratorProcess
from sentinel.orchestrator.settings import OrchestratorSettings

from sentinel.app.local_mesh import LocalMesh, RoleChild
from sentinel.app.soak import Producer
from sentinel.v1 import orchestrator_pb2 as pb

ENGINES = ("threshold", "statistical", "model")


async def wait_until(
    predicate: Callable[[], bool], guard: float, what: str, step: float = 0.05
) -> None:
    """Poll `predicate`; the guard only stops a hang (it is not a performance assertion)."""
    deadline = time.monotonic() + guard
    while not predicate():
        assert time.monotonic() < deadline, f"hang guard: {what} not seen within {guard}s"
        await asyncio.sleep(step)


@dataclass
class SeenVerdict:
    batch_id: int
    status: int
    missing: tuple[str, ...]
    voters: frozenset[str]


class RecordingProducer(Producer):
    """A soak Producer that also keeps every verdict's status, missing and voting engines."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[SeenVerdict] = []
        self.ack_times: list[float] = []
        self.history: set[int] = set()

    def _on_verdicts(self, batch_id: int, verdicts: list[pb.Verdict]) -> None:
        super()._on_verdicts(batch_id, verdicts)
        self.seen.extend(
            SeenVerdict(
                batch_id, v.status, tuple(v.missing), frozenset(vote.specialist for vote in v.votes)
            )
            for v in verdicts
        )

    def _on_ack(self, ack: pb.BatchAck) -> None:
        super()._on_ack(ack)
        self.ack_times.append(time.monotonic())

    async def warm_up(self, readings_per_sensor: int = 70) -> None:
        """History first, so window engines are past warming up before faults start."""
        for _ in range(readings_per_sensor // 10):
            batch_id = await self.client.send(self.readings(10), verdicts=pb.VERDICT_MODE_NONE)
            self.rows[batch_id] = len(self.sensors) * 10
            self.history.add(batch_id)  # NONE mode: no verdicts expected
        await self.client.flush()

    def assert_exact(self, scored: int) -> None:
        """Every batch acked exactly once, every reading scored once and given one verdict."""
        assert self.client.unacked == 0
        assert all(self.acks[b] == 1 for b in self.rows), "a batch was not acked exactly once"
        assert self.acked_readings == self.sent_readings, "lost: acked < sent"
        assert scored == self.sent_readings, f"scored {scored} != sent {self.sent_readings}"
        expected = {b: 0 if b in self.history else rows for b, rows in self.rows.items()}
        wrong = {b: (self.verdicts[b], n) for b, n in expected.items() if self.verdicts[b] != n}
        assert not wrong, f"batches whose verdict count is not one per reading: {wrong}"


def in_process_orchestrator(targets: str, **overrides) -> OrchestratorProcess:
    options = {"port": 0, "drain_delay_seconds": 0, "shutdown_grace_seconds": 1, **overrides}
    settings = OrchestratorSettings(specialists=targets, **options)
    return OrchestratorProcess(settings, no_tracing())


def readings_received(orchestrator: OrchestratorProcess) -> int:
    return int(
        orchestrator.registry.get_sample_value("sentinel_orchestrator_readings_received_total") or 0
    )


def quiet_mesh(engines=ENGINES) -> LocalMesh:
    """Specialists as child processes (killable) that log errors only."""
    return LocalMesh(engines=tuple(engines), log_level="ERROR", env={"GRPC_VERBOSITY": "ERROR"})


@contextlib.asynccontextmanager
async def specialists_and_orchestrator(
    engines=ENGINES, **overrides
) -> AsyncIterator[tuple[LocalMesh, OrchestratorProcess]]:
    """Specialists as child processes (killable), the orchestrator in this process."""
    options = {"port": 0, "drain_delay_seconds": 0, "shutdown_grace_seconds": 1, **overrides}
    async with quiet_mesh(engines) as mesh:
        yield mesh, await mesh.start_orchestrator(OrchestratorSettings(**options), no_tracing())


@contextlib.asynccontextmanager
async def process_mesh(engines=ENGINES, **env: str) -> AsyncIterator[tuple[LocalMesh, RoleChild]]:
    """Every role its own OS process: the specialists plus `sentinel serve orchestrator`,
    whose final metrics (`lifetime_totals_of`) count what each incarnation scored."""
    async with quiet_mesh(engines) as mesh:
        orchestrator = await mesh.start_orchestrator_child(
            env={
                "SENTINEL_DRAIN_DELAY_SECONDS": "0.2",
                "SENTINEL_SHUTDOWN_GRACE_SECONDS": "5",
                **env,
            },
            metrics_port=0,
            record_final_metrics=True,
        )
        yield mesh, orchestrator


class BackgroundProducer:
    """A well-behaved producer streaming on its own thread and loop while a test misbehaves."""

    def __init__(self, target: str, sensors: int = 4, interval: float = 0.05) -> None:
        self._target = target
        self._sensors = [f"steady-{i}" for i in range(sensors)]
        self._interval = interval
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.producer: Producer | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Future | None = None

    def __enter__(self) -> BackgroundProducer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self.producer = Producer(self._target, "steady", self._sensors, seed=7)
        self.producer.client.start()
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self.producer.run(self._stop, self._interval, 2))

    async def _finish(self) -> None:
        assert self._stop is not None and self._task is not None and self.producer is not None
        self._stop.set()
        await self._task
        await asyncio.wait_for(self.producer.client.flush(), 30)
        await asyncio.wait_for(self.producer.client.close(), 10)

    def finish(self) -> Producer:
        """Stop, wait for every batch to be acked (raises if the stream failed), return counts."""
        try:
            asyncio.run_coroutine_threadsafe(self._finish(), self._loop).result(60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        assert self.producer is not None
        return self.producer

    def __exit__(self, *exc) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.finish()


# -- certificates ------------------------------------------------------------------------------


@dataclass
class Pki:
    """PEM files of a throwaway CA, a server certificate for 127.0.0.1/localhost and clients."""

    directory: Path
    files: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Path:
        return self.files[name]

    def read(self, name: str) -> bytes:
        return self.files[name].read_bytes()


def make_pki(directory: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    pki = Pki(directory)

    def key_pem(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(name: str, data: bytes) -> None:
        path = directory / name
        path.write_bytes(data)
        pki.files[name] = path

    def ca(common_name: str):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),  # fmt: skip
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(ca_key, ca_cert, common_name: str, usage, sans=None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_key, ca_cert = ca("sentinel test CA")
    write("ca.pem", ca_cert.public_bytes(pem))
    server_key, server_cert = leaf(
        ca_key, ca_cert, "orchestrator", ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )  # fmt: skip
    write("server.pem", server_cert.public_bytes(pem))
    write("server.key", key_pem(server_key))
    client_key, client_cert = leaf(ca_key, ca_cert, "gateway-1", ExtendedKeyUsageOID.CLIENT_AUTH)
    write("client.pem", client_cert.public_bytes(pem))
    write("client.key", key_pem(client_key))
    rogue_key, rogue_cert = ca("rogue CA")
    other_key, other_cert = leaf(rogue_key, rogue_cert, "intruder", ExtendedKeyUsageOID.CLIENT_AUTH)
    write("rogue-client.pem", other_cert.public_bytes(pem))
    write("rogue-client.key", key_pem(other_key))
    return pki
