"""A test-only hook: make a training process crash the way a real one can, once, on request."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

# Names a file; while it exists, the next training process to report a step crashes as it says:
# a signal name (`SIGSEGV`) is raised on the process, a number is its `os._exit` code, and
# `HANG` makes it stop making progress for good.
CRASH_FILE_VARIABLE = "CLIPFT_TEST_CRASH_FILE"


def crash_if_a_test_asks() -> None:
    """Crash as the file named by CLIPFT_TEST_CRASH_FILE says, removing it; else do nothing."""
    name = os.environ.get(CRASH_FILE_VARIABLE)
    if not name:
        return
    order_file = Path(name)
    try:
        order = order_file.read_text().strip()
        order_file.unlink()  # one crash per request: the next job runs normally
    except FileNotFoundError:
        return
    if order == "HANG":
        while True:  # a training loop stuck for good (a deadlock, a wedged device)
            time.sleep(3600)
    if order.startswith("SIG"):
        os.kill(os.getpid(), signal.Signals[order])
    os._exit(int(order))
