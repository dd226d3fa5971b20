"""The worker's main process stays light: training runs in a process of its own."""

from __future__ import annotations

import pytest

from tests.imported_modules import heavy_modules_imported


@pytest.mark.backend_independent
def test_the_worker_process_imports_no_torch_transformers_or_torchvision() -> None:
    # Each of these costs the worker seconds at every start (and every restart of a container),
    # for nothing: its training processes import them themselves.
    heavy = ["torch", "transformers", "torchvision"]
    assert heavy_modules_imported(["worker.tasks", "worker.celery_app"], heavy) == []
