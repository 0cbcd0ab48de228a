"""`sentinel.client` is usable on its own: a process that streams to a mesh through
TelemetryClient loads no server-side module (no role, no server scaffold, no application)."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap

CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from sentinel.client import TelemetryClient
    from sentinel.v1 import orchestrator_pb2 as pb

    async def main():
        acks = []
        async with TelemetryClient(sys.argv[1], on_ack=acks.append) as client:
            await client.send([pb.Reading(sensor_id="alone-1", value=1.0)])
        return len(acks)

    acked = asyncio.run(main())
    print(json.dumps({"acked": acked, "modules": sorted(sys.modules)}))
    """
)
# (Not grpc_health / grpc_reflection: `import grpc` itself loads them when installed.)
SERVER_SIDE = (
    "sentinel.orchestrator",
    "sentinel.specialists",
    "sentinel.server",
    "sentinel.telemetry",
    "sentinel.app",
    "prometheus_client",
)


async def test_a_client_process_streams_without_loading_the_servers(mesh) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-c", CLIENT, mesh.target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    report = json.loads(stdout)
    assert report["acked"] == 1
    assert "sentinel.client" in report["modules"]
    loaded = [m for m in report["modules"] if m.startswith(SERVER_SIDE)]
    assert loaded == []
