"""`python -m worker.training.distributed.launch`: one training run as N processes per machine,
started by torch's own elastic launcher (`torch.distributed.launcher.api.elastic_launch`, the
API under `torchrun`).

The supervisor starts this in place of `python -m worker.training` when a job asks for more
than one device; on several machines the same command runs on each with `--nnodes` and one
`--rdzv-endpoint`. Events reach the supervisor as before: the launcher puts the events pipe on
its stdout, every rank inherits it, and rank 0 alone writes to it. No restarts: a rank that
dies ends the attempt (the others are stopped). A rank killed by a signal that is not a crash
(SIGKILL from the kernel's OOM killer or an operator, SIGTERM, a lost machine's SIGHUP) is
reported as the event `RankLost`, last, after whatever the other ranks said as they failed;
the worker then queues the job again to resume from its last checkpoint, the attempt counted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from worker.training.protocol import CRASH_SIGNALS, RANK_LOST, RunError, encode

STANDALONE_ENDPOINT = "localhost:0"
# How long the agent gives the other ranks to stop once one has failed, before SIGKILL.
SHUTDOWN_SECONDS = 5


def launch_config(
    *,
    nproc: int,
    nnodes: int = 1,
    rdzv_endpoint: str = "",
    run_id: str = "clipft",
    rdzv_timeout_seconds: int = 300,
) -> LaunchConfig:
    """The launcher's settings: a c10d rendezvous, on localhost for one machine."""
    return LaunchConfig(
        min_nodes=nnodes,
        max_nodes=nnodes,
        nproc_per_node=nproc,
        run_id=run_id,
        role="clipft-training",
        rdzv_backend="c10d",
        rdzv_endpoint=rdzv_endpoint or STANDALONE_ENDPOINT,
        rdzv_configs={"timeout": rdzv_timeout_seconds},
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
        shutdown_timeout=SHUTDOWN_SECONDS,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.training.distributed.launch")
    parser.add_argument("--nproc", type=int, required=True, help="Ranks on this machine.")
    parser.add_argument("--nnodes", type=int, default=1, help="Machines in the run.")
    parser.add_argument(
        "--rdzv-endpoint", default="", help="host:port of the rendezvous (several machines)."
    )
    parser.add_argument("--run-id", default="clipft", help="The same on every machine.")
    parser.add_argument("--events-fd", type=int, default=1, help="Descriptor events go to.")
    parser.add_argument(
        "training", nargs=argparse.REMAINDER, help="-- then `python -m worker.training` args."
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    training = [arg for arg in args.training if arg != "--"]
    if args.events_fd != 1:
        os.dup2(args.events_fd, 1)  # every rank inherits stdout; rank 0 writes events there
        os.close(args.events_fd)
    # Ranks on one machine's CPU share its cores (torchrun sets the same default).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    config = launch_config(
        nproc=args.nproc, nnodes=args.nnodes, rdzv_endpoint=args.rdzv_endpoint, run_id=args.run_id
    )
    try:
        elastic_launch(config, sys.executable)("-m", "worker.training", *training)
    except ChildFailedError as error:
        lost = rank_lost(error, world=args.nproc * args.nnodes)
        if lost is not None:
            os.write(1, encode(lost))
        raise


def rank_lost(error: ChildFailedError, *, world: int) -> RunError | None:
    """A `RankLost` event if the first rank to fail was killed by a signal that is no crash.

    The launcher stamps failures to the second, and a rank that loses its peer fails in the
    same second with an exit code of its own: among the first, a signalled one is the cause."""

    def order(rank: int) -> tuple[int, bool]:
        failure = error.failures[rank]
        return failure.timestamp, failure.exitcode >= 0

    rank = min(error.failures, key=order)
    exitcode = error.failures[rank].exitcode
    if exitcode >= 0:
        return None
    try:
        killer = signal.Signals(-exitcode)
    except ValueError:
        return None
    if killer in CRASH_SIGNALS:
        return None
    return RunError(type=RANK_LOST, message=f"rank {rank} of {world} was killed by {killer.name}")


if __name__ == "__main__":
    main()
