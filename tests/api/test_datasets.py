"""`/datasets`: uploads in both layouts, the split, what lands on disk, and every bad input."""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.requests import Request

from app.core.config import Settings
from app.core.errors import PayloadTooLarge
from app.core.storage import dataset_dir, datasets_root
from app.datasets.archive import ArchiveEntry, SafeArchive
from app.datasets.ingest import choose_val, val_count
from app.datasets.upload import receive_upload
from app.main import create_app
from app.ml.manifest import read_manifest
from tests.datasets_helpers import (
    class_entries,
    class_zip,
    grey_ramp_bytes,
    image_bytes,
    make_zip,
    patch_central_header,
    symlink_entry,
    upload,
)

NOT_AN_IMAGE = "not an image in an allowed format (BMP, GIF, JPEG, PNG, TIFF, WEBP)"
TWO_CLASSES = class_entries({"cat": 2, "dog": 2})


@pytest.fixture(scope="module")
def existing(client: TestClient) -> dict[str, Any]:
    """A dataset made before the hostile uploads, which must leave it untouched."""
    response = upload(client, class_zip({"cat": 4, "dog": 4}), filename="pets.zip")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def total_datasets(client: TestClient) -> int:
    total: int = client.get("/datasets", params={"limit": 1}).json()["total"]
    return total


def folder_fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def dataset_folders(settings: Settings) -> set[str]:
    root = datasets_root(settings.data_dir)
    return {path.name for path in root.iterdir()} if root.exists() else set()


def assert_detail(response: Any, status: int, detail: str | re.Pattern[str]) -> None:
    assert response.status_code == status, response.text
    actual = response.json()["detail"]
    if isinstance(detail, str):
        assert actual == detail
    else:
        assert detail.fullmatch(actual), actual


class LeavesNothing:
    """Records the dataset folders and row count, to check a rejected upload left neither."""

    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.folders = dataset_folders(settings)
        self.total = total_datasets(client)

    def check(self) -> None:
        assert dataset_folders(self.settings) == self.folders
        assert total_datasets(self.client) == self.total


@pytest.fixture
def nothing_left(client: TestClient, settings: Settings) -> Iterator[LeavesNothing]:
    guard = LeavesNothing(client, settings)
    yield guard
    guard.check()


def dataset_manifest(settings: Settings, dataset_id: str) -> list[tuple[str, str]]:
    manifest = read_manifest(dataset_dir(settings.data_dir, dataset_id))
    return [(item.source, item.split) for item in manifest.items]


# --- uploads that succeed -------------------------------------------------------------------


def test_class_folders_become_a_ready_dataset(client: TestClient, settings: Settings) -> None:
    response = upload(client, class_zip({"cat": 4, "dog": 4}), filename="pets.zip")

    assert response.status_code == 201, response.text
    body = response.json()
    assert body == {
        "id": body["id"],
        "name": "pets",
        "status": "ready",
        "kind": "classification",
        "num_images": 8,
        "num_train": 6,
        "num_val": 2,
        "classes": ["cat", "dog"],
        "errors": [],
        "created_at": body["created_at"],
    }
    created_at = datetime.fromisoformat(body["created_at"])
    assert created_at.utcoffset() is not None and created_at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created_at).total_seconds()) < 60


def test_files_on_disk_are_the_manifest_and_normalised_images(
    client: TestClient, settings: Settings
) -> None:
    entries = [
        ("cat/big.png", image_bytes(size=(600, 300))),
        ("cat/rgba.png", image_bytes(mode="RGBA")),
        ("dog/palette.gif", image_bytes(image_format="GIF", mode="P")),
        ("dog/photo.jpg", image_bytes(size=(30, 10), image_format="JPEG")),
    ]
    response = upload(client, make_zip(entries))
    assert response.status_code == 201, response.text

    folder = dataset_dir(settings.data_dir, response.json()["id"])
    images = [f"images/{number}.png" for number in range(4)]
    assert sorted(folder_fingerprint(folder)) == sorted(["manifest.json", *images])
    manifest = read_manifest(folder)
    assert [(item.file, item.source, item.label) for item in manifest.items] == [
        ("images/0.png", "cat/big.png", "cat"),
        ("images/1.png", "cat/rgba.png", "cat"),
        ("images/2.png", "dog/palette.gif", "dog"),
        ("images/3.png", "dog/photo.jpg", "dog"),
    ]
    sizes = []
    for image_file in images:
        with Image.open(folder / image_file) as stored:
            assert (stored.format, stored.mode) == ("PNG", "RGB")
            sizes.append(stored.size)
    # The longest side is cut to stored_image_max_side (512), keeping the aspect ratio.
    assert sizes == [(512, 256), (8, 8), (8, 8), (30, 10)]


