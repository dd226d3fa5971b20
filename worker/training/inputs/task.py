"""What the dataset asks of a run, as tensors on the device, prepared once per run.

Classification: the class prompts (every template, tokenized once) and each row's class index.
Captions: every row's caption tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import BatchEncoding, CLIPModel, CLIPTokenizer

from app.ml.encode import class_prompt_tokens, encode_class_tokens, tokenize
from app.ml.manifest import Manifest


@dataclass
class TaskTensors:
    kind: str
    classes: list[str]
    templates: list[str]
    class_tokens: BatchEncoding | None
    # The class index of every manifest row (-1 where a row has none), by row.
    class_targets: torch.Tensor | None
    caption_tokens: dict[str, torch.Tensor] | None

    @property
    def is_classification(self) -> bool:
        return self.kind == "classification"

    def class_features(self, clip: CLIPModel) -> torch.Tensor:
        """Unit text features per class, averaged over the templates (with grad if enabled)."""
        assert self.class_tokens is not None, "a captions set has no classes"
        return encode_class_tokens(clip, self.class_tokens, len(self.templates))

    def targets(self, rows: torch.Tensor) -> torch.Tensor:
        assert self.class_targets is not None, "a captions set has no class targets"
        return self.class_targets[rows]

    def captions(self, rows: torch.Tensor) -> BatchEncoding:
        assert self.caption_tokens is not None, "a classification set has no captions"
        return BatchEncoding({name: ids[rows] for name, ids in self.caption_tokens.items()})


def build_task(
    manifest: Manifest, tokenizer: CLIPTokenizer, templates: list[str], device: torch.device
) -> TaskTensors:
    if manifest.kind == "classification":
        index = {name: position for position, name in enumerate(manifest.classes)}
        return TaskTensors(
            kind=manifest.kind,
            classes=manifest.classes,
            templates=templates,
            class_tokens=class_prompt_tokens(tokenizer, manifest.classes, templates, device),
            class_targets=torch.tensor(
                [index.get(str(item.label), -1) for item in manifest.items], device=device
            ),
            caption_tokens=None,
        )
    encoded = tokenize(tokenizer, [str(item.text) for item in manifest.items], device)
    return TaskTensors(
        kind=manifest.kind,
        classes=[],
        templates=templates,
        class_tokens=None,
        class_targets=None,
        caption_tokens={name: encoded[name] for name in ("input_ids", "attention_mask")},
    )
