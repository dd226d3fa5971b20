"""Unit-length CLIP features for texts and images, and class prompts."""

from __future__ import annotations

import torch
from transformers import BatchEncoding, CLIPModel, CLIPTokenizer


def class_prompts(labels: list[str], template: str) -> list[str]:
    """Fill the template per class; folder names like `golden_retriever` read as words."""
    return [template.format(label.replace("_", " ")) for label in labels]


def tokenize(tokenizer: CLIPTokenizer, texts: list[str], device: torch.device) -> BatchEncoding:
    # Truncation keeps long captions within the text tower's position embeddings.
    return tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(device)


def encode_tokens(clip: CLIPModel, tokens: BatchEncoding) -> torch.Tensor:
    features = clip.get_text_features(
        input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
    ).pooler_output
    return torch.nn.functional.normalize(features, dim=-1)


def encode_texts(
    clip: CLIPModel, tokenizer: CLIPTokenizer, texts: list[str], device: torch.device
) -> torch.Tensor:
    return encode_tokens(clip, tokenize(tokenizer, texts, device))


def encode_images(clip: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    features = clip.get_image_features(pixel_values=pixel_values).pooler_output
    return torch.nn.functional.normalize(features, dim=-1)


def pick_device(requested: str) -> torch.device:
    """`auto` means the first GPU when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