def test_exif_orientation_is_applied_before_storing(client: TestClient, settings: Settings) -> None:
    photo = image_bytes(size=(40, 20), image_format="JPEG", exif_orientation=6)
    entries = [("cat/turned.jpg", photo), ("dog/plain.jpg", image_bytes(image_format="JPEG"))]
    response = upload(client, make_zip(entries))
    assert response.status_code == 201, response.text

    folder = dataset_dir(settings.data_dir, response.json()["id"])
    with Image.open(folder / "images/0.png") as stored:
        assert stored.size == (20, 40)


def test_16_bit_and_float_images_are_scaled_not_clipped(
    client: TestClient, settings: Settings
) -> None:
    entries = [
        ("slides/16-bit.png", grey_ramp_bytes("uint16", 65535, "PNG")),
        ("slides/16-bit-big-endian.tif", grey_ramp_bytes(">u2", 65535, "TIFF")),
        ("slides/float.tif", grey_ramp_bytes("float32", 1.0, "TIFF")),
        ("photos/8-bit.png", grey_ramp_bytes("uint8", 255, "PNG")),
    ]
    response = upload(client, make_zip(entries))
    assert response.status_code == 201, response.text

    folder = dataset_dir(settings.data_dir, response.json()["id"])
    rows = []
    for number in range(len(entries)):
        with Image.open(folder / f"images/{number}.png") as stored:
            rows.append(np.asarray(stored)[0, :, 0].astype(int))
    eight_bit = rows[3]
    for row in rows[:3]:
        # The ramp black to white that was uploaded, as its 8-bit copy stores it.
        assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()
        assert (row == eight_bit).all()


def test_a_float_image_outside_0_to_1_is_refused_naming_its_mode(client: TestClient) -> None:
    entries = [
        ("slides/float.tif", grey_ramp_bytes("float32", 1000.0, "TIFF")),
        ("photos/8-bit.png", grey_ramp_bytes("uint8", 255, "PNG")),
    ]
    response = upload(client, make_zip(entries))
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(
        "slides/float.tif: float image (mode F) with values 0..1000: only 0..1 is read"
    )


def test_metadata_csv_with_labels_is_a_classification_set(
    client: TestClient, settings: Settings
) -> None:
    rows = ["file_name,label", "pics/a.png,cat", "pics/b.png, dog", "pics/c.png,cat"]
    entries = [(f"pics/{letter}.png", image_bytes()) for letter in "abc"]
    entries.append(("metadata.csv", "\n".join(rows) + "\n"))
    response = upload(client, make_zip(entries), name="from csv")

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["kind"], body["classes"]) == (
        "from csv",
        "classification",
        ["cat", "dog"],
    )
    assert (body["num_images"], body["num_train"], body["num_val"]) == (3, 2, 1)
    manifest = read_manifest(dataset_dir(settings.data_dir, body["id"]))
    assert [(item.source, item.label, item.text) for item in manifest.items] == [
        ("pics/a.png", "cat", None),
        ("pics/b.png", "dog", None),
        ("pics/c.png", "cat", None),
    ]


def test_metadata_jsonl_with_text_is_a_caption_set(client: TestClient, settings: Settings) -> None:
    captions = {f"{number}.png": f"a picture, number {number}" for number in range(8)}
    lines = [json.dumps({"file_name": name, "text": text}) for name, text in captions.items()]
    entries = [
        (name, image_bytes(colour=(number * 30, 0, 0))) for number, name in enumerate(captions)
    ]
    entries.append(("metadata.jsonl", "\n".join(lines) + "\n\n"))
    response = upload(client, make_zip(entries))

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["kind"], body["classes"], body["num_images"]) == ("captions", [], 8)
    assert (body["num_train"], body["num_val"]) == (6, 2)
    manifest = read_manifest(dataset_dir(settings.data_dir, body["id"]))
    assert {item.source: item.text for item in manifest.items} == captions
    assert all(item.label is None for item in manifest.items)


