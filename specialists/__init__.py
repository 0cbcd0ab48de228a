"""Specialist engines: one scaffold serving `sentinel.v1.Specialist` and the engines behind it."""
