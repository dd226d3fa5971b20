"""The built-in `tiny-clip`: a small, randomly initialised CLIP built offline and deterministically.

It exists so that demos and tests can really train without network access: the text tower uses a
real byte-level BPE `CLIPTokenizer` whose vocabulary and merges are derived here from a fixed word
list, so the same code path as a hub checkpoint (tokenizer, processor, `save_pretrained`) is used.

`tiny-clip-shapes` is the same model with weights pretrained on synthetic shapes, shipped in the
package (made by `python -m app.ml.tiny_clip_shapes`): a base model that already knows something,
so that fine-tuning can be seen to keep or forget it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import pre_tokenizers
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPTokenizer,
    CLIPVisionConfig,
)

TINY_CLIP_NAME = "tiny-clip"
TINY_CLIP_SHAPES_NAME = "tiny-clip-shapes"
TINY_CLIP_SHAPES_WEIGHTS = Path(__file__).parent / "weights" / "tiny-clip-shapes.safetensors"
TINY_CLIP_IMAGE_SIZE = 32
TINY_CLIP_MAX_TEXT_TOKENS = 32
_WORD_END = "</w>"
_NUM_MERGES = 400
_SEED = 1234

# Words the merges are learned from: prompt words and common visual vocabulary, so that typical
# prompts tokenize into a handful of tokens instead of one token per letter.
_CORPUS = """
a an the of photo picture image close up cropped bright dark small large big tiny good bad this
that is with on in and or of at by for from to it its there one two three four five six seven eight
red green blue yellow orange purple pink brown black white gray grey cyan magenta gold silver
circle square triangle star cross ring disk dot line stripe rectangle diamond hexagon oval shape
cat dog bird car truck plane ship horse deer frog person people man woman child face hand tree
flower leaf fruit apple banana food table chair house building road street sky cloud water sea
product item object defect scratch crack dent stain normal good damaged broken part cell tissue
slide sample microscope nucleus bacteria texture pattern surface metal wood plastic glass paper
""".split()


def byte_level_alphabet() -> list[str]:
    """The 256 printable characters that byte-level BPE maps raw bytes to, in a fixed order."""
    return sorted(pre_tokenizers.ByteLevel.alphabet())


def learn_merges(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Learn byte-pair merges from `words`, breaking ties lexicographically: deterministic."""
    word_counts = Counter(words)
    splits = {word: [*word[:-1], word[-1] + _WORD_END] for word in word_counts}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pair_counts: Counter[tuple[str, str]] = Counter()
        for word, symbols in splits.items():
            for pair in itertools.pairwise(symbols):
                pair_counts[pair] += word_counts[word]
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        merges.append(best)
        for word, symbols in splits.items():
            splits[word] = _apply_merge(symbols, best)
    return merges


def _apply_merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    merged: list[str] = []
    index = 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            merged.append(symbols[index] + symbols[index + 1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return merged


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A real `CLIPTokenizer` over a byte-level vocabulary plus merges learned from `_CORPUS`."""
    alphabet = byte_level_alphabet()
    tokens = alphabet + [char + _WORD_END for char in alphabet]
    merges = learn_merges(_CORPUS, _NUM_MERGES)
    tokens += [left + right for left, right in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]  # the backend takes pairs; the hint says str
        model_max_length=TINY_CLIP_MAX_TEXT_TOKENS,
    )


def build_tiny_image_processor() -> CLIPImageProcessor:
    """The processor matching the tiny vision tower: resize, centre crop, CLIP normalisation."""
    return CLIPImageProcessor(
        size={"shortest_edge": TINY_CLIP_IMAGE_SIZE},
        crop_size={"height": TINY_CLIP_IMAGE_SIZE, "width": TINY_CLIP_IMAGE_SIZE},
    )


def build_tiny_clip_config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    # Special token ids must match the tokenizer's, or text pooling picks the wrong position.
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=TINY_CLIP_MAX_TEXT_TOKENS,
        projection_dim=64,
    )
    vision_config = CLIPVisionConfig(
        image_size=TINY_CLIP_IMAGE_SIZE,
        patch_size=4,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=64,
    )
    return CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=64,
    )


def build_tiny_clip() -> tuple[CLIPModel, CLIPTokenizer, CLIPImageProcessor]:
    """Build the tiny CLIP; the same weights every call, without touching the global RNG."""
    tokenizer = build_tiny_tokenizer()
    config = build_tiny_clip_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        clip = CLIPModel(config)
    return clip, tokenizer, build_tiny_image_processor()


def load_tiny_clip_shapes(
    weights: Path = TINY_CLIP_SHAPES_WEIGHTS,
) -> tuple[CLIPModel, CLIPTokenizer, CLIPImageProcessor]:
    """tiny-clip with its weights replaced by those pretrained on synthetic shapes."""
    clip, tokenizer, image_processor = build_tiny_clip()
    clip.load_state_dict(load_file(weights))
    return clip, tokenizer, image_processor