def test_one_wrapping_folder_is_stripped(client: TestClient, settings: Settings) -> None:
    entries = [("myset/", ""), *class_entries({"cat": 2, "dog": 2}, prefix="myset/")]
    response = upload(client, make_zip(entries))

    assert response.status_code == 201, response.text
    assert response.json()["classes"] == ["cat", "dog"]
    manifest = read_manifest(dataset_dir(settings.data_dir, response.json()["id"]))
    assert manifest.items[0].source == "myset/cat/000.png"  # the source keeps the zip's path


def test_a_wrapping_folder_around_metadata_is_stripped(client: TestClient) -> None:
    entries = [
        ("export/metadata.jsonl", '{"file_name": "img/1.png", "text": "one"}\n'),
        ("export/img/1.png", image_bytes()),
    ]
    response = upload(client, make_zip(entries))
    assert response.status_code == 201, response.text
    assert (response.json()["kind"], response.json()["num_images"]) == ("captions", 1)


def test_a_single_top_folder_of_images_is_one_class(client: TestClient) -> None:
    response = upload(client, class_zip({"cat": 3}))
    assert response.status_code == 201, response.text
    assert (response.json()["classes"], response.json()["num_val"]) == (["cat"], 1)


def test_macos_folders_and_hidden_files_are_ignored(client: TestClient) -> None:
    entries = [
        *TWO_CLASSES,
        (".DS_Store", b"\0\0\0\1Bud1"),
        ("cat/.DS_Store", b"\0\0\0\1Bud1"),
        ("__MACOSX/cat/._000.png", b"\0\5\26\7"),
        (".hidden/notes.txt", "not data"),
    ]
    response = upload(client, make_zip(entries))
    assert response.status_code == 201, response.text
    assert (response.json()["num_images"], response.json()["classes"]) == (4, ["cat", "dog"])


def test_the_name_defaults_to_the_file_name_without_zip(client: TestClient) -> None:
    response = upload(client, class_zip({"cat": 1}), filename="C:\\Users\\me\\Holiday Photos.ZIP")
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Holiday Photos"


def test_the_same_zip_twice_gets_the_same_split(client: TestClient, settings: Settings) -> None:
    payload = class_zip({"cat": 9, "dog": 7})
    first, second = upload(client, payload), upload(client, payload)
    assert first.status_code == second.status_code == 201

    assert dataset_manifest(settings, first.json()["id"]) == dataset_manifest(
        settings, second.json()["id"]
    )


def test_the_split_is_stratified_by_class(client: TestClient, settings: Settings) -> None:
    response = upload(client, class_zip({"a": 2, "b": 5, "c": 10, "d": 1}))
    assert response.status_code == 201, response.text

    manifest = read_manifest(dataset_dir(settings.data_dir, response.json()["id"]))
    val_per_class = Counter(item.label for item in manifest.split("val"))
    # val_fraction 0.25: round(0.5)=0 but at least 1; round(1.25)=1; round(2.5)=2 (to even);
    # a class of one image keeps it for training.
    assert val_per_class == {"a": 1, "b": 1, "c": 2}
    assert (response.json()["num_train"], response.json()["num_val"]) == (14, 4)


@pytest.mark.parametrize(
    ("size", "fraction", "expected"),
    [(1, 0.25, 0), (2, 0.25, 1), (4, 0.25, 1), (10, 0.25, 2), (10, 0.0, 0), (3, 0.9, 2)],
)
def test_val_count(size: int, fraction: float, expected: int) -> None:
    assert val_count(size, fraction) == expected


def test_adding_a_class_does_not_reshuffle_the_others() -> None:
    cats = [f"cat/{number}.png" for number in range(10)]
    dogs = [f"dog/{number}.png" for number in range(10)]
    alone = choose_val({"cat": cats}, val_fraction=0.3, seed=7)
    together = choose_val({"cat": list(reversed(cats)), "dog": dogs}, val_fraction=0.3, seed=7)
    assert alone == {name for name in together if name.startswith("cat/")}
    assert alone != choose_val({"cat": cats}, val_fraction=0.3, seed=8)


# --- reading datasets ----------------------------------------------------------------------


def test_get_returns_the_dataset(client: TestClient, existing: dict[str, Any]) -> None:
    response = client.get(f"/datasets/{existing['id']}")
    assert response.status_code == 200
    assert response.json() == existing


