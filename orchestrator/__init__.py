"""The orchestrator agent: ingest, windows, fan-out, combine, incidents, alerts."""
