"""Child processes die with the process that started them, on every exit path of the parent.

A parent that is SIGKILLed (or dies of SIGHUP, or crashes) runs no cleanup, so its children
cannot rely on being stopped: each child started through `child_env` watches its parent itself.

- Linux: `prctl(PR_SET_PDEATHSIG, SIGTERM)` at child start, so the kernel sends SIGTERM the
  moment the parent goes. The kernel ties it to the parent *thread* that forked, so the parent
  asks for it only when it spawns from its main thread (`SENTINEL_PDEATHSIG=1`).
- Everywhere: a daemon thread notices the parent is gone (`getppid()` changed: re-parented to
  init or a subreaper) within `POLL_SECONDS` and sends SIGTERM.
- Either way SIGTERM runs the child's normal drain; a child still alive `KILL_AFTER_SECONDS`
  later is SIGKILLed by the same thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping

PARENT_ENV = "SENTINEL_PARENT_PID"
PDEATHSIG_ENV = "SENTINEL_PDEATHSIG"
PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.5
KILL_AFTER_SECONDS = 15.0


def child_env() -> dict[str, str]:
    """Variables that make a `sentinel` child started now by this process die with it."""
    env = {PARENT_ENV: str(os.getpid())}
    if threading.current_thread() is threading.main_thread():
        env[PDEATHSIG_ENV] = "1"
    return env


def die_with_parent(environ: Mapping[str, str] | None = None) -> bool:
    """In a child: arrange to stop when the parent named by `SENTINEL_PARENT_PID` exits.

    Returns False when the variable is unset (started by a person or a supervisor)."""
    environ = os.environ if environ is None else environ
    try:
        parent = int(environ.get(PARENT_ENV, ""))
    except ValueError:
        return False
    kernel = (
        environ.get(PDEATHSIG_ENV) == "1"
        and sys.platform.startswith("linux")
        and _set_pdeathsig(signal.SIGTERM)
    )
    # The parent may have died before prctl took effect: the watcher's first check covers it.
    threading.Thread(
        target=_watch,
        args=(parent, kernel and os.getppid() == parent),
        name="sentinel-lifeline",
        daemon=True,
    ).start()
    return True


def _set_pdeathsig(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int, kernel_signals: bool) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    if not kernel_signals:
        # Once only: a second SIGTERM would cut the drain short (the handler is one-shot).
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(KILL_AFTER_SECONDS)
    os.kill(os.getpid(), signal.SIGKILL)
