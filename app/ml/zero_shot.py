"""Zero-shot classification: each image gets the class whose prompt its features are closest to."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from app.ml.base_models import LoadedClip
from app.ml.encode import class_prompts, encode_images, encode_texts
from app.ml.preprocess import eval_transform
from app.ml.prompts import DEFAULT_PROMPT_TEMPLATE


@torch.no_grad()
def zero_shot_predictions(
    loaded: LoadedClip,
    images: Sequence[Image.Image],
    classes: Sequence[str],
    *,
    template: str = DEFAULT_PROMPT_TEMPLATE,
    batch_size: int = 256,
) -> list[str]:
    """The predicted class of each image, preprocessed as the model's image processor would."""
    clip = loaded.clip
    was_training = clip.training
    clip.eval()
    try:
        prompts = class_prompts(list(classes), template)
        class_features = encode_texts(clip, loaded.tokenizer, prompts, clip.device)
        transform = eval_transform(loaded.image_processor)
        predicted: list[int] = []
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([transform(image) for image in images[start : start + batch_size]])
            image_features = encode_images(clip, pixels.to(clip.device))
            predicted += (image_features @ class_features.T).argmax(dim=1).tolist()
    finally:
        clip.train(was_training)
    return [classes[index] for index in predicted]


def zero_shot_accuracy(
    loaded: LoadedClip,
    images: Sequence[Image.Image],
    labels: Sequence[str],
    *,
    classes: Sequence[str] | None = None,
    template: str = DEFAULT_PROMPT_TEMPLATE,
) -> float:
    """The share of images whose zero-shot class is their label.

    The candidates are `classes`, or else every distinct label; pass `classes` when a sample
    might miss some.
    """
    candidates = list(dict.fromkeys(labels)) if classes is None else list(classes)
    predicted = zero_shot_predictions(loaded, images, candidates, template=template)
    return sum(guess == label for guess, label in zip(predicted, labels, strict=True)) / len(labels)
