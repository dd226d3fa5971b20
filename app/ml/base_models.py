"""Load a base CLIP: a built-in tiny model, a folder under the base-models dir, or a hub id.

Each kind is loaded from its own place only. transformers' `from_pretrained("org/name")` reads a
folder `org/name` relative to the working directory before it asks the hub, so a hub id is never
handed to it: the hub's files are fetched into the hub cache first and loaded from there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import snapshot_download
from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from app.ml.tiny_clip import (
    TINY_CLIP_NAME,
    TINY_CLIP_SHAPES_NAME,
    build_tiny_clip,
    load_tiny_clip_shapes,
)

# Service logs are read line by line; transformers' per-shard progress bars only add noise. Here,
# where models are loaded, rather than in the package's __init__: what imports app.ml without
# loading a model (the worker's main process) need not import transformers.
transformers_logging.disable_progress_bar()

# One part of a hub id as the hub allows it: letters, digits, `-`, `_`, `.`; neither `-` nor `.`
# first or last (the hub also refuses `--`, `..`, a `.git` ending and more than 96 characters).
HUB_ID_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
HUB_ID_PATTERN = re.compile(rf"^{HUB_ID_PART}/{HUB_ID_PART}$")
HUB_ID_MAX_LENGTH = 96
# Never a hub namespace: the hub's own URL prefixes and the data directory's folders, so that no
# accepted hub id even spells a path into the data directory (`models/<model id>`).
RESERVED_HUB_NAMESPACES = frozenset({"models", "datasets", "spaces", "jobs"})
# What a base model needs from its hub repository: configs, tokenizer files, safetensors weights
# (never the pickled `pytorch_model.bin`, nor the TensorFlow and Flax copies).
HUB_FILE_PATTERNS = ["*.json", "*.txt", "*.safetensors"]
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


def is_hub_id(name: str) -> bool:
    """Whether `name` is spelled as the hub spells a repository id, `organisation/name`."""
    return (
        len(name) <= HUB_ID_MAX_LENGTH
        and HUB_ID_PATTERN.match(name) is not None
        and ".." not in name
        and "--" not in name
        and not name.endswith(".git")
        and name.split("/")[0].lower() not in RESERVED_HUB_NAMESPACES
    )


def local_base_model_folder(name: str, base_models_dir: Path | None) -> Path | None:
    """The folder of local base model `name`: a folder name directly under `base_models_dir`."""
    if base_models_dir is None or not LOCAL_NAME_PATTERN.match(name):
        return None
    folder = base_models_dir / name
    return folder if (folder / "config.json").is_file() else None


def describe_base_model(name: str, base_models_dir: Path | None) -> str:
    """Say which kind of base model `name` is, or raise `UnknownBaseModel` saying why not.

    The answer depends on the name alone and on the base-models dir, never on the working
    directory; the error names no folder, so it tells a client nothing about the server's disk.
    """
    if name in BUILTIN_MODELS:
        return "builtin"
    if local_base_model_folder(name, base_models_dir) is not None:
        return "local"
    if is_hub_id(name):
        return "hub"
    builtin = ", ".join(repr(builtin_name) for builtin_name in BUILTIN_MODELS)
    raise UnknownBaseModel(
        f"unknown base model {name!r}: expected {builtin}, a folder name under "
        "CLIPFT_BASE_MODELS_DIR, or a Hugging Face hub id such as 'openai/clip-vit-base-patch32' "
        f"(whose organisation is none of {', '.join(sorted(RESERVED_HUB_NAMESPACES))})"
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
    if source == "hub":
        folder = hub_snapshot(name)
    else:
        assert base_models_dir is not None  # "local" means a folder under it
        folder = base_models_dir / name
    try:
        return load_clip_folder(folder)
    except OSError as error:
        where = "the Hugging Face hub" if source == "hub" else "CLIPFT_BASE_MODELS_DIR"
        raise BaseModelUnavailable(
            f"could not load base model {name!r} from {where}: {error}"
        ) from error


def hub_snapshot(hub_id: str) -> Path:
    """The hub's files of `hub_id` in the hub cache (`HF_HOME`), downloaded when not there yet."""
    try:
        folder = snapshot_download(
            repo_id=hub_id, repo_type="model", allow_patterns=HUB_FILE_PATTERNS
        )
    except OSError as error:
        raise BaseModelUnavailable(
            f"could not download base model {hub_id!r} from the Hugging Face hub: {error}"
        ) from error
    return Path(folder)


def load_clip_folder(folder: Path) -> LoadedClip:
    """Load a `save_pretrained` CLIP folder with its tokenizer and image processor.

    Only ever the folder: its absolute path is not a hub id, and `local_files_only` keeps
    transformers from asking the hub should the folder be gone.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder {folder.name!r}")
    location = str(folder.absolute())
    clip = CLIPModel.from_pretrained(location, local_files_only=True)
    processor = CLIPProcessor.from_pretrained(location, local_files_only=True)
    return LoadedClip(clip, processor.tokenizer, processor.image_processor)
