"""Events survive the trip from a training process to its supervisor unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.jobs.event_types import EventType
from worker.training.progress import CheckpointInfo, Notice, RunResult, StepProgress
from worker.training.protocol import Evaluation, Event, RunError, decode, encode

EVENTS: list[Event] = [
    StepProgress(
        epoch=1,
        epochs=3,
        step=4,
        total_steps=12,
        train_loss=0.5,
        learning_rate=1e-3,
        samples_per_second=80.0,
        eta_seconds=2.5,
    ),
    Evaluation(epoch=0, metrics={"val_accuracy": 0.25}),
    CheckpointInfo(
        epoch=1,
        step=4,
        path=Path("/data/jobs/x/epoch-1"),
        metric_name="val_accuracy",
        metric_value=None,
    ),
    RunResult(
        stopped=False,
        best_checkpoint=Path("/data/jobs/x/epoch-1"),
        best_metrics={"epoch": 1, "val_accuracy": 1.0},
        history=[{"epoch": 0}, {"epoch": 1, "val_accuracy": 1.0}],
    ),
    RunResult(stopped=True, best_checkpoint=None),
    RunError(type="OutOfMemoryError", message="CUDA out of memory."),
    Notice(EventType.EARLY_STOP, "stopped early", {"epoch": 2}),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: type(event).__name__)
def test_every_event_decodes_to_what_was_encoded(event: Event) -> None:
    line = encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == event


def test_a_line_that_is_not_an_event_is_refused() -> None:
    with pytest.raises(ValueError, match="not a training event"):
        decode(b'{"epoch": 1}')


def test_an_error_reads_as_type_and_message() -> None:
    assert str(RunError.of(FileNotFoundError("no manifest.json"))) == (
        "FileNotFoundError: no manifest.json"
    )
    assert str(RunError.of(KeyboardInterrupt())) == "KeyboardInterrupt"


def test_a_notice_comes_back_with_its_event_type_and_an_unknown_type_is_refused() -> None:
    notice = decode(encode(Notice(EventType.PHASE, "probe phase from epoch 1")))
    assert isinstance(notice, Notice) and notice.type is EventType.PHASE
    with pytest.raises(ValueError, match="not_an_event_type"):
        decode(b'{"event": "notice", "type": "not_an_event_type", "message": "?"}')
