"""The line protocol between a training process and its supervisor: one JSON object per line.

The run writes events to a pipe of their own (never stdout, where libraries print); the
supervisor writes `STOP` to the run's stdin to ask it to stop at its next step.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from typing import Any

from worker.training.jsonable import from_json_dict, to_json_dict
from worker.training.progress import CheckpointInfo, Notice, RunResult, StepProgress

STOP = b"stop\n"
# Signals that say a run's own code broke (its job fails); other signals stop it from outside.
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
# `RunError.type` of a data-parallel run one of whose ranks was killed from outside: the job is
# queued again instead of failing (worker.training.distributed.launch writes it).
RANK_LOST = "RankLost"


@dataclass(frozen=True)
class Evaluation:
    epoch: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class RunError:
    """The exception that ended a run, as its type name and message."""

    type: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> RunError:
        return cls(type=type(error).__name__, message=str(error))

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


Event = StepProgress | Evaluation | CheckpointInfo | Notice | RunResult | RunError

EVENT_TYPES: dict[str, type[Event]] = {
    "step": StepProgress,
    "evaluation": Evaluation,
    "checkpoint": CheckpointInfo,
    "notice": Notice,
    "result": RunResult,
    "error": RunError,
}
EVENT_NAMES = {event_type: name for name, event_type in EVENT_TYPES.items()}


def encode(event: Event) -> bytes:
    return json.dumps({"event": EVENT_NAMES[type(event)], **to_json_dict(event)}).encode() + b"\n"


def decode(line: bytes) -> Event:
    """One event from one line; a line that is not an event raises ValueError."""
    data = json.loads(line)
    if not isinstance(data, dict) or data.get("event") not in EVENT_TYPES:
        raise ValueError(f"not a training event: {line[:200]!r}")
    event_type = EVENT_TYPES[data.pop("event")]
    return from_json_dict(event_type, data)
