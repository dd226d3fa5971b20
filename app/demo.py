"""`clipft demo`: a real fine-tune of tiny-clip on synthetic shapes, driven over HTTP.

It starts an embedded Redis, the api and a worker in a private data dir, uploads a generated
dataset, trains, follows progress, then classifies held-out images through `/predict` and
compares the accuracy with the base model's on the same images.
"""

from __future__ import annotations

import base64
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import torch
from tqdm import tqdm

from app.core.config import Settings
from app.core.embedded_redis import free_tcp_port
from app.local_stack import local_stack
from app.ml.encode import class_prompts, encode_images, encode_texts
from app.ml.preprocess import eval_transform
from app.ml.synthetic import SyntheticImage, classification_zip, make_images, png_bytes
from app.ml.tiny_clip import build_tiny_clip

# One colour per class: a tiny CLIP trained from scratch on a few hundred images learns colour
# in seconds, while telling a circle from a square of the same colour needs far more data (or a
# pretrained CLIP), which would make the demo slow.
DEMO_CLASSES = (
    "red circle",
    "green square",
    "blue triangle",
    "yellow circle",
    "purple square",
    "cyan triangle",
)
PROMPT_TEMPLATE = "a photo of a {}."
FINISHED = {"succeeded", "failed", "cancelled"}


@contextlib.contextmanager
def demo_data_dir(requested: Path | None) -> Iterator[Path]:
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        yield requested
        return
    with tempfile.TemporaryDirectory(prefix="clipft-demo-") as folder:
        yield Path(folder)


def run_demo(*, data_dir: Path | None, epochs: int, base_settings: Settings) -> int:
    """Run the demo; returns the process exit code (0 when held-out accuracy is over 80%)."""
    with demo_data_dir(data_dir) as folder:
        # The demo never touches the user's own database or broker.
        settings = base_settings.model_copy(
            update={"data_dir": folder, "database_url": None, "redis_url": None}
        )
        port = free_tcp_port()
        print(f"Starting embedded Redis, the api on port {port} and a worker (data in {folder})")
        started = time.monotonic()
        with local_stack(settings, api_port=port, log_dir=folder / "logs"):
            print(f"  ready in {time.monotonic() - started:.1f}s")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                return drive(client, epochs)


def drive(client: httpx.Client, epochs: int) -> int:
    training_images = make_images(DEMO_CLASSES, per_class=50, seed=1)
    held_out = make_images(DEMO_CLASSES, per_class=20, seed=2)
    dataset = upload(client, training_images)
    job = start_job(client, dataset["id"], epochs)
    job = follow(client, job)
    if job["status"] != "succeeded":
        print(f"Job ended {job['status']}: {job['error']}")
        return 1
    tuned_accuracy = held_out_accuracy(client, job["model_id"], held_out)
    base_accuracy = base_model_accuracy(held_out)
    print_summary(job, base_accuracy, tuned_accuracy, len(held_out))
    return 0 if tuned_accuracy > 0.8 else 1


def upload(client: httpx.Client, images: list[SyntheticImage]) -> dict[str, Any]:
    archive = classification_zip(images)
    print(f"Uploading {len(images)} synthetic images of {len(DEMO_CLASSES)} classes")
    response = client.post(
        "/datasets",
        files={"file": ("shapes.zip", archive, "application/zip")},
        data={"name": "synthetic shapes"},
    )
    response.raise_for_status()
    dataset: dict[str, Any] = response.json()
    print(f"  dataset {dataset['id']}: {dataset['num_train']} train / {dataset['num_val']} val")
    return dataset


def start_job(client: httpx.Client, dataset_id: str, epochs: int) -> dict[str, Any]:
    hyperparameters = {
        "epochs": epochs,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "weight_decay": 0.05,
        "warmup_ratio": 0.1,
        "prompt_template": PROMPT_TEMPLATE,
    }
    response = client.post(
        "/jobs",
        json={
            "dataset_id": dataset_id,
            "base_model": "tiny-clip",
            "hyperparameters": hyperparameters,
        },
    )
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    print(f"Fine-tuning tiny-clip: job {job['id']}")
    return job


def follow(client: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    """Poll the job and draw its progress until it finishes."""
    # The stats go in the description: tqdm's own postfix field always starts with ", ".
    with tqdm(total=1.0, desc="queued", bar_format="{percentage:3.0f}%|{bar:30}| {desc}") as bar:
        while job["status"] not in FINISHED:
            time.sleep(0.5)
            job = client.get(f"/jobs/{job['id']}").json()
            progress, metrics = job["progress"], job["metrics"]
            bar.n = progress["fraction"]
            bar.set_description_str(
                f"{job['status']} epoch {progress['epoch']}/{progress['epochs']}"
                f" | loss {metrics.get('train_loss', float('nan')):.3f}"
                f" | val acc {metrics.get('val_accuracy', float('nan')):.2f}"
                f" | {progress.get('samples_per_second') or 0:.0f} img/s"
                f" | eta {progress.get('eta_seconds') or 0:.0f}s"
            )
    return job


def held_out_accuracy(client: httpx.Client, model_id: str, held_out: list[SyntheticImage]) -> float:
    """Classify every held-out image through `POST /predict` and count top-1 hits."""
    correct = 0
    for start in range(0, len(held_out), 32):
        chunk = held_out[start : start + 32]
        images = [base64.b64encode(png_bytes(item.image)).decode() for item in chunk]
        response = client.post(
            "/predict", json={"model_id": model_id, "images": images, "top_k": 1}
        )
        response.raise_for_status()
        predictions = response.json()["predictions"]
        correct += sum(
            ranked[0]["label"] == item.label
            for ranked, item in zip(predictions, chunk, strict=True)
        )
    return correct / len(held_out)


@torch.inference_mode()
def base_model_accuracy(held_out: list[SyntheticImage]) -> float:
    """The untrained tiny-clip on the same held-out images, for comparison."""
    clip, tokenizer, image_processor = build_tiny_clip()
    clip.eval()
    transform = eval_transform(image_processor)
    labels = sorted(DEMO_CLASSES)
    text_features = encode_texts(
        clip, tokenizer, class_prompts(labels, PROMPT_TEMPLATE), torch.device("cpu")
    )
    pixels = torch.stack([transform(item.image) for item in held_out])
    predicted = (encode_images(clip, pixels) @ text_features.T).argmax(dim=1)
    hits = [labels[index] == item.label for index, item in zip(predicted, held_out, strict=True)]
    return sum(hits) / len(hits)


def print_summary(job: dict[str, Any], base: float, tuned: float, count: int) -> None:
    metrics = job["metrics"]
    print()
    print(f"Held-out accuracy on {count} new images (chance is {1 / len(DEMO_CLASSES):.0%}):")
    print(f"  base tiny-clip (before fine-tuning): {base:6.1%}")
    print(f"  fine-tuned model {job['model_id']}: {tuned:6.1%}")
    base_val = metrics.get("base_model_metrics", {}).get("val_accuracy")
    if base_val is not None:
        print(
            f"  val split: base {base_val:.1%} -> fine-tuned {metrics.get('val_accuracy', 0):.1%}"
        )
    print("Stopping the worker, the api and Redis.")
