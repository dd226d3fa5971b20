from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from app.ml.tiny_clip import build_tiny_clip
from worker.training.checkpoints.folder import OptimizerSnapshot, load_optimizer_state
from worker.training.config import TrainingConfig
from worker.training.loop import build_optimizer
from worker.training.losses import classification_loss, contrastive_loss
from worker.training.methods import ParameterGroup


def whole_model_optimizer(clip: torch.nn.Module) -> torch.optim.AdamW:
    config = TrainingConfig(base_model="tiny-clip", dataset_dir=Path())
    return build_optimizer([ParameterGroup(list(clip.named_parameters()), 1e-3)], config)


def test_no_weight_decay_on_biases_norms_and_temperature() -> None:
    clip, _, _ = build_tiny_clip()
    optimizer = whole_model_optimizer(clip)
    decayed, exempt = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0
    exempt_ids = {id(parameter) for parameter in exempt["params"]}
    for name, parameter in clip.named_parameters():
        is_exempt = id(parameter) in exempt_ids
        if name == "logit_scale" or name.endswith(".bias") or "layer_norm" in name:
            assert is_exempt, name
        if name.endswith("q_proj.weight"):
            assert not is_exempt, name


def test_classification_loss_is_cross_entropy_over_scaled_cosines() -> None:
    images = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    classes = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    labels = torch.tensor([0, 1, 2, 1, 0])
    scale = torch.tensor(10.0)
    expected = torch.nn.functional.cross_entropy(10.0 * images @ classes.T, labels)
    assert classification_loss(images, classes, scale, labels).item() == pytest.approx(
        expected.item()
    )


def test_contrastive_loss_is_symmetric_and_low_for_aligned_pairs() -> None:
    features = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    scale = torch.tensor(50.0)
    aligned = contrastive_loss(features, features, scale)
    shuffled = contrastive_loss(features, features.roll(1, dims=0), scale)
    assert aligned.item() < 0.1 < shuffled.item()
    other = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    assert contrastive_loss(features, other, scale).item() == pytest.approx(
        contrastive_loss(other, features, scale).item()
    )
    assert math.isfinite(shuffled.item())


def test_optimizer_state_round_trips_through_safetensors(tmp_path: Path) -> None:
    clip, _, _ = build_tiny_clip()
    optimizer = whole_model_optimizer(clip)
    clip.logit_scale.grad = torch.tensor(1.0)
    for parameter in clip.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    OptimizerSnapshot.take(optimizer).write(tmp_path)
    fresh = whole_model_optimizer(clip)
    load_optimizer_state(fresh, tmp_path)
    before, after = optimizer.state_dict(), fresh.state_dict()
    assert before["param_groups"] == after["param_groups"]
    for key, state in before["state"].items():
        assert torch.equal(state["exp_avg"], after["state"][key]["exp_avg"])
        assert torch.equal(state["step"], after["state"][key]["step"])


def test_label_smoothing_moves_mass_from_the_true_class_to_the_others() -> None:
    images = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    classes = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    labels = torch.tensor([0, 1, 2, 0])
    scale = torch.tensor(10.0)
    logits = 10.0 * images @ classes.T
    smoothed = classification_loss(images, classes, scale, labels, label_smoothing=0.3)
    # Cross-entropy against targets of 0.8 on the true class and 0.1 on each other one.
    targets = torch.full((4, 3), 0.1).scatter_(1, labels[:, None], 0.8)
    expected = -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
    assert smoothed.item() == pytest.approx(expected.item(), rel=1e-5)
    assert smoothed.item() != pytest.approx(
        classification_loss(images, classes, scale, labels).item()
    )
