"""Images are stored by a thread pool, with the same files and errors as one at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.storage import dataset_dir
from app.main import create_app
from app.ml.synthetic import make_images, png_bytes
from tests.datasets_helpers import make_zip, upload


def shapes_zip(broken: frozenset[int] = frozenset()) -> bytes:
    samples = make_images(per_class=6, seed=3)
    return make_zip(
        (
            f"{sample.label}/{index:03d}.png",
            b"not an image" if index in broken else png_bytes(sample.image),
        )
        for index, sample in enumerate(samples)
    )


def stored_digests(settings: Settings, dataset_id: str) -> dict[str, str]:
    folder = dataset_dir(settings.data_dir, dataset_id) / "images"
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


@pytest.fixture(params=[1, 4], ids=["1-thread", "4-threads"])
def threaded(request: pytest.FixtureRequest, settings: Settings) -> Iterator[TestClient]:
    own = settings.model_copy(update={"ingest_threads": request.param})
    with TestClient(create_app(own, run_reconciler=False)) as client:
        yield client


def test_threads_store_the_same_files_as_one_thread(settings: Settings) -> None:
    digests = []
    for threads in (1, 4):
        own = settings.model_copy(update={"ingest_threads": threads})
        with TestClient(create_app(own, run_reconciler=False)) as client:
            response = upload(client, shapes_zip())
            assert response.status_code == 201, response.text
            digests.append(stored_digests(own, response.json()["id"]))
    assert len(digests[0]) == 24
    assert digests[0] == digests[1]


def test_every_bad_image_is_listed_in_archive_order(threaded: TestClient) -> None:
    broken = frozenset({5, 6, 17, 23})
    samples = make_images(per_class=6, seed=3)
    expected = sorted(f"{samples[index].label}/{index:03d}.png" for index in broken)
    # Entries are taken in sorted path order: blue triangle (12-17) comes before the others.
    assert expected[0] == "blue triangle/017.png"
    for _ in range(3):
        response = upload(threaded, shapes_zip(broken=broken))
        assert response.status_code == 422
        body = response.json()
        assert body["detail"].startswith("blue triangle/017.png: not an image")
        assert body["detail"].endswith("(and 3 more: see `errors`)")
        assert [row["file"] for row in body["errors"]] == expected
        assert all(row["error"].startswith("not an image") for row in body["errors"])
        assert (body["files_checked"], body["files_refused"]) == (24, 4)
