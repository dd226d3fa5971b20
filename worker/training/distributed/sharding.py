"""Each rank's disjoint share of a global batch.

Every rank draws the same seeded order of the epoch and cuts it into the same global batches;
rank r keeps the r-th of `world` near-equal contiguous slices of each. So the union of the
shares is exactly the batch one process would train on, in the same order.
"""

from __future__ import annotations

import numpy as np


def share_sizes(global_size: int, world: int) -> list[int]:
    """How many rows each rank gets of a batch of `global_size`: sizes differ by at most one."""
    base, extra = divmod(global_size, world)
    return [base + (1 if rank < extra else 0) for rank in range(world)]


def share_of(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank `rank`'s slice of one global batch's rows."""
    sizes = share_sizes(len(rows), world)
    start = sum(sizes[:rank])
    return rows[start : start + sizes[rank]]
