"""Batch augmentation on the device: per-sample crops and flips, from (seed, epoch, index)."""

from __future__ import annotations

import numpy as np
import torch

from app.ml.preprocess import PixelSpec
from worker.training.inputs.augment import CROP_SCALES, crop_boxes, sample_uniforms, train_pixels

# Mean 0 and std 1/255: normalising leaves the 0-255 values as they are.
IDENTITY = PixelSpec(
    shortest_edge=32, resize_to=(32, 32), crop=(32, 32), mean=(0.0,) * 3, std=(1 / 255,) * 3
)


def test_uniforms_depend_only_on_seed_epoch_and_index() -> None:
    together = sample_uniforms(7, 3, np.array([0, 5, 9, 12]))
    alone = np.concatenate([sample_uniforms(7, 3, np.array([index])) for index in (12, 0, 9, 5)])
    np.testing.assert_array_equal(together[[3, 0, 2, 1]], alone)
    assert together.shape == (4, 5)
    assert ((together >= 0) & (together < 1)).all()
    assert not np.array_equal(together, sample_uniforms(7, 4, np.array([0, 5, 9, 12])))
    assert not np.array_equal(together, sample_uniforms(8, 3, np.array([0, 5, 9, 12])))


def test_uniforms_look_uniform() -> None:
    values = sample_uniforms(0, 1, np.arange(20_000))
    assert abs(values.mean() - 0.5) < 0.01
    assert abs((values < 0.5).mean() - 0.5) < 0.01
    # Streams of one sample are not copies of each other.
    assert abs(np.corrcoef(values[:, 0], values[:, 1])[0, 1]) < 0.05


def test_crop_boxes_stay_inside_the_square_and_keep_most_of_it() -> None:
    uniforms = torch.from_numpy(sample_uniforms(0, 0, np.arange(1000))).float()
    boxes = crop_boxes(uniforms, 256)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 256 + 1e-3).all()
    area_share = width * height / 256**2
    assert area_share.min() > 0.55 and area_share.max() <= 1.0 + 1e-4
    wider = crop_boxes(uniforms, 256, CROP_SCALES["standard"])
    wider_share = (wider[:, 2] - wider[:, 0]) * (wider[:, 3] - wider[:, 1]) / 256**2
    # `standard` crops reach further in than `light` ones ever do.
    assert wider_share.min() < 0.52 < area_share.min()


def test_train_pixels_crop_each_sample_on_its_own_and_flip_some() -> None:
    # Left half dark, right half bright: a flip swaps which side is bright.
    squares = torch.zeros(64, 3, 37, 37, dtype=torch.uint8)
    squares[..., 19:] = 255
    uniforms = torch.from_numpy(sample_uniforms(0, 0, np.arange(64))).float()
    pixels = train_pixels(squares, IDENTITY, uniforms, scale=(0.8, 1.0), flip=True)
    assert pixels.shape == (64, 3, 32, 32)
    flipped = pixels[:, 0, 16, 0] > pixels[:, 0, 16, -1]
    assert torch.equal(flipped, uniforms[:, 4] < 0.5)
    assert 10 < int(flipped.sum()) < 54
    unflipped = train_pixels(squares, IDENTITY, uniforms, scale=(0.8, 1.0), flip=False)
    assert (unflipped[:, 0, 16, 0] < unflipped[:, 0, 16, -1]).all()
    # Different crops move the edge between dark and bright to different columns.
    edge_columns = (unflipped[:, 0, 16] > 127).float().argmax(dim=1)
    assert len(set(edge_columns.tolist())) > 3
