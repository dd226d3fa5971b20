"""Folders published whole: a half-uploaded one is invisible, a corrupted object is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.objects.folders import (
    MANIFEST_NAME,
    delete_folder,
    download_folder,
    publish_folder,
    published_folders,
    read_manifest,
)
from app.core.objects.store import CorruptObject, ObjectInfo, ObjectNotFound, ObjectStore


def a_checkpoint(folder: Path, weights: bytes = b"w" * 5000) -> Path:
    (folder / "processor").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text('{"epoch": 3}')
    (folder / "processor" / "tokenizer.json").write_text("{}")
    return folder


class DiesAfter:
    """A store whose uploads fail after `puts` of them, as a worker killed mid-upload would."""

    def __init__(self, store: ObjectStore, puts: int) -> None:
        self.store = store
        self.puts_left = puts

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def put_file(self, key: str, source: Path) -> ObjectInfo:
        if self.puts_left == 0:
            raise ConnectionError("killed mid-upload")
        self.puts_left -= 1
        return self.store.put_file(key, source)


def test_a_published_folder_comes_back_whole_and_checked(
    store: ObjectStore, tmp_path: Path
) -> None:
    source = a_checkpoint(tmp_path / "epoch-3")
    manifest = publish_folder(store, source, "jobs/j1/checkpoints/epoch-3")
    assert [entry.name for entry in manifest.files] == [
        "config.json",
        "model.safetensors",
        "processor/tokenizer.json",
    ]
    assert manifest.total_bytes == 5000 + 12 + 2
    assert read_manifest(store, "jobs/j1/checkpoints/epoch-3") == manifest

    target = tmp_path / "downloaded"
    assert download_folder(store, "jobs/j1/checkpoints/epoch-3", target) == manifest
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "config.json",
        "model.safetensors",
        "processor/tokenizer.json",
    ]
    assert (target / "model.safetensors").read_bytes() == b"w" * 5000


def test_a_half_uploaded_folder_is_invisible(store: ObjectStore, tmp_path: Path) -> None:
    publish_folder(store, a_checkpoint(tmp_path / "e1"), "jobs/j1/checkpoints/epoch-1")
    with pytest.raises(ConnectionError):
        publish_folder(
            DiesAfter(store, puts=2),  # type: ignore[arg-type]
            a_checkpoint(tmp_path / "e2"),
            "jobs/j1/checkpoints/epoch-2",
        )
    # Its first objects are in the store, but without a manifest nobody sees the folder.
    assert len(store.list("jobs/j1/checkpoints/epoch-2/")) == 2
    assert published_folders(store, "jobs/j1/checkpoints") == ["jobs/j1/checkpoints/epoch-1"]
    assert read_manifest(store, "jobs/j1/checkpoints/epoch-2") is None
    with pytest.raises(ObjectNotFound):
        download_folder(store, "jobs/j1/checkpoints/epoch-2", tmp_path / "never")
    assert not (tmp_path / "never").exists()

    # Nor does a republish that dies half-way change what readers of the folder get.
    before = read_manifest(store, "jobs/j1/checkpoints/epoch-1")
    with pytest.raises(ConnectionError):
        publish_folder(
            DiesAfter(store, puts=1),  # type: ignore[arg-type]
            a_checkpoint(tmp_path / "e1-again", weights=b"other"),
            "jobs/j1/checkpoints/epoch-1",
        )
    assert read_manifest(store, "jobs/j1/checkpoints/epoch-1") == before
    download_folder(store, "jobs/j1/checkpoints/epoch-1", tmp_path / "e1-read")
    assert (tmp_path / "e1-read" / "model.safetensors").read_bytes() == b"w" * 5000

    # Deleting the folder takes the unfinished upload's objects too.
    delete_folder(store, "jobs/j1/checkpoints/epoch-2")
    assert store.list("jobs/j1/checkpoints/epoch-2/") == []


def test_a_corrupted_object_is_detected_and_nothing_is_left(
    store: ObjectStore, tmp_path: Path
) -> None:
    manifest = publish_folder(store, a_checkpoint(tmp_path / "model"), "models/m1")
    weights = next(entry for entry in manifest.files if entry.name == "model.safetensors")
    # Same size, one byte flipped: only the checksum can tell.
    store.put_bytes(manifest.key(weights), b"w" * 4999 + b"x")
    target = tmp_path / "served"
    with pytest.raises(CorruptObject, match=r"model\.safetensors"):
        download_folder(store, "models/m1", target)
    assert not target.exists()
    assert list(tmp_path.glob(".served*")) == []


def test_a_republish_replaces_the_folder_and_drops_the_old_version(
    store: ObjectStore, tmp_path: Path
) -> None:
    first = publish_folder(store, a_checkpoint(tmp_path / "v1"), "models/m1")
    second = publish_folder(store, a_checkpoint(tmp_path / "v2", weights=b"new"), "models/m1")
    assert first.version != second.version
    assert store.list(f"models/m1/{first.version}/") == []
    download_folder(store, "models/m1", tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == b"new"
    assert published_folders(store, "models") == ["models/m1"]


@pytest.mark.parametrize("names", [["../../outside"], ["/etc/passwd"], ["a", "a"], ["sub/../../x"]])
def test_a_manifest_naming_files_outside_the_folder_is_refused(
    store: ObjectStore, tmp_path: Path, names: list[str]
) -> None:
    manifest = publish_folder(store, a_checkpoint(tmp_path / "model"), "models/m1")
    document = json.loads(manifest.to_bytes())
    document["files"] = [{"name": name, "size": 1, "sha256": "0" * 64} for name in names]
    store.put_bytes(f"models/m1/{MANIFEST_NAME}", json.dumps(document).encode())
    with pytest.raises(CorruptObject, match="manifest"):
        download_folder(store, "models/m1", tmp_path / "target" / "m1")
    assert not (tmp_path / "target").exists()
    assert not (tmp_path / "outside").exists()
