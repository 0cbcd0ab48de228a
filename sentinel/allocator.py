"""Allocator tuning for processes that build large numpy temporaries on every request.

glibc hands out blocks above its mmap threshold (128 KiB to start) as fresh mappings and
gives freed memory at the top of the heap back to the OS past its trim threshold. Every
round of scoring then allocates its multi-megabyte temporaries (windows, sorted copies,
feature matrices) in pages the kernel has to fault in and zero again: measured, that was
0.25 of the model engine's 0.58 ms per 1,000 rows spent computing features. Keeping freed
memory for reuse removes it. The cost is that memory freed after a burst is not returned
to the OS (up to the kept amount), which the peak a container must allow for covers anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses a larger mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def keep_freed_memory(keep_bytes: int) -> bool:
    """Serve blocks up to 32 MiB from the heap and keep up to `keep_bytes` of freed heap for
    reuse. False (and nothing changed) for 0, or where the C library has no mallopt (musl:
    logged)."""
    if keep_bytes <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        log.info("allocator tuning unavailable (no glibc mallopt); using the C library defaults")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    threshold = min(keep_bytes, _MMAP_THRESHOLD_MAX)
    keep = min(keep_bytes, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, keep))
