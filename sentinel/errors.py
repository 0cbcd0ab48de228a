"""Transport-free errors that servicers map onto gRPC status codes."""

from __future__ import annotations


class InvalidArgument(ValueError):
    """Bad client input; becomes INVALID_ARGUMENT with a message naming the field."""

    def __init__(self, field: str, problem: str, batch_id: int | None = None) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
        self.batch_id = batch_id  # the refused batch of a stream, when known


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


# Trailing metadata of a stream ended because of one batch: that batch's id, so the client can
# hand exactly that batch back to its caller and go on with the rest.
REJECTED_BATCH_HEADER = "x-sentinel-rejected-batch-id"