def test_get_an_unknown_dataset_is_404(client: TestClient) -> None:
    response = client.get("/datasets/no-such-id")
    assert_detail(response, 404, "dataset no-such-id not found")


def test_list_is_newest_first_and_paginated(client: TestClient) -> None:
    before = total_datasets(client)
    older = upload(client, class_zip({"cat": 1}), name="older").json()
    newer = upload(client, class_zip({"cat": 1}), name="newer").json()

    response = client.get("/datasets", params={"limit": 2})
    assert response.status_code == 200
    assert response.json() == {"items": [newer, older], "total": before + 2}
    second = client.get("/datasets", params={"limit": 1, "offset": 1}).json()
    assert second["items"] == [older]
    everything = client.get("/datasets", params={"limit": 200}).json()["items"]
    stamps = [item["created_at"] for item in everything]
    assert stamps == sorted(stamps, reverse=True)


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 201}, {"offset": -1}])
def test_list_refuses_bad_paging(client: TestClient, query: dict[str, int]) -> None:
    response = client.get("/datasets", params=query)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(query))]


def test_openapi_shows_a_multipart_body(client: TestClient) -> None:
    body = client.get("/openapi.json").json()["paths"]["/datasets"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"]
    assert set(schema["properties"]) == {"file", "name"}


# --- bad input -----------------------------------------------------------------------------


def duplicate_entry_zip() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate we want
        return make_zip([*TWO_CLASSES, ("cat/000.png", image_bytes())])


def truncated_png() -> bytes:
    # A varied picture, so the cut really loses pixel data rather than a tiny trailer.
    varied = Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48)
    buffer = io.BytesIO()
    varied.save(buffer, format="PNG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def metadata_zip(metadata_name: str, metadata: str | bytes, images: str = "ab") -> bytes:
    entries: list[tuple[str, bytes | str]] = [(f"{name}.png", image_bytes()) for name in images]
    return make_zip([*entries, (metadata_name, metadata)])


def jsonl(*rows: object) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


CONTROL_CHARACTER = "holds a control character (a newline, a tab, ...)"
ZERO_ZIP = make_zip([("cat/000.png", image_bytes()), ("cat/zeros.png", b"\0" * 400_000)])
ZERO_RATIO = max(
    info.file_size / info.compress_size for info in zipfile.ZipFile(io.BytesIO(ZERO_ZIP)).infolist()
)

BAD_UPLOADS = [
    pytest.param(
        b"PK but not really a zip",
        400,
        "set.zip: not a zip archive (File is not a zip file)",
        id="not-a-zip",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("../evil.txt", "x")]),
        400,
        "../evil.txt: unsafe path in the archive: it climbs out of its folder with '..'",
        id="parent-path",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("cat/../../evil.txt", "x")]),
        400,
        "cat/../../evil.txt: unsafe path in the archive: it climbs out of its folder with '..'",
        id="parent-path-inside",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("/tmp/evil.txt", "x")]),
        400,
        "/tmp/evil.txt: unsafe path in the archive: it is an absolute path",
        id="absolute-path",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("C:/evil.txt", "x")]),
        400,
        "C:/evil.txt: unsafe path in the archive: it starts with a drive letter",
        id="drive-letter",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("cat\\..\\..\\evil.txt", "x")]),
        400,
        "cat\\..\\..\\evil.txt: unsafe path in the archive: it has a backslash in its path",
        id="backslash",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, symlink_entry("cat/link.png", "/etc/passwd")]),
        400,
        "cat/link.png: symbolic links are not allowed in the archive",
        id="symlink",
    ),
    pytest.param(
        duplicate_entry_zip(),
        400,
        "cat/000.png: appears more than once in the archive",
        id="duplicate",
    ),
    pytest.param(
        patch_central_header(class_zip({"cat": 1}), flag_bits=0x1),
        400,
        "cat/000.png: encrypted entries are not supported",
        id="encrypted",
    ),
    pytest.param(
        # The header claims fewer bytes than the entry holds: reading stops there, and fails.
        patch_central_header(class_zip({"cat": 1}), file_size=10),
        400,
        "cat/000.png: cannot be read from the zip: Bad CRC-32 for file 'cat/000.png'",
        id="header-lies-about-size",
    ),
    pytest.param(
        ZERO_ZIP,
        413,
        f"cat/zeros.png: compression ratio {ZERO_RATIO:.0f} is over the limit of 200",
        id="compression-ratio",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("cat/bad.png", truncated_png())]),
        422,
        re.compile(r"cat/bad\.png: corrupt image: .+"),
        id="corrupt-image",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("cat/notes.txt", "hello")]),
        422,
        f"cat/notes.txt: {NOT_AN_IMAGE}",
        id="not-an-image",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("dog/old.pcx", image_bytes(image_format="PCX"))]),
        422,
        f"dog/old.pcx: {NOT_AN_IMAGE}",
        id="format-not-allowed",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("empty/", "")]),
        422,
        "empty/: class folder has no images",
        id="empty-class-folder",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("hidden-only/", ""), ("hidden-only/.DS_Store", "x")]),
        422,
        "hidden-only/: class folder has no images",
        id="class-folder-with-only-hidden-files",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("stray.png", image_bytes())]),
        422,
        "stray.png: file at the top level; in the class-folder layout every image sits in a "
        "folder named after its class (or add a metadata.csv)",
        id="image-at-root",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("cat/more/001.png", image_bytes())]),
        422,
        "cat/more/001.png: nested folder; images must sit directly inside their class folder",
        id="nested-folder",
    ),
    pytest.param(make_zip([]), 422, "set.zip: the archive contains no images", id="empty-zip"),
    pytest.param(
        make_zip([("photos/", ""), ("__MACOSX/._x.png", "x"), (".DS_Store", "x")]),
        422,
        "set.zip: the archive contains no images",
        id="no-images",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("   /000.png", image_bytes())]),
        422,
        "   /000.png: class name '   ' is only white space",
        id="class-name-of-spaces",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("big\ncat/000.png", image_bytes())]),
        422,
        f"big\ncat/000.png: class name 'big\\ncat' {CONTROL_CHARACTER}",
        id="class-name-with-a-newline",
    ),
    pytest.param(
        metadata_zip("metadata.csv", 'file_name,label\na.png,"big\tcat"\nb.png,dog\n'),
        422,
        f"a.png: class name 'big\\tcat' {CONTROL_CHARACTER}",
        id="metadata-label-with-a-tab",
    ),
    pytest.param(
        make_zip([*TWO_CLASSES, ("c" * 4000 + "/000.png", image_bytes())]),
        422,
        "c" * 4000 + "/000.png: class name '" + "c" * 40 + "...' is 4000 characters, over "
        "the limit of 200",
        id="class-name-of-4000-characters",
    ),
    pytest.param(
        make_zip(
            [
                ("img/2.png", image_bytes()),
                ("img//2.png", image_bytes(colour=(0, 0, 255))),
                ("metadata.csv", "file_name,label\nimg/2.png,cat\n"),
            ]
        ),
        422,
        "img//2.png: the same path as img/2.png; keep one",
        id="two-spellings-of-one-path",
    ),
    pytest.param(
        metadata_zip("metadata.csv", "name,label\na.png,cat\nb.png,dog\n"),
        422,
        "metadata.csv: missing column `file_name`",
        id="csv-without-file-name",
    ),
    pytest.param(
        metadata_zip("metadata.csv", "file_name,caption\na.png,x\nb.png,y\n"),
        422,
        "metadata.csv: missing column: needs `text` (captions) or `label` (classification)",
        id="csv-without-text-or-label",
    ),
    pytest.param(
        metadata_zip("metadata.jsonl", jsonl({"file_name": "a.png"}, {"file_name": "b.png"})),
        422,
        "metadata.jsonl: missing column: needs `text` (captions) or `label` (classification)",
        id="jsonl-without-text-or-label",
    ),
    pytest.param(
        metadata_zip("metadata.csv", "file_name,text,label\na.png,x,cat\nb.png,y,dog\n"),
        422,
        "metadata.csv: has both `text` and `label` columns; keep one",
        id="csv-with-text-and-label",
    ),
    pytest.param(
        metadata_zip("metadata.csv", "file_name,label\na.png,cat\nb.png,dog\nc.png,cat\n"),
        422,
        "metadata.csv line 4: file_name 'c.png' is not an image in the archive",
        id="row-names-a-missing-image",
    ),
    pytest.param(
        metadata_zip("metadata.csv", "file_name,label\na.png,cat\nb.png,\n"),
        422,
        "metadata.csv line 3: `label` is empty or missing",
        id="empty-label",
    ),
    pytest.param(
        metadata_zip("metadata.csv", "file_name,label\na.png,cat\na.png,dog\n"),
        422,
        "metadata.csv line 3: a.png is listed more than once",
        id="listed-twice",
    ),
    pytest.param(
        metadata_zip("metadata.csv", "file_name,label\na.png,cat\n"),
        422,
        "b.png: not listed in metadata.csv",
        id="image-not-listed",
    ),
    pytest.param(
        metadata_zip("metadata.csv", "file_name,label\na.png,café\nb.png,dog\n".encode("latin-1")),
        422,
        "metadata.csv: not UTF-8 text (invalid continuation byte at byte 25)",
        id="not-utf8",
    ),
    pytest.param(
        metadata_zip("metadata.jsonl", jsonl({"file_name": "a.png", "text": "x"}) + "{oops\n"),
        422,
        re.compile(r"metadata\.jsonl line 2: not valid JSON: .+"),
        id="malformed-jsonl",
    ),
    pytest.param(
        metadata_zip("metadata.jsonl", '["a.png", "x"]\n'),
        422,
        "metadata.jsonl line 1: not a JSON object",
        id="jsonl-not-an-object",
    ),
    pytest.param(
        metadata_zip(
            "metadata.jsonl",
            jsonl({"file_name": "a.png", "text": "x"}, {"file_name": "b.png", "text": "  "}),
        ),
        422,
        "metadata.jsonl line 2: `text` is empty or missing",
        id="empty-text",
    ),
    pytest.param(
        metadata_zip("metadata.jsonl", jsonl({"file_name": "a.png", "text": "x"}, {"text": "y"})),
        422,
        "metadata.jsonl line 2: `file_name` is empty or missing",
        id="jsonl-row-without-file-name",
    ),
    pytest.param(
        make_zip(
            [
                ("a.png", image_bytes()),
                ("metadata.csv", "file_name,label\na.png,cat\n"),
                ("metadata.jsonl", jsonl({"file_name": "a.png", "label": "cat"})),
            ]
        ),
        422,
        "set.zip: has both metadata.csv and metadata.jsonl at its root; keep one",
        id="two-metadata-files",
    ),
]


