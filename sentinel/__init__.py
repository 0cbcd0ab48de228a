"""Sentinel Mesh: shared code (generated stubs, server scaffold, telemetry, config, CLI)."""
