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


class BatchConflict(ValueError):
    """A batch id already accepted from this client with different readings; becomes
    ALREADY_EXISTS (not retryable: the client must send it under a new batch id)."""

    def __init__(self, batch_id: int, index: int = 0) -> None:
        super().__init__(
            f"batch_id {batch_id}: already accepted from this client with different readings; "
            "send new readings under a new batch_id"
        )
        self.batch_id = batch_id
        self.index = index  # position of the batch in the group that was being prepared
