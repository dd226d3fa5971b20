"""The worker's main process stays light: training runs in a process of its own."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.backend_independent
def test_the_worker_process_imports_no_torch_transformers_or_torchvision() -> None:
    # Each of these costs the worker seconds at every start (and every restart of a container),
    # for nothing: its training processes import them themselves.
    heavy = ["torch", "transformers", "torchvision"]
    code = (
        "import sys, worker.tasks, worker.celery_app; "
        f"print(' '.join(name for name in {heavy!r} if name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
