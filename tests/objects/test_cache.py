"""The local cache of objects: least recently used out, under its byte limit, checked content."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import pytest

from app.core.config import Settings
from app.core.objects.cache import ObjectCache, open_cache
from app.core.objects.folders import publish_folder
from app.core.objects.local import LocalObjectStore
from app.core.objects.store import CorruptObject, ObjectInfo, ObjectNotFound, ObjectStore


class CountingStore:
    """A store that counts its downloads: a cache hit is one that made none."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.downloads: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def download_to(self, key: str, target: Path) -> ObjectInfo:
        self.downloads.append(key)
        return self.store.download_to(key, target)


def put(store: ObjectStore, key: str, payload: bytes) -> dict[str, object]:
    """Store `payload`; what a manifest would say of it, as `file`'s keywords."""
    info = store.put_bytes(key, payload)
    return {"size": info.size, "sha256": info.sha256}


@pytest.fixture
def counting(tmp_path: Path) -> CountingStore:
    return CountingStore(LocalObjectStore(tmp_path / "bucket"))


def cache_of(store: CountingStore, root: Path, max_bytes: int) -> ObjectCache:
    return ObjectCache(store, root, max_bytes)  # type: ignore[arg-type]


def cached_names(cache: ObjectCache) -> set[str]:
    return {path.name for path in cache.entries.glob("*")}


def test_a_second_read_is_local_and_the_least_recently_used_goes_first(
    counting: CountingStore, tmp_path: Path
) -> None:
    objects = {name: put(counting, f"arrays/{name}", name.encode() * 1000) for name in "abcd"}
    cache = cache_of(counting, tmp_path / "cache", max_bytes=3000)
    paths = {name: cache.file(f"arrays/{name}", **objects[name]) for name in "abc"}  # type: ignore[arg-type]
    # (A read of an entry may count as a use, as the file system keeps access times.)
    assert cache.file("arrays/a", **objects["a"]) == paths["a"]  # type: ignore[arg-type]
    assert paths["a"].read_bytes() == b"a" * 1000
    assert counting.downloads == ["arrays/a", "arrays/b", "arrays/c"]

    # `a` was used after `b`, so `b` is the one that makes room for `d`.
    cache.file("arrays/d", **objects["d"])  # type: ignore[arg-type]
    assert not paths["b"].exists()
    assert paths["a"].exists() and paths["c"].exists()
    cache.file("arrays/b", **objects["b"])  # type: ignore[arg-type]
    assert not paths["c"].exists()
    assert counting.downloads[-2:] == ["arrays/d", "arrays/b"]


def test_the_byte_limit_holds_and_an_entry_bigger_than_it_is_kept_alone(
    counting: CountingStore, tmp_path: Path
) -> None:
    cache = cache_of(counting, tmp_path / "cache", max_bytes=2500)
    for index in range(8):
        payload = bytes([index]) * (300 + 200 * (index % 4))
        cache.file(f"shards/{index}", **put(counting, f"shards/{index}", payload))  # type: ignore[arg-type]
        assert cache.used_bytes() <= 2500
    big = put(counting, "models/huge", b"h" * 4000)
    path = cache.file("models/huge", **big)  # type: ignore[arg-type]
    assert path.read_bytes() == b"h" * 4000
    assert cached_names(cache) == {path.name}
    assert list(cache.staging.iterdir()) == []


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
def test_a_corrupted_cache_entry_is_fetched_again(
    counting: CountingStore, tmp_path: Path, damage: str
) -> None:
    expected = put(counting, "arrays/x", b"x" * 2000)
    cache = cache_of(counting, tmp_path / "cache", max_bytes=10_000)
    path = cache.file("arrays/x", **expected)  # type: ignore[arg-type]
    if damage == "truncate":
        path.write_bytes(b"x" * 10)
    else:
        path.write_bytes(b"x" * 1999 + b"y")
    for reader in (cache, cache_of(counting, tmp_path / "cache", max_bytes=10_000)):
        assert reader.file("arrays/x", **expected).read_bytes() == b"x" * 2000  # type: ignore[arg-type]
        path.write_bytes(b"x" * 1999 + b"y")
    assert counting.downloads == ["arrays/x"] * 3


def test_bytes_that_are_not_those_promised_are_refused_and_not_cached(
    counting: CountingStore, tmp_path: Path
) -> None:
    put(counting, "arrays/x", b"tampered")
    cache = cache_of(counting, tmp_path / "cache", max_bytes=10_000)
    with pytest.raises(CorruptObject, match="expected 8 bytes"):
        cache.file("arrays/x", size=8, sha256=hashlib.sha256(b"original").hexdigest())
    assert cached_names(cache) == set()
    assert list(cache.staging.iterdir()) == []


def test_a_published_folder_is_cached_whole_and_a_republish_is_a_new_entry(
    store: ObjectStore, tmp_path: Path
) -> None:
    source = tmp_path / "model"
    (source / "processor").mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"weights" * 100)
    (source / "processor" / "config.json").write_text("{}")
    publish_folder(store, source, "models/m1")
    counting = CountingStore(store)
    cache = open_cache(
        Settings(data_dir=tmp_path / "data", cache_max_bytes=10_000),
        counting,  # type: ignore[arg-type]
    )
    assert cache.root == tmp_path / "data" / "cache"
    first = cache.folder("models/m1")
    assert (first / "model.safetensors").read_bytes() == b"weights" * 100
    assert (first / "processor" / "config.json").read_text() == "{}"
    assert cache.folder("models/m1") == first
    assert len(counting.downloads) == 2

    (tmp_path / "better").write_bytes(b"better" * 100)
    (tmp_path / "better").replace(source / "model.safetensors")  # as clipft writes: a rename
    publish_folder(store, source, "models/m1")
    second = cache.folder("models/m1")
    assert second != first
    assert (second / "model.safetensors").read_bytes() == b"better" * 100
    with pytest.raises(ObjectNotFound):
        cache.folder("models/never-published")


def _fetch_many(bucket: str, root: str, rounds: int) -> list[str]:
    """In a child process: fetch rotating objects through a small shared cache; what it read
    wrong (nothing, if the cache is safe with two processes)."""
    store = LocalObjectStore(Path(bucket))
    cache = ObjectCache(store, Path(root), max_bytes=3 * 1000)
    wrong = []
    for round_ in range(rounds):
        name = f"arrays/{round_ % 5}"
        payload = str(round_ % 5).encode() * 1000
        path = cache.file(name, size=1000, sha256=hashlib.sha256(payload).hexdigest())
        try:
            read = path.read_bytes()
        except FileNotFoundError:
            continue  # evicted by the other process between the fetch and the read: allowed
        if read != payload:
            wrong.append(name)
    return wrong


def test_two_processes_share_one_cache_safely(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "bucket")
    for index in range(5):
        store.put_bytes(f"arrays/{index}", str(index).encode() * 1000)
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        results = pool.starmap(
            _fetch_many, [(str(tmp_path / "bucket"), str(tmp_path / "cache"), 60)] * 2
        )
    assert results == [[], []]
    cache = ObjectCache(store, tmp_path / "cache", max_bytes=3000)
    assert cache.used_bytes() <= 3000
    assert list(cache.staging.iterdir()) == []
