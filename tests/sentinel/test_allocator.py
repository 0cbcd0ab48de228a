"""keep_freed_memory: big temporaries reuse freed heap instead of faulting in fresh pages."""

import json
import subprocess
import sys

from sentinel.allocator import keep_freed_memory

# 50 rounds of four 3 MiB temporaries alive at once, then freed (what a scoring round does
# with its windows, sorted copies and feature matrices); prints the page faults they took
# after a warm-up.
_PROBE = """
import json, resource, sys
import numpy as np
from sentinel.allocator import keep_freed_memory
tuned = keep_freed_memory(int(sys.argv[1]))
def rounds(n):
    for _ in range(n):
        temporaries = [np.ones(3 * 1024 * 1024 // 8) for _ in range(4)]
        del temporaries
rounds(3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(50)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": tuned, "faults": faults}))
"""


def _probe(keep_bytes: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(keep_bytes)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)


def test_kept_memory_is_reused_without_page_faults() -> None:
    default = _probe(0)
    tuned = _probe(64 * 1024 * 1024)
    assert not default["tuned"] and tuned["tuned"]
    # Untuned, glibc trims the freed 12 MiB every round and faults it in again next round
    # (~3,000 faults of 4 KiB pages per round).
    assert default["faults"] > 50 * 1_000, default
    assert tuned["faults"] < 100, tuned


def test_zero_keeps_the_c_library_defaults() -> None:
    assert keep_freed_memory(0) is False
