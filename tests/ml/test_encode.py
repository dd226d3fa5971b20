"""Class embeddings over several prompt templates."""

from __future__ import annotations

import torch

from app.ml.encode import class_prompts, encode_class_prompts, encode_texts
from app.ml.tiny_clip import build_tiny_clip

LABELS = ["red circle", "green_square"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}", "{}"]


@torch.no_grad()
def test_a_class_embedding_is_the_normalised_mean_over_its_templates() -> None:
    clip, tokenizer, _ = build_tiny_clip()
    cpu = torch.device("cpu")
    per_template = torch.stack(
        [encode_texts(clip, tokenizer, class_prompts(LABELS, t), cpu) for t in TEMPLATES]
    )
    expected = torch.nn.functional.normalize(per_template.mean(dim=0), dim=-1)
    features = encode_class_prompts(clip, tokenizer, LABELS, TEMPLATES, cpu)
    assert features.shape == (2, 64)
    assert torch.allclose(features, expected, atol=1e-6)
    # One template gives exactly that template's embeddings.
    single = encode_class_prompts(clip, tokenizer, LABELS, TEMPLATES[:1], cpu)
    assert torch.allclose(single, per_template[0], atol=1e-6)
