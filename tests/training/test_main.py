"""`python -m worker.training` from a shell: events on stdout, and an orphan stops by itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.training.runs import tiny_config
from tests.training.synthetic_folder import write_synthetic_folder
from worker.training.progress import RunResult, StepProgress
from worker.training.protocol import decode


def test_a_run_whose_supervisor_is_gone_stops_at_its_next_step(tmp_path: Path) -> None:
    write_synthetic_folder(tmp_path / "dataset", per_class=8)
    config = tiny_config(tmp_path / "dataset", epochs=500, batch_size=8, prepare_workers=1)
    (tmp_path / "config.json").write_text(json.dumps(config.to_json()))
    command = [
        sys.executable, "-m", "worker.training",
        "--config", str(tmp_path / "config.json"),
        "--out-dir", str(tmp_path / "out"),
        "--stdin-control",
    ]  # fmt: skip
    run = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert run.stdin is not None and run.stdout is not None
    while not isinstance(decode(run.stdout.readline()), StepProgress):
        pass
    run.stdin.close()  # what a dying supervisor leaves behind: stdin at its end
    last = [decode(line) for line in run.stdout][-1]
    assert run.wait(timeout=30) == 0
    assert isinstance(last, RunResult) and last.stopped
    assert last.history[-1]["epoch"] < 500
