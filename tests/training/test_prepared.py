"""The prepared array: decoded once per (dataset, resolution), reused, rebuilt on change."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from app.ml.preprocess import pixel_spec
from app.ml.synthetic import photo_like
from worker.training.inputs import prepared
from worker.training.inputs.augment import eval_pixels
from worker.training.inputs.prepared import load_prepared, prepared_side, resize_to_square


def write_photos(folder: Path, sizes: list[tuple[int, int]]) -> list[str]:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    files = []
    for index, (width, height) in enumerate(sizes):
        name = f"images/{index}.png"
        photo_like(width, height, seed=index).save(folder / name)
        files.append(name)
    return files


def prepared_files(folder: Path) -> list[str]:
    return sorted(path.name for path in (folder / "prepared").iterdir())


def test_side_has_margin_for_crops() -> None:
    assert prepared_side(224) == 256
    assert prepared_side(32) == 37


def test_built_once_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_photos(tmp_path, [(120, 90), (90, 120), (64, 64)])
    builds: list[int] = []
    original = prepared.build_prepared
    monkeypatch.setattr(
        prepared,
        "build_prepared",
        lambda *args, **kwargs: builds.append(1) or original(*args, **kwargs),
    )
    first = load_prepared(tmp_path, files, 32, workers=2)
    second = load_prepared(tmp_path, files, 32, workers=2)
    assert len(builds) == 1
    assert first.shape == second.shape == (3, 3, 37, 37)
    assert first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    # One finished file, no staging file left behind; about side*side*3 bytes per image.
    [name] = prepared_files(tmp_path)
    assert name.startswith("37px-") and name.endswith(".npy")
    assert (tmp_path / "prepared" / name).stat().st_size < 3 * 37 * 37 * 3 + 1024
    # A row is the image's centre square at the prepared side.
    with Image.open(tmp_path / files[0]) as image:
        np.testing.assert_array_equal(first[0], resize_to_square(image, 37))


def test_each_resolution_has_its_own_array(tmp_path: Path) -> None:
    files = write_photos(tmp_path, [(80, 60), (60, 80)])
    assert load_prepared(tmp_path, files, 32, workers=1).shape[-1] == 37
    assert load_prepared(tmp_path, files, 56, workers=1).shape[-1] == 64
    assert [name.split("-")[0] for name in prepared_files(tmp_path)] == ["37px", "64px"]


def test_rebuilt_when_a_file_changes(tmp_path: Path) -> None:
    files = write_photos(tmp_path, [(80, 60), (60, 80)])
    before = np.array(load_prepared(tmp_path, files, 32, workers=1))
    [old_name] = prepared_files(tmp_path)
    photo_like(70, 70, seed=99).save(tmp_path / files[1])
    stat = (tmp_path / files[1]).stat()
    os.utime(tmp_path / files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = load_prepared(tmp_path, files, 32, workers=1)
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.array_equal(after[1], before[1])
    # The stale array of the same resolution is gone; only the new one is kept.
    [new_name] = prepared_files(tmp_path)
    assert new_name != old_name


def test_worker_processes_build_the_same_array_as_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_photos(tmp_path / "a", [(50 + index, 40) for index in range(24)])
    by_threads = np.array(load_prepared(tmp_path / "a", files, 32, workers=1))
    write_photos(tmp_path / "b", [(50 + index, 40) for index in range(24)])
    monkeypatch.setattr(prepared, "MIN_IMAGES_PER_PROCESS", 5)
    started: list[list[str]] = []
    original_popen = subprocess.Popen

    def recording_popen(command: list[str], **kwargs: Any) -> Any:
        started.append(command)
        return original_popen(command, **kwargs)

    monkeypatch.setattr(prepared.subprocess, "Popen", recording_popen)
    by_processes = load_prepared(tmp_path / "b", files, 32, workers=3)
    assert [command[1:] for command in started] == [["-m", "worker.training.inputs.prepared"]] * 3
    np.testing.assert_array_equal(by_processes, by_threads)


def test_a_worker_process_names_the_image_it_could_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_photos(tmp_path, [(50 + index, 40) for index in range(6)])
    (tmp_path / files[4]).write_bytes(b"not a png")
    monkeypatch.setattr(prepared, "MIN_IMAGES_PER_PROCESS", 3)
    with pytest.raises(OSError, match=r"^cannot read dataset image images/4\.png: "):
        load_prepared(tmp_path, files, 32, workers=2)
    assert prepared_files(tmp_path) == []


def test_a_bad_image_fails_the_build_and_leaves_nothing(tmp_path: Path) -> None:
    files = write_photos(tmp_path, [(80, 60)])
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match=r"cannot read dataset image images/broken\.png"):
        load_prepared(tmp_path, [*files, "images/broken.png"], 32, workers=1)
    assert prepared_files(tmp_path) == []


@pytest.mark.parametrize("size", [(512, 384), (384, 512), (300, 300), (640, 200), (1024, 768)])
def test_eval_pixels_match_clip_image_processor(size: tuple[int, int]) -> None:
    """Double resampling (store at 256, then 224) stays within a small distance of the original.

    Measured on these images: mean |difference| 0.02-0.05 and 99th percentile 0.10-0.26 in
    normalised units (one unit is about 70 grey levels); the largest differences sit on the
    sharp edges of the drawn shapes, a fraction of a pixel apart.
    """
    processor = CLIPImageProcessor()  # ViT-B/32's: shortest edge 224, centre crop 224
    image = photo_like(*size, seed=size[0])
    expected = processor(images=image, return_tensors="pt")["pixel_values"]
    spec = pixel_spec(processor)
    square = torch.from_numpy(resize_to_square(image, prepared_side(spec.crop[0])))[None]
    actual = eval_pixels(square, spec)
    difference = (actual - expected).abs().flatten()
    assert actual.shape == expected.shape
    assert difference.mean().item() < 0.06
    assert difference.quantile(0.99).item() < 0.3
