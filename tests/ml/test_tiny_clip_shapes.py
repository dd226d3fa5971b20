from __future__ import annotations

from pathlib import Path

import torch

from app.ml.base_models import describe_base_model, load_base_model
from app.ml.synthetic import SHAPE_CLASSES, make_images
from app.ml.tiny_clip import TINY_CLIP_SHAPES_WEIGHTS, build_tiny_clip, load_tiny_clip_shapes
from app.ml.tiny_clip_shapes import (
    CAPTION_TEMPLATES,
    HELD_OUT_SEED,
    PretrainConfig,
    class_balanced_batches,
    pretrain_tiny_clip_shapes,
    save_weights,
)
from app.ml.zero_shot import zero_shot_accuracy

# Pretraining draws its images from seed 0 and prints accuracy on HELD_OUT_SEED; this is neither.
TEST_SEED = 20_251_127
SMALL = PretrainConfig(images_per_class=3, epochs=1)


def assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_committed_weights_load_as_a_builtin_base_model() -> None:
    assert TINY_CLIP_SHAPES_WEIGHTS.stat().st_size < 1.5 * 2**20
    assert describe_base_model("tiny-clip-shapes", None) == "builtin"
    loaded = load_base_model("tiny-clip-shapes", None)
    untrained, tokenizer, image_processor = build_tiny_clip()
    assert loaded.clip.config.to_dict() == untrained.config.to_dict()
    assert loaded.tokenizer.get_vocab() == tokenizer.get_vocab()
    assert loaded.image_processor.to_dict() == image_processor.to_dict()
    assert not torch.equal(loaded.clip.visual_projection.weight, untrained.visual_projection.weight)


def test_committed_weights_classify_held_out_shapes_zero_shot() -> None:
    assert TEST_SEED not in (PretrainConfig().seed, HELD_OUT_SEED)
    loaded = load_base_model("tiny-clip-shapes", None)
    shapes = make_images(SHAPE_CLASSES, per_class=10, seed=TEST_SEED)
    accuracy = zero_shot_accuracy(
        loaded, [item.image for item in shapes], [item.label for item in shapes]
    )
    # Measured 0.99 here; chance is 1/18.
    assert accuracy >= 0.8


def test_every_batch_holds_each_class_once_with_its_own_caption() -> None:
    generator = torch.Generator().manual_seed(0)
    batches = list(class_balanced_batches(SMALL, generator))
    assert len(batches) == SMALL.epochs * SMALL.images_per_class
    seen: list[int] = []
    for image_rows, caption_rows in batches:
        image_classes = image_rows // SMALL.images_per_class
        assert image_classes.tolist() == list(range(len(SHAPE_CLASSES)))
        assert torch.equal(caption_rows // len(CAPTION_TEMPLATES), image_classes)
        seen += image_rows.tolist()
    assert sorted(seen) == list(range(len(SHAPE_CLASSES) * SMALL.images_per_class))


def test_pretraining_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    first = pretrain_tiny_clip_shapes(SMALL)
    assert torch.equal(torch.rand(1), expected_next)
    second = pretrain_tiny_clip_shapes(SMALL)
    assert_same_weights(first.clip, second.clip)
    untrained, _, _ = build_tiny_clip()
    assert not torch.equal(first.clip.text_projection.weight, untrained.text_projection.weight)


def test_saved_weights_load_back_exactly(tmp_path: Path) -> None:
    trained = pretrain_tiny_clip_shapes(SMALL)
    path = tmp_path / "weights" / "shapes.safetensors"
    save_weights(trained.clip, SMALL, path)
    first_bytes = path.read_bytes()
    save_weights(trained.clip, SMALL, path)
    assert path.read_bytes() == first_bytes  # no run-to-run noise in the committed file
    loaded, _, _ = load_tiny_clip_shapes(path)
    assert_same_weights(loaded, trained.clip)
