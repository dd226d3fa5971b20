"""The contrastive loss over the global batch, computed on every rank from gathered features.

Like open_clip's `gather_features`: each rank gathers every rank's image and text features,
its own share keeping its graph, and computes the loss of the whole batch. The gradient of that
loss reaches this rank's parameters only through its own features, so the sum over ranks of
these gradients is the one-process gradient; DDP averages, so the loss it sees is weighted to
make that average the sum. The value the loop reads stays this rank's share of the global loss.
"""

from __future__ import annotations

import torch

from worker.training.distributed.ranks import SingleProcess
from worker.training.losses import contrastive_loss


def global_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    ranks: SingleProcess,
) -> torch.Tensor:
    """This rank's share of the global batch's contrastive loss (the loss itself on one rank)."""
    if not ranks.distributed:
        return contrastive_loss(image_features, text_features, logit_scale)
    whole = contrastive_loss(
        ranks.gather_rows(image_features), ranks.gather_rows(text_features), logit_scale
    )
    # The loop weighs a rank's mean loss by world * local / global before backward and adds
    # loss * local rows to its sum; here the value is the whole loss's share by rows and the
    # gradient the whole loss's, divided back by that weight.
    local, total = ranks.sizes[ranks.rank], sum(ranks.sizes)
    share = whole.detach() * (total / (ranks.world * local))
    return share + (whole - whole.detach()) * (total / local)
