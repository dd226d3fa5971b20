"""What every backend of the storage seam does alike, on a local folder and on SeaweedFS."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.core.objects.store import InvalidObjectKey, ObjectNotFound, ObjectStore


def test_bytes_and_files_make_the_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    info = store.put_bytes("models/a/config.json", b'{"x": 1}')
    assert (info.size, info.sha256) == (8, hashlib.sha256(b'{"x": 1}').hexdigest())
    assert store.get_bytes("models/a/config.json") == b'{"x": 1}'

    source = tmp_path / "weights.bin"
    source.write_bytes(bytes(range(256)) * 4096)
    uploaded = store.put_file("models/a/weights.bin", source)
    target = tmp_path / "out" / "weights.bin"
    downloaded = store.download_to("models/a/weights.bin", target)
    assert target.read_bytes() == source.read_bytes()
    assert uploaded.sha256 == downloaded.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert downloaded.size == uploaded.size == 256 * 4096
    # Nothing but the file itself is left beside the target.
    assert [path.name for path in target.parent.iterdir()] == ["weights.bin"]


def test_a_file_replaced_after_its_put_leaves_the_object_as_it_was(
    store: ObjectStore, tmp_path: Path
) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"first")
    store.put_file("models/a/weights.bin", source)
    (tmp_path / "new").write_bytes(b"second")
    (tmp_path / "new").replace(source)  # clipft replaces files by renames
    source.unlink()
    assert store.get_bytes("models/a/weights.bin") == b"first"


def test_a_put_replaces_the_object(store: ObjectStore) -> None:
    store.put_bytes("a/b", b"first, longer")
    store.put_bytes("a/b", b"second")
    assert store.get_bytes("a/b") == b"second"
    assert store.stat("a/b").size == 6
    assert store.list("a/") == ["a/b"]


def test_stat_gives_the_size_and_sha256_of_the_bytes(store: ObjectStore, tmp_path: Path) -> None:
    payload = b"checksum me" * 100
    store.put_bytes("x/bytes", payload)
    (tmp_path / "file").write_bytes(payload)
    store.put_file("x/file", tmp_path / "file")
    for key in ("x/bytes", "x/file"):
        info = store.stat(key)
        assert (info.key, info.size, info.sha256) == (
            key,
            len(payload),
            hashlib.sha256(payload).hexdigest(),
        )


def test_list_gives_the_keys_under_a_prefix_sorted(store: ObjectStore) -> None:
    for key in ("jobs/1/checkpoints/epoch-2/w", "jobs/1/checkpoints/epoch-1/w", "jobs/12/x", "z"):
        store.put_bytes(key, b".")
    assert store.list("jobs/1/") == ["jobs/1/checkpoints/epoch-1/w", "jobs/1/checkpoints/epoch-2/w"]
    assert store.list("jobs/1") == [
        "jobs/1/checkpoints/epoch-1/w",
        "jobs/1/checkpoints/epoch-2/w",
        "jobs/12/x",
    ]
    assert store.list() == [*store.list("jobs/"), "z"]
    assert store.list("nothing/") == []


def test_delete_prefix_removes_a_folder_and_nothing_beside_it(store: ObjectStore) -> None:
    for key in ("m/1/a", "m/1/sub/b", "m/10/c"):
        store.put_bytes(key, b".")
    assert store.delete_prefix("m/1/") == 2
    assert store.list("m/") == ["m/10/c"]
    assert store.delete_prefix("m/1/") == 0
    store.delete("m/10/c")
    store.delete("m/10/c")  # a second delete is no error
    assert store.list() == []
    # A key may now take the name the deleted folder had.
    store.put_bytes("m/1", b"file now")
    assert store.get_bytes("m/1") == b"file now"


def test_a_missing_key_is_object_not_found(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("present/key", b".")
    assert store.exists("present/key")
    assert not store.exists("absent/key")
    assert not store.exists("present")  # a folder of keys is no object
    for read in (
        lambda: store.get_bytes("absent/key"),
        lambda: store.stat("absent/key"),
        lambda: store.download_to("absent/key", tmp_path / "target"),
        lambda: store.get_bytes("present"),
    ):
        with pytest.raises(ObjectNotFound) as raised:
            read()
        assert raised.value.key in ("absent/key", "present")
    assert not [path for path in tmp_path.iterdir() if "target" in path.name]


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../outside",
        "a/../../outside",
        "a/./b",
        "a//b",
        "folder/",
        "C:/windows",
        "a\\b",
        "bad\x00byte",
        ".staging/partial",
        "x" * 1025,
    ],
)
def test_keys_that_could_leave_the_store_are_refused(store: ObjectStore, key: str) -> None:
    for call in (
        lambda: store.put_bytes(key, b"."),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidObjectKey):
            call()
    assert store.list() == []


def test_delete_prefix_takes_only_a_folder(store: ObjectStore) -> None:
    store.put_bytes("models/abc", b".")
    for prefix in ("", "models/ab", "../"):
        with pytest.raises(InvalidObjectKey):
            store.delete_prefix(prefix)
    assert store.list() == ["models/abc"]
