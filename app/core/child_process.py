"""Child processes that do not outlive the process that started them.

`PR_SET_PDEATHSIG` (Linux) makes the kernel send the child a signal when its parent dies, even
by SIGKILL (the OOM killer), which no cleanup in the parent survives. Elsewhere it is a no-op:
the parent's own stop paths are then the only ones.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def parent_death_signal(
    stop_signal: signal.Signals = signal.SIGTERM,
) -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen` that asks for `stop_signal` on the parent's death.

    The kernel ties it to the thread that forks, so start long-lived children from a thread
    that lives as long as they should (the main thread, or the one that supervises them).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def ask_for_the_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(stop_signal), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request counted
            os.kill(os.getpid(), stop_signal)

    return ask_for_the_signal
