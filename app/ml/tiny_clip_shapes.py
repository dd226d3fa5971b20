"""How `tiny-clip-shapes` is made: tiny-clip pretrained contrastively on captioned synthetic shapes.

`python -m app.ml.tiny_clip_shapes` trains it on the CPU from fixed seeds (the same weights on the
same machine, every run), writes the weights into the package and prints the zero-shot accuracy
on held-out shapes. Every batch holds each of the 18 colour-and-shape classes exactly once, each
image paired with a caption from a random template, so CLIP's symmetric InfoNCE loss never counts
another image's caption of the same class as a wrong answer.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BatchEncoding, CLIPModel

from app.ml.base_models import LoadedClip
from app.ml.encode import encode_images, encode_tokens, tokenize
from app.ml.preprocess import eval_transform
from app.ml.synthetic import SHAPE_CLASSES, make_images
from app.ml.tiny_clip import TINY_CLIP_SHAPES_WEIGHTS, build_tiny_clip
from app.ml.zero_shot import zero_shot_accuracy

CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "a {}",
    "a drawing of a {}.",
    "a picture of a {}",
    "an image of the {}.",
    "a small {}",
    "a big {}.",
    "this is a {}",
)
# Held-out shapes for the printed accuracy: any seed but the config's gives images never trained on.
HELD_OUT_SEED = 1_000_003


@dataclass(frozen=True)
class PretrainConfig:
    images_per_class: int = field(
        default=200, metadata={"help": "Training images drawn per class, fixed for the whole run."}
    )
    epochs: int = field(
        default=5, metadata={"help": "Passes over the images; a step takes one image per class."}
    )
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW decay on weight matrices."})
    warmup_fraction: float = field(
        default=0.05, metadata={"help": "Share of steps warming up linearly before cosine decay."}
    )
    max_logit_scale: float = field(
        default=100.0, metadata={"help": "Clamp of the learned temperature's inverse, as CLIP."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seeds the training images, batch order and captions."}
    )


def pretrain_tiny_clip_shapes(config: PretrainConfig) -> LoadedClip:
    """Train tiny-clip on captioned shapes; deterministic on one machine, global RNG untouched."""
    clip, tokenizer, image_processor = build_tiny_clip()
    transform = eval_transform(image_processor)
    images = make_images(SHAPE_CLASSES, config.images_per_class, config.seed)
    pixels = torch.stack([transform(item.image) for item in images])
    # Row `c * len(CAPTION_TEMPLATES) + t` is class c's caption in template t.
    captions = [template.format(label) for label in SHAPE_CLASSES for template in CAPTION_TEMPLATES]
    caption_tokens = tokenize(tokenizer, captions, clip.device)
    optimizer = build_optimizer(clip, config)
    generator = torch.Generator().manual_seed(config.seed)
    total_steps = config.epochs * config.images_per_class
    clip.train()
    for step, (image_rows, caption_rows) in enumerate(class_balanced_batches(config, generator)):
        multiplier = lr_at(step, total_steps=total_steps, warmup_fraction=config.warmup_fraction)
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * multiplier
        tokens = BatchEncoding({name: ids[caption_rows] for name, ids in caption_tokens.items()})
        loss = contrastive_loss(clip, pixels[image_rows], tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(config.max_logit_scale))
    clip.eval()
    return LoadedClip(clip, tokenizer, image_processor)


def class_balanced_batches(
    config: PretrainConfig, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(image rows, caption rows) per step: every class once, in a random caption template."""
    num_classes, per_class = len(SHAPE_CLASSES), config.images_per_class
    class_offsets = torch.arange(num_classes) * per_class  # images are grouped by class
    for _ in range(config.epochs):
        order = torch.stack([torch.randperm(per_class, generator=generator) for _ in SHAPE_CLASSES])
        for column in range(per_class):
            templates = torch.randint(len(CAPTION_TEMPLATES), (num_classes,), generator=generator)
            caption_rows = torch.arange(num_classes) * len(CAPTION_TEMPLATES) + templates
            yield class_offsets + order[:, column], caption_rows


def contrastive_loss(clip: CLIPModel, pixels: torch.Tensor, tokens: BatchEncoding) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: image i belongs with caption i, both directions averaged."""
    logits = clip.logit_scale.exp() * encode_images(clip, pixels) @ encode_tokens(clip, tokens).T
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def build_optimizer(clip: CLIPModel, config: PretrainConfig) -> torch.optim.AdamW:
    """AdamW decaying weight matrices only: biases, norms and the temperature are exempt."""
    decay = [p for name, p in clip.named_parameters() if p.ndim >= 2 and "norm" not in name]
    exempt = [p for name, p in clip.named_parameters() if p.ndim < 2 or "norm" in name]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": exempt, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def lr_at(step: int, *, total_steps: int, warmup_fraction: float) -> float:
    """The multiplier of the peak rate: linear warmup, then cosine down to zero."""
    warmup_steps = max(1, round(total_steps * warmup_fraction))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def save_weights(clip: CLIPModel, config: PretrainConfig, path: Path) -> None:
    """The model's weights only, fp32 safetensors; the architecture is `build_tiny_clip`'s."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.contiguous() for name, tensor in clip.state_dict().items()}
    # One metadata entry: safetensors writes several in a random order, and the file should be
    # the same bytes every run.
    metadata = {"pretrain_config": json.dumps(asdict(config), sort_keys=True)}
    # Write then rename: an interrupted run never leaves half a weights file in the package.
    partial = path.with_suffix(".partial")
    save_file(state, str(partial), metadata=metadata)
    partial.replace(path)


def held_out_accuracy(loaded: LoadedClip, per_class: int = 50) -> float:
    """Zero-shot accuracy over all 18 classes on shapes drawn from `HELD_OUT_SEED`."""
    images = make_images(SHAPE_CLASSES, per_class, HELD_OUT_SEED)
    labels = [item.label for item in images]
    return zero_shot_accuracy(
        loaded, [item.image for item in images], labels, classes=SHAPE_CLASSES
    )


def main() -> None:
    config = PretrainConfig()
    started = time.perf_counter()
    loaded = pretrain_tiny_clip_shapes(config)
    elapsed = time.perf_counter() - started
    save_weights(loaded.clip, config, TINY_CLIP_SHAPES_WEIGHTS)
    size_kb = TINY_CLIP_SHAPES_WEIGHTS.stat().st_size / 1024
    print(f"pretrained in {elapsed:.0f} s; wrote {TINY_CLIP_SHAPES_WEIGHTS} ({size_kb:.0f} KiB)")
    print(f"zero-shot accuracy on held-out shapes: {held_out_accuracy(loaded):.3f}")


if __name__ == "__main__":
    main()
