"""Shared and batched inference, and cached label embeddings, versus one image at a time.

On a ViT-B/32-sized CLIP: concurrent single-image requests sharing forward passes, one request
of 32 images, one image per pass, and one image per pass with the label prompts re-encoded.

The weights are random (no download needed here): speed does not depend on their values.
Rerun: .venv/bin/python -m bench.predict_batching
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.inference.batching import PassLimits
from app.inference.cache import load_cached_model
from app.inference.engine import classify
from app.ml.encode import class_prompts, encode_texts
from app.ml.model_files import save_clip_folder
from app.ml.model_metadata import ModelMetadata
from app.ml.preprocess import resize_and_crop
from bench.clip_models import build_vit_b32
from bench.timing import interleaved_best

IMAGES = 32
LABELS = [f"part type {index}" for index in range(20)]


def write_full_size_model(folder: Path) -> None:
    """The ViT-B/32-size CLIP as a served model with `LABELS`."""
    metadata = ModelMetadata(
        kind="classification", labels=LABELS, prompt_template="a photo of a {}.", base_model="b32"
    )
    save_clip_folder(build_vit_b32(), metadata, folder)


def main() -> None:
    torch.set_grad_enabled(False)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, size=(256, 256, 3), dtype=np.uint8))
        for _ in range(IMAGES)
    ]
    with tempfile.TemporaryDirectory() as folder:
        write_full_size_model(Path(folder))
        cached = load_cached_model("bench", Path(folder), torch.device("cpu"))
    pixels = torch.stack([resize_and_crop(image, cached.pixel_spec) for image in images])

    def recompute_labels_then_classify_one() -> None:
        # What serving would cost without the cache: prompts re-encoded for every request.
        clip = cached.loaded_clip
        for image in pixels.split(1):
            encode_texts(
                clip.clip, clip.tokenizer, class_prompts(LABELS, "a photo of a {}."), cached.device
            )
            classify(cached, image, top_k=5, batch_size=1)

    def concurrent_single_image_requests(max_shared_images: int) -> None:
        # 8 clients at once, each sending one image per request, as a busy api sees them.
        limits = PassLimits(max_images=max_shared_images, max_texts=1024)

        def client(offset: int) -> None:
            for image in pixels[offset::8].split(1):
                classify(cached, image, top_k=5, limits=limits)

        threads = [threading.Thread(target=client, args=(offset,)) for offset in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    variants = {
        "8 clients, shared passes": lambda: concurrent_single_image_requests(128),
        "8 clients, one pass per request": lambda: concurrent_single_image_requests(1),
        "batched (32 per forward)": lambda: classify(cached, pixels, top_k=5, batch_size=32),
        "one image per forward": lambda: classify(cached, pixels, top_k=5, batch_size=1),
        "one per request, no label cache": recompute_labels_then_classify_one,
    }
    seconds = interleaved_best(variants, rounds=3)
    baseline = seconds["one image per forward"]
    print(
        f"classify {IMAGES} images, ViT-B/32-size CLIP, {len(LABELS)} labels, {os.cpu_count()} CPUs"
    )
    for name, value in seconds.items():
        print(
            f"  {name:>33}: {IMAGES / value:7.1f} images/s  ({baseline / value:.2f}x of one-by-one)"
        )
    shared = seconds["8 clients, one pass per request"] / seconds["8 clients, shared passes"]
    print(f"  8 concurrent clients: shared passes are {shared:.2f}x one pass per request")
    print("rerun: .venv/bin/python -m bench.predict_batching")


if __name__ == "__main__":
    main()
