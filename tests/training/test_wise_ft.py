"""WiSE-FT's mechanics: the mix of weights and the choice of alpha."""

from __future__ import annotations

import torch

from app.ml.base_models import LoadedClip
from app.ml.class_head import ClassHead
from app.ml.tiny_clip import build_tiny_clip
from worker.training.wise_ft import MixScore, ServedModel, choose, mix


def served(seed: int, with_head: bool) -> ServedModel:
    torch.manual_seed(seed)
    clip, tokenizer, processor = build_tiny_clip()
    with torch.no_grad():
        for parameter in clip.parameters():
            parameter.add_(torch.randn_like(parameter))
    head = ClassHead(torch.randn(3, 64), torch.randn(3)) if with_head else None
    return ServedModel(LoadedClip(clip, tokenizer, processor), head)


def test_alpha_zero_is_the_base_one_the_fine_tuned_and_between_the_line() -> None:
    base, tuned = served(1, with_head=True), served(2, with_head=True)
    assert base.head is not None and tuned.head is not None
    for alpha in (0.0, 0.5, 1.0):
        mixed = mix(base, tuned, alpha)
        assert mixed.head is not None
        mixed_state = mixed.loaded.clip.state_dict()
        base_state, tuned_state = base.loaded.clip.state_dict(), tuned.loaded.clip.state_dict()
        for name, value in tuned_state.items():
            expected = (1 - alpha) * base_state[name] + alpha * value
            assert torch.allclose(mixed_state[name], expected, atol=1e-6), (alpha, name)
        expected_head = (1 - alpha) * base.head.weight + alpha * tuned.head.weight
        assert torch.allclose(mixed.head.weight, expected_head, atol=1e-6)
    # Mixing leaves both inputs as they were.
    assert not torch.equal(base.loaded.clip.logit_scale, tuned.loaded.clip.logit_scale)


def test_the_best_by_val_wins_and_ties_go_to_the_larger_alpha() -> None:
    fine_tuned = MixScore(1.0, {"val_accuracy": 0.7}, None)
    better = MixScore(0.5, {"val_accuracy": 0.8}, None)
    tied = MixScore(0.25, {"val_accuracy": 0.7}, None)
    assert choose([tied, better], fine_tuned, "val_accuracy") is better
    assert choose([tied], fine_tuned, "val_accuracy") is fine_tuned