@pytest.mark.parametrize(("payload", "status", "detail"), BAD_UPLOADS)
def test_bad_uploads_are_refused_and_leave_nothing(
    client: TestClient,
    nothing_left: LeavesNothing,
    payload: bytes,
    status: int,
    detail: str | re.Pattern[str],
) -> None:
    assert_detail(upload(client, payload), status, detail)


MARKER = f"clipft-evil-{uuid.uuid4().hex}.txt"


CLIMBS = "unsafe path in the archive: it climbs out of its folder with '..'"


@pytest.mark.parametrize(
    ("hostile", "detail"),
    [
        ((f"../{MARKER}", "x"), f"../{MARKER}: {CLIMBS}"),
        ((f"../../{MARKER}", "x"), f"../../{MARKER}: {CLIMBS}"),
        ((f"cat/../../../{MARKER}", "x"), f"cat/../../../{MARKER}: {CLIMBS}"),
        (
            (f"/tmp/{MARKER}", "x"),
            f"/tmp/{MARKER}: unsafe path in the archive: it is an absolute path",
        ),
        (
            (f"C:/{MARKER}", "x"),
            f"C:/{MARKER}: unsafe path in the archive: it starts with a drive letter",
        ),
        (
            (f"..\\{MARKER}", "x"),
            f"..\\{MARKER}: unsafe path in the archive: it has a backslash in its path",
        ),
        (
            symlink_entry(f"cat/{MARKER}", "../../../.."),
            f"cat/{MARKER}: symbolic links are not allowed in the archive",
        ),
    ],
    ids=["parent", "grandparent", "climb-from-class", "absolute", "drive", "backslash", "symlink"],
)
def test_hostile_paths_write_nothing_anywhere(
    client: TestClient,
    settings: Settings,
    existing: dict[str, Any],
    nothing_left: LeavesNothing,
    hostile: tuple[str | zipfile.ZipInfo, bytes | str],
    detail: str,
) -> None:
    existing_folder = dataset_dir(settings.data_dir, existing["id"])
    before = folder_fingerprint(existing_folder)
    response = upload(client, make_zip([*TWO_CLASSES, hostile]))

    assert_detail(response, 400, detail)
    assert folder_fingerprint(existing_folder) == before
    # Everything the tests write lives under pytest's base folder; the zip also names /tmp.
    assert not list(settings.data_dir.parent.rglob(MARKER))
    assert not (Path("/tmp") / MARKER).exists()
    assert not (Path.cwd() / MARKER).exists()
    assert client.get(f"/datasets/{existing['id']}").json() == existing


