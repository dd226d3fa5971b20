"""A registered model as ONNX: both towers as graphs with a dynamic batch, and what classifies.

The zip holds
- `image_encoder.onnx`: `pixels` (uint8, N x 3 x H x W, RGB, already resized and centre-cropped
  as `preprocess.json` says) -> `embeddings` (float32, N x D, unit length). The normalisation
  by the model's mean and std is inside the graph, so a caller only resizes and crops;
- `text_encoder.onnx`: `input_ids`, `attention_mask` (int64, N x T, from the tokenizer in
  `tokenizer/`) -> `embeddings` (float32, N x D, unit length);
- `classifier.json` (classification models): the labels and the linear map that `/predict`
  applies, `probabilities = softmax((embeddings @ weight.T + bias) / temperature)`. For
  zero-shot and contrastive methods the map is the class prompts' text embeddings times CLIP's
  logit scale; for head methods the trained head. The abstain threshold comes with it;
- `preprocess.json`, `tokenizer/`, `clipft.json` (the model's metadata) and a `README.md`.

LoRA models need no merging here: their folders already hold the merged weights. The graphs
come from torch's TorchScript-based exporter (opset 17), which exports transformers' CLIP in
about a second at tiny-clip size; the export is cached per model (`app/models/exports.py`).
"""

from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from transformers import BatchEncoding

from app.inference.cache import CachedModel
from app.ml.encode import encode_images, encode_tokens
from app.ml.model_metadata import METADATA_NAME
from app.ml.preprocess import PixelSpec

OPSET = 17
IMAGE_GRAPH = "image_encoder.onnx"
TEXT_GRAPH = "text_encoder.onnx"
CLASSIFIER = "classifier.json"
PREPROCESS = "preprocess.json"
TOKENIZER_FOLDER = "tokenizer"


class ImageTower(torch.nn.Module):
    """uint8 pixels in 0-255 -> unit image embeddings, the normalisation included."""

    def __init__(self, clip: Any, spec: PixelSpec) -> None:
        super().__init__()
        self.clip = clip
        shape = (1, len(spec.mean), 1, 1)
        # Plain attributes, not buffers: the tracer folds them into the graph as constants.
        self.mean = torch.tensor(spec.mean).view(shape) * 255
        self.std = torch.tensor(spec.std).view(shape) * 255

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return encode_images(self.clip, (pixels.float() - self.mean) / self.std)


class TextTower(torch.nn.Module):
    """Token ids and their attention mask -> unit text embeddings."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = BatchEncoding({"input_ids": input_ids, "attention_mask": attention_mask})
        return encode_tokens(self.clip, tokens)


def preprocess_description(spec: PixelSpec) -> dict[str, Any]:
    return {
        "input": "pixels: uint8 RGB, N x 3 x H x W (channels first), values 0-255",
        "resize": "bicubic with antialiasing; the short side to shortest_edge (the long side "
        "int(shortest_edge * long / short)), or the whole image to resize_to when "
        "shortest_edge is null",
        "shortest_edge": spec.shortest_edge,
        "resize_to": list(spec.resize_to),
        "crop": "centre crop to crop_size (height, width); top = (height - crop_h) // 2",
        "crop_size": list(spec.crop),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "normalisation": "inside image_encoder.onnx: (pixels - 255 * mean) / (255 * std)",
    }


def classifier_description(model: CachedModel) -> dict[str, Any] | None:
    if model.class_head is None:
        return None
    return {
        "labels": list(model.metadata.labels),
        "weight": model.class_head.weight.detach().cpu().float().tolist(),
        "bias": model.class_head.bias.detach().cpu().float().tolist(),
        "temperature": model.temperature,
        "min_confidence": model.min_confidence,
        "formula": "probabilities = softmax((embeddings @ weight.T + bias) / temperature); "
        "below min_confidence /predict answers label null",
    }


def export_onnx(model: CachedModel, folder: Path, target: Path) -> None:
    """Write the model's ONNX zip to `target` (its parent must exist); `folder` is the model
    folder it was loaded from (for `clipft.json`). The model must be on the CPU in fp32."""
    clip = model.loaded_clip.clip
    height, width = model.pixel_spec.crop
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".onnx-") as temporary:
        work = Path(temporary)
        # The tracer warns of every Python branch on a shape in transformers' CLIP; none of them
        # depends on the batch or the text length, which the parity tests vary.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                ImageTower(clip, model.pixel_spec).eval(),
                (torch.zeros(2, 3, height, width, dtype=torch.uint8),),
                str(work / IMAGE_GRAPH),
                input_names=["pixels"],
                output_names=["embeddings"],
                dynamic_axes={"pixels": {0: "batch"}, "embeddings": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
            tokens = model.loaded_clip.tokenizer(
                ["a photo", "a photo of a thing"], padding=True, return_tensors="pt"
            )
            torch.onnx.export(
                TextTower(clip).eval(),
                (tokens["input_ids"], tokens["attention_mask"]),
                str(work / TEXT_GRAPH),
                input_names=["input_ids", "attention_mask"],
                output_names=["embeddings"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embeddings": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        model.loaded_clip.tokenizer.save_pretrained(work / TOKENIZER_FOLDER)
        texts = {
            PREPROCESS: json.dumps(preprocess_description(model.pixel_spec), indent=2),
            "README.md": readme(model),
        }
        classifier = classifier_description(model)
        if classifier is not None:
            texts[CLASSIFIER] = json.dumps(classifier)
        staged = work / "export.zip"
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in (IMAGE_GRAPH, TEXT_GRAPH):
                archive.write(work / name, name)
            for file in sorted((work / TOKENIZER_FOLDER).iterdir()):
                archive.write(file, f"{TOKENIZER_FOLDER}/{file.name}")
            archive.write(folder / METADATA_NAME, METADATA_NAME)
            for name, text in texts.items():
                archive.writestr(name, text)
        staged.replace(target)


def readme(model: CachedModel) -> str:
    classify = (
        "probabilities = softmax((embeddings @ weight.T + bias) / temperature), with `weight`,\n"
        "`bias`, `temperature` and `labels` from classifier.json.\n"
        if model.class_head is not None
        else "This model has no labels: compare image and text embeddings by their dot product.\n"
    )
    return (
        f"# clipft model {model.model_id} as ONNX\n\n"
        "1. Resize and centre-crop an RGB image as preprocess.json says; pass it as uint8\n"
        "   `pixels` (N x 3 x H x W) to image_encoder.onnx: unit-length `embeddings`.\n"
        "2. Tokenize texts with tokenizer/ (padding to the longest, truncation at 77 tokens)\n"
        "   and pass `input_ids` and `attention_mask` to text_encoder.onnx.\n"
        f"3. {classify}"
    )
