"""Load a base CLIP: a built-in tiny model, a folder under the base-models dir, or a hub id."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from app.ml.tiny_clip import (
    TINY_CLIP_NAME,
    TINY_CLIP_SHAPES_NAME,
    build_tiny_clip,
    load_tiny_clip_shapes,
)

# `organisation/name`, as the Hugging Face hub spells repository ids.
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
LOCAL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


# Built into the package, loaded without files or network: name -> (clip, tokenizer, processor).
BUILTIN_MODELS: dict[str, Callable[[], tuple[CLIPModel, CLIPTokenizer, CLIPImageProcessor]]] = {
    TINY_CLIP_NAME: build_tiny_clip,
    TINY_CLIP_SHAPES_NAME: load_tiny_clip_shapes,
}


class BaseModelRefused(ValueError):
    """This server will not use the named base model; the message says why."""


class UnknownBaseModel(BaseModelRefused):
    """The name is none of the kinds of base model clipft knows."""


class BaseModelUnavailable(RuntimeError):
    """The name is valid but its files could not be loaded (no network, missing files)."""


@dataclass
class LoadedClip:
    clip: CLIPModel
    tokenizer: CLIPTokenizer
    image_processor: CLIPImageProcessor


def describe_base_model(name: str, base_models_dir: Path | None) -> str:
    """Say which kind of base model `name` is, or raise `UnknownBaseModel` saying why not."""
    if name in BUILTIN_MODELS:
        return "builtin"
    if (
        base_models_dir is not None
        and LOCAL_NAME_PATTERN.match(name)
        and (base_models_dir / name / "config.json").is_file()
    ):
        return "local"
    if HUB_ID_PATTERN.match(name) and ".." not in name:
        return "hub"
    builtin = ", ".join(repr(builtin_name) for builtin_name in BUILTIN_MODELS)
    local_hint = f"a folder under {base_models_dir}" if base_models_dir else "a local folder name"
    raise UnknownBaseModel(
        f"unknown base model {name!r}: expected {builtin}, {local_hint}, "
        "or a Hugging Face hub id such as 'openai/clip-vit-base-patch32'"
    )


def check_base_model(
    name: str, base_models_dir: Path | None, hub_allowed: Callable[[str], bool]
) -> None:
    """`BaseModelRefused` for a name clipft does not know, and for a hub id this server may not
    download (`hub_allowed` says which it may); jobs and zero-shot serving ask alike."""
    if describe_base_model(name, base_models_dir) == "hub" and not hub_allowed(name):
        raise BaseModelRefused(
            f"base model {name!r} is a Hugging Face hub id, and this server does not download "
            "from the hub (CLIPFT_ALLOW_HUB_DOWNLOADS is off and the id is not in "
            "CLIPFT_HUB_MODEL_ALLOWLIST); use a local base model"
        )


def load_base_model(name: str, base_models_dir: Path | None) -> LoadedClip:
    """Load the named base model; hub ids need network access the first time."""
    source = describe_base_model(name, base_models_dir)
    if source == "builtin":
        clip, tokenizer, image_processor = BUILTIN_MODELS[name]()
        return LoadedClip(clip, tokenizer, image_processor)
    location = str(base_models_dir / name) if source == "local" and base_models_dir else name
    try:
        return load_clip_folder(location)
    except OSError as error:
        where = "the Hugging Face hub" if source == "hub" else location
        raise BaseModelUnavailable(
            f"could not load base model {name!r} from {where}: {error}"
        ) from error


def load_clip_folder(location: str) -> LoadedClip:
    """Load a `save_pretrained` CLIP folder (or hub id) with its tokenizer and image processor."""
    clip = CLIPModel.from_pretrained(location)
    processor = CLIPProcessor.from_pretrained(location)
    return LoadedClip(clip, processor.tokenizer, processor.image_processor)
