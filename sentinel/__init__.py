"""Sentinel Mesh: the shared core (generated stubs, server scaffold, telemetry, settings, client).

The roles live in `sentinel.orchestrator` and `sentinel.specialists`, the application in
`sentinel.app`; imports only point down (application → roles → core → stubs).
"""
