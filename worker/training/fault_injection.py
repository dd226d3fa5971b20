"""Fault injection for the fault suite: make a training process fail the way a real one can
(a signal, an exit code, a hang, a full disk), once, on request.

It lives in the training process because that is where the fault must happen, at a chosen
step, in a process the tests only start through the worker. It does nothing, and costs one
environment lookup per run, unless CLIPFT_TEST_CRASH_FILE is set.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

# Names a file; while it exists, the next training process to report a step crashes as it says:
# a signal name (`SIGSEGV`) is raised on the process, a number is its `os._exit` code, `HANG`
# makes it stop making progress for good, `PAUSE` holds it at that step until the test removes
# the file `<name>.paused` that the hook writes or the run is asked to stop, and `ENOSPC` raises
# the error of a full disk. A suffix `@N` waits for the first step of epoch N (so that earlier
# epochs left checkpoints).
CRASH_FILE_VARIABLE = "CLIPFT_TEST_CRASH_FILE"
PAUSE_POLL_SECONDS = 0.05


def paused_marker(order_file: Path) -> Path:
    """The file a paused run waits on: it exists exactly while the run is held."""
    return order_file.with_name(order_file.name + ".paused")


def fault_requested() -> bool:
    """Whether a test set the hook up at all (otherwise the run never looks again)."""
    return bool(os.environ.get(CRASH_FILE_VARIABLE))


def inject_requested_fault(epoch: int, stop_requested: Callable[[], bool] = lambda: False) -> None:
    """Fail as the file named by CLIPFT_TEST_CRASH_FILE says, removing it; else do nothing."""
    name = os.environ.get(CRASH_FILE_VARIABLE)
    if not name:
        return
    order_file = Path(name)
    try:
        order, _, at_epoch = order_file.read_text().strip().partition("@")
        if at_epoch and epoch < int(at_epoch):
            return
        order_file.unlink()  # one crash per request: the next job runs normally
    except FileNotFoundError:
        return
    if order == "ENOSPC":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if order == "PAUSE":
        # A run held at a known step: a test acts on a job that is certainly mid-training.
        marker = paused_marker(order_file)
        marker.touch()
        while marker.exists() and not stop_requested():
            time.sleep(PAUSE_POLL_SECONDS)
        return
    if order == "HANG":
        while True:  # a training loop stuck for good (a deadlock, a wedged device)
            time.sleep(3600)
    if order.startswith("SIG"):
        os.kill(os.getpid(), signal.Signals[order])
    os._exit(int(order))
