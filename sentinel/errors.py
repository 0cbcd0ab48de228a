"""Transport-free errors that servicers map onto gRPC status codes."""

from __future__ import annotations


class InvalidArgument(ValueError):
    """Bad client input; becomes INVALID_ARGUMENT with a message naming the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Overloaded(RuntimeError):
    """A configured limit is reached; becomes RESOURCE_EXHAUSTED (back off, do not eject)."""
