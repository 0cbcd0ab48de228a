"""Checkpoint files: everything the orchestrator remembers, in one versioned, atomic file.

`<state_dir>/checkpoint.npz` is a zip of numpy arrays (no pickles): the per-sensor history
arrays, the sensor ids (UTF-8, newline-separated: ids are printable), and `meta` (JSON:
format version, time, declarations, open incidents, dedup memory). Writing goes to a
temporary file that is fsynced and then renamed over the checkpoint, and the checkpoint it
replaces is kept as `checkpoint.prev.npz`: a crash mid-write leaves the last good checkpoint,
and a checkpoint that fails to read (truncated, corrupt: zip CRCs are checked) or was written
by another format version is refused with a log line naming why, falling back to the previous.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .history import HistorySnapshot

log = logging.getLogger(__name__)

# 2: dedup entries carry the digest of their readings (hex) as a fourth element.
FORMAT_VERSION = 2
CURRENT = "checkpoint.npz"
PREVIOUS = "checkpoint.prev.npz"
_TEMPORARY = "checkpoint.npz.tmp"


class CheckpointRefused(ValueError):
    """A checkpoint file that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    written_at: float  # Unix seconds
    history: HistorySnapshot
    incidents: list[dict]
    dedup: list[list]  # [client, batch id, readings, digest hex]


def write_checkpoint(state_dir: str | Path, checkpoint: Checkpoint) -> int:
    """Write atomically; returns the file's size in bytes. Blocking (run it in a thread)."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "written_at": checkpoint.written_at,
        "sensors": len(checkpoint.history.sensor_ids),
        "history": checkpoint.history.meta,
        "incidents": checkpoint.incidents,
        "dedup": checkpoint.dedup,
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
        "sensor_ids": np.frombuffer("\n".join(checkpoint.history.sensor_ids).encode(), np.uint8),
        **{f"history/{name}": array for name, array in checkpoint.history.arrays.items()},
    }
    temporary = directory / _TEMPORARY
    with open(temporary, "wb") as file:
        np.savez(file, allow_pickle=False, **arrays)
        file.flush()
        os.fsync(file.fileno())
    current = directory / CURRENT
    if current.exists():
        os.replace(current, directory / PREVIOUS)
    os.replace(temporary, current)
    _fsync_directory(directory)
    return current.stat().st_size


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read one checkpoint file, or raise CheckpointRefused saying why it cannot be used."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            if "meta" not in files:
                raise CheckpointRefused("no meta record")
            meta = json.loads(bytes(data["meta"]).decode())
            version = meta.get("format_version")
            if version != FORMAT_VERSION:
                raise CheckpointRefused(
                    f"format version {version}, this orchestrator reads {FORMAT_VERSION}"
                )
            text = bytes(data["sensor_ids"]).decode()
            sensor_ids = text.split("\n") if text else []
            arrays = {
                name.removeprefix("history/"): data[name]
                for name in files
                if name.startswith("history/")
            }
    except CheckpointRefused:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointRefused(f"unreadable: {error}") from error
    if len(sensor_ids) != meta["sensors"] or any(
        a.shape[0] != len(sensor_ids) for a in arrays.values()
    ):
        raise CheckpointRefused("sensor count does not match its arrays")
    return Checkpoint(
        written_at=float(meta["written_at"]),
        history=HistorySnapshot(meta["history"], sensor_ids, arrays),
        incidents=meta["incidents"],
        dedup=meta["dedup"],
    )


def load_latest(
    state_dir: str | Path, validate: Callable[[Checkpoint], None] | None = None
) -> Checkpoint | None:
    """The newest usable checkpoint in `state_dir` (current, else previous), or None.
    `validate` may refuse one (raising CheckpointRefused) before anything is loaded from it."""
    directory = Path(state_dir)
    for name in (CURRENT, PREVIOUS):
        path = directory / name
        if not path.exists():
            continue
        started = time.perf_counter()
        try:
            checkpoint = read_checkpoint(path)
            if validate is not None:
                validate(checkpoint)
        except CheckpointRefused as error:
            log.error("checkpoint refused", extra={"path": str(path), "reason": str(error)})
            continue
        log.info(
            "checkpoint read",
            extra={
                "path": str(path),
                "sensors": len(checkpoint.history.sensor_ids),
                "age_seconds": round(time.time() - checkpoint.written_at, 1),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return checkpoint
    return None


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
