"""Base models load from their own place only: a hub id never reads a folder of that name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

from app.ml import base_models
from app.ml.base_models import (
    BaseModelUnavailable,
    UnknownBaseModel,
    describe_base_model,
    load_base_model,
)
from tests.model_factory import write_model_folder


def projection(folder: Path) -> torch.Tensor:
    """The image projection of the CLIP saved in `folder`: what tells two test models apart."""
    return base_models.load_clip_folder(folder).clip.visual_projection.weight.detach()


@pytest.fixture
def hub_without_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hub as a machine without network sees it; the ids asked for, in order."""
    asked: list[str] = []

    def unreachable(*, repo_id: str, **_: Any) -> str:
        asked.append(repo_id)
        raise LocalEntryNotFoundError("cannot reach the hub, and the id is not in the cache")

    monkeypatch.setattr(base_models, "snapshot_download", unreachable, raising=False)
    return asked


def test_a_hub_id_never_loads_the_folder_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_without_network: list[str]
) -> None:
    write_model_folder(tmp_path / "someorg" / "private-model")
    (tmp_path / "elsewhere").mkdir()
    messages = []
    for working_directory in (tmp_path, tmp_path / "elsewhere"):
        monkeypatch.chdir(working_directory)
        with pytest.raises(BaseModelUnavailable) as refused:
            load_base_model("someorg/private-model", None)
        messages.append(str(refused.value))
    assert hub_without_network == ["someorg/private-model", "someorg/private-model"]
    # Whether the folder is there or not, the same words: the hub's, never the disk's.
    assert messages[0] == messages[1]
    assert "Hugging Face hub" in messages[0] and "private-model'" in messages[0]


def test_a_hub_id_loads_the_hubs_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_model_folder(tmp_path / "someorg" / "clip", weights_seed=1)
    hub_files = tmp_path / "hub-cache" / "snapshot"
    write_model_folder(hub_files, weights_seed=2)
    asked: list[tuple[str, list[str]]] = []

    def snapshot(*, repo_id: str, allow_patterns: list[str], **_: Any) -> str:
        asked.append((repo_id, allow_patterns))
        return str(hub_files)

    monkeypatch.setattr(base_models, "snapshot_download", snapshot, raising=False)
    monkeypatch.chdir(tmp_path)
    loaded = load_base_model("someorg/clip", None)
    assert torch.equal(loaded.clip.visual_projection.weight, projection(hub_files))
    assert not torch.equal(loaded.clip.visual_projection.weight, projection(Path("someorg/clip")))
    # Safetensors weights only: the pickled copies a hub repository may hold are never fetched.
    assert asked == [("someorg/clip", ["*.json", "*.txt", "*.safetensors"])]


@pytest.mark.parametrize(
    "name",
    [
        "models/0123abcd",  # the data directory's own folders are no hub namespaces
        "datasets/x",
        "jobs/x",
        "Models/x",
        "spaces/x",
        "org/-name",
        "org/name.",
        "org/na--me",
        "org/repo.git",
        "org/" + "n" * 93,
        "./models",
        "org/name/extra",
    ],
)
def test_names_the_hub_would_refuse_are_unknown(name: str) -> None:
    with pytest.raises(UnknownBaseModel) as refused:
        describe_base_model(name, None)
    assert str(refused.value).startswith(f"unknown base model {name!r}")


def test_local_base_models_are_folder_names_under_the_base_models_dir(tmp_path: Path) -> None:
    base_dir = tmp_path / "bases"
    write_model_folder(base_dir / "my-clip")
    write_model_folder(tmp_path / "outside")
    assert describe_base_model("my-clip", base_dir) == "local"
    assert torch.equal(
        load_base_model("my-clip", base_dir).clip.visual_projection.weight,
        projection(base_dir / "my-clip"),
    )
    for name in ("../outside", str(tmp_path / "outside"), "my-clip/"):
        with pytest.raises(UnknownBaseModel) as refused:
            describe_base_model(name, base_dir)
        # The error names no folder of the server: not the base-models dir, not the tmp dir.
        assert str(tmp_path) not in str(refused.value).replace(repr(name), "")