def test_too_many_entries_is_413(client: TestClient, settings: Settings) -> None:
    guard = LeavesNothing(client, settings)
    limited = settings.model_copy(update={"max_archive_entries": 3})
    with TestClient(create_app(limited)) as limited_client:
        response = upload(limited_client, class_zip({"cat": 2, "dog": 2}))
    assert_detail(response, 413, "set.zip: has 4 entries, over the limit of 3")
    guard.check()


def test_too_many_bytes_unpacked_is_413(client: TestClient, settings: Settings) -> None:
    guard = LeavesNothing(client, settings)
    payload = class_zip({"cat": 2, "dog": 2})
    declared = sum(info.file_size for info in zipfile.ZipFile(io.BytesIO(payload)).infolist())
    limited = settings.model_copy(update={"max_uncompressed_bytes": declared - 1})
    with TestClient(create_app(limited)) as limited_client:
        response = upload(limited_client, payload)
    assert_detail(
        response, 413, f"set.zip: unpacks to {declared} bytes, over the limit of {declared - 1}"
    )
    guard.check()


def test_an_image_over_the_pixel_limit_is_422(client: TestClient, settings: Settings) -> None:
    guard = LeavesNothing(client, settings)
    entries = [*TWO_CLASSES, ("dog/huge.png", image_bytes(size=(10, 8)))]
    limited = settings.model_copy(update={"max_image_pixels": 79})
    with TestClient(create_app(limited)) as limited_client:
        response = upload(limited_client, make_zip(entries))
    assert_detail(response, 422, "dog/huge.png: image is 10x8 = 80 pixels, over the limit of 79")
    guard.check()


