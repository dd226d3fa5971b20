"""Forgetting, made visible: fine-tune tiny-clip-shapes on digits, then ask it about shapes again.

A deliberately naive full fine-tune (every weight, constant AdamW rate, cross-entropy of each
image against the ten class prompts), with zero-shot accuracy on held-out shapes and digits
printed before and after. The seeds of the held-out sets are used nowhere else.

Measured on the 2-core CPU (held-out accuracy, shapes before -> after, digits before -> after):
2,000 digits, 10 epochs, 17 s: shapes 0.99 -> 0.13, digits 0.11 -> 0.65. With 500 digits the
digits reach only 0.34 after 10 epochs: tiny-clip's vision tower needs thousands of images.

Rerun: .venv/bin/python -m bench.forgetting [--per-class 200] [--epochs 10] [--learning-rate 1e-3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from app.ml.base_models import LoadedClip, load_base_model
from app.ml.encode import class_prompts, encode_images, encode_tokens, tokenize
from app.ml.preprocess import eval_transform
from app.ml.synthetic import SHAPE_CLASSES, make_images
from app.ml.synthetic_digits import DIGIT_CLASSES, make_digit_images
from app.ml.tiny_clip import TINY_CLIP_SHAPES_NAME
from app.ml.zero_shot import DEFAULT_TEMPLATE, zero_shot_accuracy

TRAIN_SEED, HELD_OUT_DIGITS_SEED, HELD_OUT_SHAPES_SEED = 0, 7_001, 7_002


def fine_tune_on_digits(
    loaded: LoadedClip, *, per_class: int, epochs: int, learning_rate: float, batch_size: int
) -> None:
    clip = loaded.clip
    transform = eval_transform(loaded.image_processor)
    digits = make_digit_images(per_class, TRAIN_SEED)
    pixels = torch.stack([transform(item.image) for item in digits])
    targets = torch.tensor([DIGIT_CLASSES.index(item.label) for item in digits])
    prompts = class_prompts(list(DIGIT_CLASSES), DEFAULT_TEMPLATE)
    class_tokens = tokenize(loaded.tokenizer, prompts, clip.device)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(TRAIN_SEED)
    clip.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(digits), generator=generator).split(batch_size):
            image_features = encode_images(clip, pixels[rows])
            logits = clip.logit_scale.exp() * image_features @ encode_tokens(clip, class_tokens).T
            loss = F.cross_entropy(logits, targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    clip.eval()


def held_out_accuracies(loaded: LoadedClip, per_class: int) -> tuple[float, float]:
    """Zero-shot accuracy on held-out shapes (18 classes) and on held-out digits (10)."""
    shapes = make_images(SHAPE_CLASSES, per_class, HELD_OUT_SHAPES_SEED)
    digits = make_digit_images(per_class, HELD_OUT_DIGITS_SEED)
    return (
        zero_shot_accuracy(
            loaded, [i.image for i in shapes], [i.label for i in shapes], classes=SHAPE_CLASSES
        ),
        zero_shot_accuracy(
            loaded, [i.image for i in digits], [i.label for i in digits], classes=DIGIT_CLASSES
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200, help="Training digits per class.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--held-out-per-class", type=int, default=50)
    args = parser.parse_args()

    loaded = load_base_model(TINY_CLIP_SHAPES_NAME, None)
    shapes_before, digits_before = held_out_accuracies(loaded, args.held_out_per_class)
    started = time.perf_counter()
    fine_tune_on_digits(
        loaded,
        per_class=args.per_class,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
    )
    elapsed = time.perf_counter() - started
    shapes_after, digits_after = held_out_accuracies(loaded, args.held_out_per_class)
    print(
        f"full fine-tune of {TINY_CLIP_SHAPES_NAME} on {args.per_class * len(DIGIT_CLASSES)} "
        f"digits, {args.epochs} epochs, AdamW lr {args.learning_rate:g}, {elapsed:.0f} s (CPU)"
    )
    print(f"{'zero-shot, held out':<22}{'before':>8}{'after':>8}  chance")
    print(f"{'shapes (18 classes)':<22}{shapes_before:8.3f}{shapes_after:8.3f}  {1 / 18:.3f}")
    print(f"{'digits (10 classes)':<22}{digits_before:8.3f}{digits_after:8.3f}  {1 / 10:.3f}")


if __name__ == "__main__":
    main()
