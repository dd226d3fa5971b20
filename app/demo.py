"""`clipft demo`: a real fine-tune of tiny-clip-shapes driven over HTTP, with its report.

The story of a shop: a CLIP that already knows coloured shapes (`tiny-clip-shapes`) learns the
shop's own names for six of them ("cherry candy" is the red circle). The demo starts an
embedded Redis, the api and a worker in a private data dir, uploads the product photos and a
control set of held-out shapes under their usual names, fine-tunes with a progress bar, then
classifies held-out product photos through `/predict` and prints the job's report: accuracy
before and after, per class, and how much of its shapes knowledge the model kept.
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
from tqdm import tqdm

from app.core.config import Settings
from app.core.embedded_redis import free_tcp_port
from app.local_stack import local_stack
from app.ml.synthetic import (
    SHAPE_CLASSES,
    SyntheticImage,
    classification_zip,
    make_images,
    png_bytes,
)
from app.ml.tiny_clip import TINY_CLIP_SHAPES_NAME

# The shop's product names for shapes the base model knows by other words.
PRODUCTS = {
    "red circle": "cherry candy",
    "green square": "mint tin",
    "blue triangle": "blueberry tart",
    "yellow circle": "lemon drop",
    "purple square": "grape box",
    "cyan triangle": "ice pop",
}
PROMPT_TEMPLATE = "a photo of a {}."
FINISHED = {"succeeded", "failed", "cancelled"}


def product_photos(per_class: int, seed: int) -> list[SyntheticImage]:
    shapes = make_images(tuple(PRODUCTS), per_class=per_class, seed=seed)
    return [SyntheticImage(PRODUCTS[sample.label], sample.image) for sample in shapes]


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
    training_images = product_photos(per_class=50, seed=1)
    held_out = product_photos(per_class=20, seed=2)
    dataset = upload(client, training_images, "product photos")
    control = upload(client, make_images(SHAPE_CLASSES, per_class=10, seed=3), "shapes (control)")
    job = start_job(client, dataset["id"], control["id"], epochs)
    job = follow(client, job)
    if job["status"] != "succeeded":
        print(f"Job ended {job['status']}: {job['error']}")
        return 1
    tuned_accuracy = held_out_accuracy(client, job["model_id"], held_out)
    report = client.get(f"/jobs/{job['id']}/report").json()
    print_summary(job, report, tuned_accuracy, len(held_out))
    return 0 if tuned_accuracy > 0.8 else 1


def upload(client: httpx.Client, images: list[SyntheticImage], name: str) -> dict[str, Any]:
    archive = classification_zip(images)
    classes = len({image.label for image in images})
    print(f"Uploading {name}: {len(images)} synthetic images of {classes} classes")
    response = client.post(
        "/datasets",
        files={"file": ("images.zip", archive, "application/zip")},
        data={"name": name},
    )
    response.raise_for_status()
    dataset: dict[str, Any] = response.json()
    print(f"  dataset {dataset['id']}: {dataset['num_train']} train / {dataset['num_val']} val")
    return dataset


def start_job(
    client: httpx.Client, dataset_id: str, control_id: str, epochs: int
) -> dict[str, Any]:
    hyperparameters = {
        "epochs": epochs,
        "batch_size": 32,
        "learning_rate": 5e-4,
        "weight_decay": 0.05,
        "warmup_ratio": 0.1,
        "prompt_templates": [PROMPT_TEMPLATE],
    }
    response = client.post(
        "/jobs",
        json={
            "dataset_id": dataset_id,
            "base_model": TINY_CLIP_SHAPES_NAME,
            "control_dataset_id": control_id,
            "hyperparameters": hyperparameters,
        },
    )
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    print(f"Fine-tuning {TINY_CLIP_SHAPES_NAME} (method {job['hyperparameters']['method']})")
    print(f"  job {job['id']}")
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
                f" | loss {shown(metrics.get('train_loss'), '.3f')}"
                f" | val acc {shown(metrics.get('val_accuracy'), '.2f')}"
                f" | {progress.get('samples_per_second') or 0:.0f} img/s"
                f" | eta {progress.get('eta_seconds') or 0:.0f}s"
            )
    return job


def shown(value: float | None, spec: str) -> str:
    """A metric for the progress line; a dash until the run has reported it."""
    return "-" if value is None else format(value, spec)


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


def print_summary(job: dict[str, Any], report: dict[str, Any], tuned: float, count: int) -> None:
    base, fine_tuned = report["base"], report["fine_tuned"]
    print()
    print(f"Held-out accuracy of model {job['model_id']} through /predict on {count} new photos:")
    print(f"  {tuned:.1%} (chance is {1 / len(PRODUCTS):.0%})")
    print(f"The job's report (GET /jobs/{job['id']}/report), on the val split:")
    print(
        f"  accuracy: base {base['metrics']['val_accuracy']:.1%}"
        f" -> fine-tuned {fine_tuned['metrics']['val_accuracy']:.1%}"
        f" (best epoch {fine_tuned['epoch']} of {report['epochs_trained']})"
    )
    for name in report["classes"]:
        before = base["per_class_accuracy"][name]
        after = fine_tuned["per_class_accuracy"][name]
        print(f"    {name:<16} {before:6.1%} -> {after:6.1%}")
    retention = report["retention"]
    print(
        f"  kept: zero-shot accuracy on {len(SHAPE_CLASSES)} classes of held-out shapes"
        f" {retention['zero_shot_accuracy_before']:.1%}"
        f" -> {retention['zero_shot_accuracy_after']:.1%}"
    )
    calibration = report.get("calibration")
    if calibration:
        print(
            f"  calibration: temperature {calibration['temperature']:.2f} fitted on val,"
            f" expected calibration error {calibration['ece_before']:.1%}"
            f" -> {calibration['ece_after']:.1%}"
        )
    print("Stopping the worker, the api and Redis.")