def test_an_upload_declared_too_large_is_413(client: TestClient, settings: Settings) -> None:
    guard = LeavesNothing(client, settings)
    limited = settings.model_copy(update={"max_upload_bytes": 1000})
    with TestClient(create_app(limited)) as limited_client:
        response = upload(limited_client, class_zip({"cat": 20}))
    assert_detail(response, 413, re.compile(r"file: upload is \d+ bytes, over the limit of 1000"))
    guard.check()


def test_an_upload_streamed_too_large_is_413(client: TestClient, settings: Settings) -> None:
    guard = LeavesNothing(client, settings)
    boundary = "clipft-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:  # a generator: sent chunked, with no Content-Length
        yield head
        for _ in range(20):
            yield b"x" * 100

    limited = settings.model_copy(update={"max_upload_bytes": 1000})
    with TestClient(create_app(limited)) as limited_client:
        response = limited_client.post(
            "/datasets",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert_detail(response, 413, "file: upload is over the limit of 1000 bytes")
    guard.check()


def test_reading_stops_as_soon_as_the_limit_is_passed(tmp_path: Path) -> None:
    boundary = b"limit"
    chunks = [
        b'--limit\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n',
        *([b"x" * 100] * 1000),
    ]
    handed_out = 0

    async def receive() -> dict[str, Any]:
        nonlocal handed_out
        handed_out += 1
        return {"type": "http.request", "body": chunks[handed_out - 1], "more_body": True}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/datasets",
        "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=" + boundary)],
    }
    folder = tmp_path / "new-dataset"
    limit = len(chunks[0]) + 450
    with pytest.raises(PayloadTooLarge) as caught:
        anyio.run(partial(receive_upload, Request(scope, receive), folder=folder, max_bytes=limit))
    assert caught.value.detail == f"file: upload is over the limit of {limit} bytes"
    # The part header and five chunks of 100 pass the limit: not one chunk more is read.
    assert handed_out == 6
    assert not folder.exists()


def test_a_missing_file_field_is_422(client: TestClient, nothing_left: LeavesNothing) -> None:
    response = client.post("/datasets", files={"name": (None, "no file here")})
    assert_detail(response, 422, "file: field required (a zip archive)")


def test_a_body_that_is_not_multipart_is_422(
    client: TestClient, nothing_left: LeavesNothing
) -> None:
    response = client.post("/datasets", json={"file": "a.zip"})
    assert_detail(
        response, 422, "file: field required; send multipart/form-data with the zip in `file`"
    )


