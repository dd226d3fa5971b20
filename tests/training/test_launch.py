"""Which failures of a data-parallel run count as a lost rank (the job is queued again)."""

from __future__ import annotations

import signal

import pytest
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from worker.training.distributed.launch import rank_lost
from worker.training.protocol import RANK_LOST


def failure(rank: int, exitcode: int, timestamp: int) -> ProcessFailure:
    # No error file: what the launcher records for a rank that died without torch's @record.
    found = ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file="")
    found.timestamp = timestamp
    return found


def failed(*failures: ProcessFailure) -> ChildFailedError:
    return ChildFailedError("worker.training", {found.local_rank: found for found in failures})


@pytest.mark.parametrize("killer", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_a_rank_killed_from_outside_is_lost_even_if_its_peer_failed_in_the_same_second(
    killer: signal.Signals,
) -> None:
    lost = rank_lost(failed(failure(0, 1, 100), failure(1, -killer, 100)), world=2)
    assert lost is not None and lost.type == RANK_LOST
    assert lost.message == f"rank 1 of 2 was killed by {killer.name}"


@pytest.mark.parametrize(
    "failures",
    [
        # A crash of the rank's own code fails the job, as in one process.
        (failure(0, 1, 100), failure(1, -signal.SIGSEGV, 100)),
        # A rank's error came first; the other rank was stopped after it.
        (failure(0, 1, 100), failure(1, -signal.SIGTERM, 101)),
        (failure(0, 1, 100),),
    ],
)
def test_a_crash_or_an_error_of_its_own_is_no_lost_rank(
    failures: tuple[ProcessFailure, ...],
) -> None:
    assert rank_lost(failed(*failures), world=2) is None
