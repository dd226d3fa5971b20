"""The folder of Prometheus files for a process that counts in several processes.

prometheus_client names each process's files by pid. Two api containers both count pids from
1, so a folder they share (the data dir, which machines share) would mix and wipe each other's
counters: every start makes a fresh folder of its own on local disk instead.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from app.core.config import Settings


def use_private_metrics_dir(*, settings: Settings, role: str) -> Path:
    """Make this start's own folder, point PROMETHEUS_MULTIPROC_DIR at it, remove it at exit.

    Set before the instruments are made: the child processes then write their values there.
    """
    parent = settings.metrics_dir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    metrics_dir = Path(tempfile.mkdtemp(prefix=f"clipft-{role}-metrics-", dir=parent))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    owner = os.getpid()

    def remove() -> None:
        # A forked pool process inherits this hook; only the process that made the folder
        # removes it.
        if os.getpid() == owner:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    atexit.register(remove)
    return metrics_dir