def test_a_cut_off_multipart_body_is_400(client: TestClient, nothing_left: LeavesNothing) -> None:
    head = b'--cut\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\nPK'
    response = client.post(
        "/datasets", content=head, headers={"content-type": "multipart/form-data; boundary=cut"}
    )
    assert_detail(response, 400, "malformed multipart body: it ends before its closing boundary")


def test_a_name_over_200_characters_is_422(client: TestClient, nothing_left: LeavesNothing) -> None:
    response = upload(client, class_zip({"cat": 1}), name="x" * 201)
    assert_detail(response, 422, "name: at most 200 characters")


def test_an_entry_that_outgrows_its_declared_size_is_cut_off() -> None:
    class Unpacker:
        """Stands in for a zip whose decompressor gives more than the header said."""

        def open(self, _info: zipfile.ZipInfo) -> io.BytesIO:
            return io.BytesIO(b"x" * 5000)

    info = zipfile.ZipInfo("cat/liar.png")
    info.file_size = 100
    entry = ArchiveEntry(name=info.filename, parts=("cat", "liar.png"), is_dir=False, info=info)
    archive = SafeArchive(Unpacker(), [entry])  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLarge) as caught:
        archive.read(entry)
    assert (
        caught.value.detail
        == "cat/liar.png: unpacks to more than the 100 bytes its header declares"
    )


def test_an_entry_larger_than_any_image_is_refused_by_its_declared_size_unread(
    settings: Settings,
) -> None:
    # The header claims 1 GiB for a tiny image. Read, it would be accepted (the ratio limit is
    # loosened here to let it through), so a refusal can only come from the declared size.
    lying = patch_central_header(class_zip({"cat": 2}), file_size=2**30)
    loose = settings.model_copy(update={"max_compression_ratio": 1e12})
    root = datasets_root(settings.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    with TestClient(create_app(loose, run_reconciler=False)) as loose_client:
        response = upload(loose_client, lying)
    assert_detail(
        response,
        413,
        f"cat/000.png: declares {2**30} bytes unpacked, over the limit of "
        f"{settings.max_archive_entry_bytes} for one file",
    )
    assert set(root.iterdir()) == before


def test_a_metadata_file_over_its_limit_is_refused_by_its_declared_size(
    settings: Settings,
) -> None:
    metadata = "file_name,label\na.png,cat\nb.png,dog\n"
    tight = settings.model_copy(update={"max_metadata_bytes": len(metadata) - 1})
    with TestClient(create_app(tight, run_reconciler=False)) as tight_client:
        response = upload(tight_client, metadata_zip("metadata.csv", metadata))
    assert_detail(
        response,
        413,
        f"metadata.csv: declares {len(metadata)} bytes unpacked, over the limit of "
        f"{len(metadata) - 1} for a metadata file",
    )


@pytest.mark.faults
def test_an_upload_is_refused_with_507_when_the_disk_is_nearly_full(settings: Settings) -> None:
    # A floor above any real disk's free space stands in for a full disk.
    full = settings.model_copy(update={"min_free_disk_bytes": 2**62})
    root = datasets_root(settings.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    with TestClient(create_app(full, run_reconciler=False)) as tight:
        response = upload(tight, class_zip({"cat": 2}), filename="pets.zip")
    assert response.status_code == 507
    assert response.json()["detail"].startswith("not enough free disk space:")
    assert set(root.iterdir()) == before  # nothing written


def test_a_ready_dataset_is_published_whole_and_its_delete_unpublishes_it(
    client: TestClient, settings: Settings
) -> None:
    from app.core.objects.factory import open_store
    from app.core.objects.folders import read_manifest as read_folder_manifest

    response = upload(client, class_zip({"cat": 2, "dog": 2}))
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    store = open_store(settings)
    published = read_folder_manifest(store, f"datasets/{dataset_id}")
    # A worker on another machine finds every file of it (and their checksums) in the store.
    folder = dataset_dir(settings.data_dir, dataset_id)
    assert published is not None
    assert {entry.name: entry.size for entry in published.files} == {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file()
    }

    assert client.delete(f"/datasets/{dataset_id}").status_code == 204
    assert read_folder_manifest(store, f"datasets/{dataset_id}") is None
    assert store.list(f"datasets/{dataset_id}/") == []
