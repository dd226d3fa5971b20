"""ONNX export against clipft's own engine: classification throughput on the same images.

(a) `app.inference.engine.label_probabilities` on a model loaded for serving (fp32 on the CPU,
    its forward thread and shared passes, 32 images a pass);
(b) the model's ONNX export (`GET /models/{id}/export?format=onnx`) under onnxruntime's CPU
    provider, `image_encoder.onnx` on the same uint8 pixels, then `classifier.json`'s linear
    map and softmax in numpy: what a user runs without clipft.
Both take already-preprocessed pixels (the decode and resize are the same work either way) and
run in turns for `--rounds` rounds; the medians of images/s are compared, and the top-1 of the
two is checked to agree.

Rerun: .venv/bin/python -m bench.onnx_throughput [--model vit-b-32 --images 256 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from app.inference.cache import load_cached_model
from app.inference.engine import IMAGE_BATCH_SIZE, label_probabilities
from app.ml.base_models import LoadedClip
from app.ml.model_files import save_clip_folder
from app.ml.model_metadata import ModelMetadata
from app.ml.tiny_clip import TINY_CLIP_NAME, build_tiny_clip
from app.models.exports import onnx_export
from bench.clip_models import MODEL_CHOICES, VIT_B32_NAME, build_vit_b32

LABELS = [f"part type {index}" for index in range(8)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=TINY_CLIP_NAME, choices=MODEL_CHOICES)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def write_model(name: str, folder: Path) -> None:
    loaded: LoadedClip = build_vit_b32() if name == VIT_B32_NAME else LoadedClip(*build_tiny_clip())
    metadata = ModelMetadata(
        kind="classification", labels=LABELS, prompt_template="a photo of a {}.", base_model=name
    )
    save_clip_folder(loaded, metadata, folder)


def rate(run: Callable[[], np.ndarray], images: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    probabilities = run()
    return images / (time.perf_counter() - started), probabilities


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="clipft-onnx-bench-") as temp:
        work = Path(temp)
        folder = work / "models" / "bench"
        write_model(args.model, folder)
        exported = onnx_export(data_dir=work, model_id="bench", folder=folder)
        with zipfile.ZipFile(exported) as archive:
            archive.extractall(work / "onnx")
        model = load_cached_model("bench", folder, torch.device("cpu"), "fp32")
        height, width = model.pixel_spec.crop
        pixels = torch.randint(0, 256, (args.images, 3, height, width), dtype=torch.uint8)
        session = onnxruntime.InferenceSession(
            str(work / "onnx" / "image_encoder.onnx"), providers=["CPUExecutionProvider"]
        )
        classifier = json.loads((work / "onnx" / "classifier.json").read_text())
        weight, bias = np.asarray(classifier["weight"], np.float32), np.asarray(classifier["bias"])

        def engine() -> np.ndarray:
            return label_probabilities(model, pixels).probabilities.numpy()

        def onnx() -> np.ndarray:
            batches = []
            for start in range(0, args.images, IMAGE_BATCH_SIZE):
                chunk = pixels[start : start + IMAGE_BATCH_SIZE].numpy()
                (embeddings,) = session.run(None, {"pixels": chunk})
                logits = (embeddings @ weight.T + bias) / classifier["temperature"]
                shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
                batches.append(shifted / shifted.sum(axis=1, keepdims=True))
            return np.concatenate(batches)

        engine(), onnx()  # warm-up: thread pools, allocator, first-pass compilation
        rates: dict[str, list[float]] = {"engine": [], "onnx": []}
        answers: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for name, run in (("engine", engine), ("onnx", onnx)):
                measured, answers[name] = rate(run, args.images)
                rates[name].append(measured)
        model.forward_thread.shutdown()

    agree = float((answers["engine"].argmax(1) == answers["onnx"].argmax(1)).mean())
    largest = float(np.abs(answers["engine"] - answers["onnx"]).max())
    engine_rate, onnx_rate = (statistics.median(rates[name]) for name in ("engine", "onnx"))
    print(
        f"onnx throughput: {args.model}, CPU, {torch.get_num_threads()} torch threads, "
        f"{args.images} images in passes of {IMAGE_BATCH_SIZE}, {args.rounds} rounds"
    )
    print(f"  (a) clipft engine, fp32          {engine_rate:9.1f} images/s   "
          f"samples {', '.join(f'{value:.0f}' for value in rates['engine'])}")  # fmt: skip
    print(f"  (b) onnxruntime CPU + numpy head {onnx_rate:9.1f} images/s   "
          f"samples {', '.join(f'{value:.0f}' for value in rates['onnx'])}")  # fmt: skip
    print(f"  b/a {onnx_rate / engine_rate:.2f}; top-1 agreement {agree:.1%}; "
          f"largest probability difference {largest:.1e}")  # fmt: skip
    print(
        "rerun: .venv/bin/python -m bench.onnx_throughput "
        f"--model {args.model} --images {args.images} --rounds {args.rounds}"
    )


if __name__ == "__main__":
    main()
