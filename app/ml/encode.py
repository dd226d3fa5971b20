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


def class_prompt_tokens(
    tokenizer: CLIPTokenizer, labels: list[str], templates: list[str], device: torch.device
) -> BatchEncoding:
    """Every template's prompts for every label, template-major: row `t * len(labels) + c`."""
    prompts = [prompt for template in templates for prompt in class_prompts(labels, template)]
    return tokenize(tokenizer, prompts, device)


def encode_class_tokens(clip: CLIPModel, tokens: BatchEncoding, num_templates: int) -> torch.Tensor:
    """One unit vector per class: the mean of its prompts' features over the templates."""
    features = encode_tokens(clip, tokens)
    per_template = features.view(num_templates, -1, features.shape[-1])
    return torch.nn.functional.normalize(per_template.mean(dim=0), dim=-1)


def encode_class_prompts(
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    labels: list[str],
    templates: list[str],
    device: torch.device,
) -> torch.Tensor:
    tokens = class_prompt_tokens(tokenizer, labels, templates, device)
    return encode_class_tokens(clip, tokens, len(templates))
