"""The serving cache: loads each model once, keeps the most recently used, embeds labels once."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch

from app.inference.cache import ModelCache, ModelUnavailable
from tests.model_factory import SHAPE_LABELS, write_model_folder

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    folders = {model_id: root / model_id for model_id in ("first", "second", "third")}
    for folder in folders.values():
        write_model_folder(folder)
    folders["captions"] = root / "captions"
    write_model_folder(folders["captions"], kind="captions", labels=())
    return folders


def test_a_model_is_loaded_once_ready_to_serve(model_folders: dict[str, Path]) -> None:
    model_cache = ModelCache(capacity=2, device=CPU)

    cached = model_cache.get("first", model_folders["first"])
    again = model_cache.get("first", model_folders["first"])

    assert again is cached
    assert model_cache.loads == 1
    assert not cached.loaded_clip.clip.training
    assert next(cached.loaded_clip.clip.parameters()).device == CPU
    assert cached.metadata.labels == list(SHAPE_LABELS)
    assert cached.logit_scale > 0


def test_label_embeddings_are_computed_once_per_model(model_folders: dict[str, Path]) -> None:
    model_cache = ModelCache(capacity=2, device=CPU)

    embeddings = model_cache.get("first", model_folders["first"]).label_embeddings
    model_cache.get("second", model_folders["second"])

    assert embeddings is not None
    assert model_cache.get("first", model_folders["first"]).label_embeddings is embeddings
    assert embeddings.shape[0] == len(SHAPE_LABELS)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(len(SHAPE_LABELS)), atol=1e-5)


def test_a_captions_model_has_no_label_embeddings(model_folders: dict[str, Path]) -> None:
    cached = ModelCache(capacity=1, device=CPU).get("captions", model_folders["captions"])

    assert cached.metadata.labels == []
    assert cached.label_embeddings is None


def test_capacity_one_evicts_the_first_model_when_a_second_loads(
    model_folders: dict[str, Path],
) -> None:
    model_cache = ModelCache(capacity=1, device=CPU)

    model_cache.get("first", model_folders["first"])
    model_cache.get("second", model_folders["second"])

    assert model_cache.model_ids() == ["second"]
    assert "first" not in model_cache
    model_cache.get("first", model_folders["first"])
    assert model_cache.loads == 3
    assert model_cache.model_ids() == ["first"]


def test_the_least_recently_used_model_is_evicted(model_folders: dict[str, Path]) -> None:
    model_cache = ModelCache(capacity=2, device=CPU)

    model_cache.get("first", model_folders["first"])
    model_cache.get("second", model_folders["second"])
    model_cache.get("first", model_folders["first"])  # now "second" is the least recently used
    model_cache.get("third", model_folders["third"])

    assert model_cache.model_ids() == ["first", "third"]
    assert model_cache.loads == 3


def test_concurrent_requests_for_one_model_load_it_once(model_folders: dict[str, Path]) -> None:
    model_cache = ModelCache(capacity=2, device=CPU)
    start = threading.Barrier(4)
    results = []

    def fetch() -> None:
        start.wait()
        results.append(model_cache.get("first", model_folders["first"]))

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert model_cache.loads == 1
    assert len(results) == 4
    assert all(result is results[0] for result in results)


def test_a_missing_folder_is_unavailable_and_not_remembered(
    model_folders: dict[str, Path], tmp_path: Path
) -> None:
    model_cache = ModelCache(capacity=2, device=CPU)
    folder = tmp_path / "late"

    with pytest.raises(ModelUnavailable, match="folder is missing"):
        model_cache.get("late", folder)

    assert model_cache.model_ids() == []
    shutil.copytree(model_folders["first"], folder)
    assert model_cache.get("late", folder).metadata.labels == list(SHAPE_LABELS)


def test_a_folder_that_does_not_load_is_unavailable(
    model_folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(model_folders["first"], folder)
    (folder / "config.json").write_text("{ not json")

    with pytest.raises(ModelUnavailable, match="do not load"):
        ModelCache(capacity=1, device=CPU).get("broken", folder)


def test_evict_drops_a_model_so_the_next_get_reloads_it(model_folders: dict[str, Path]) -> None:
    model_cache = ModelCache(capacity=2, device=CPU)
    model_cache.get("first", model_folders["first"])

    assert model_cache.evict("first") is True
    assert model_cache.evict("first") is False
    model_cache.get("first", model_folders["first"])
    assert model_cache.loads == 2
