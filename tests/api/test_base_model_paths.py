"""A `base_model` that looks like a path reaches no folder: not another tenant's model, not any
folder under the working directory, and its error is the same whether such a folder exists."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from huggingface_hub.errors import LocalEntryNotFoundError

from app.core.config import Settings
from app.main import create_app
from app.ml import base_models
from app.ml.synthetic import make_images, png_bytes
from tests.model_factory import register_model, write_model_folder

LABELS = ["red circle", "blue triangle"]


@pytest.fixture
def hub_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub as a machine without network sees it (the tests' machine may have some)."""

    def unreachable(*, repo_id: str, **_: Any) -> str:
        raise LocalEntryNotFoundError(f"cannot reach the hub for {repo_id}")

    monkeypatch.setattr(base_models, "snapshot_download", unreachable, raising=False)


@pytest.fixture
def fresh_client(settings: Settings, hub_without_network: None) -> Iterator[TestClient]:
    """An api with an empty model cache: no base model loaded before this test."""
    with TestClient(create_app(settings, run_reconciler=False)) as test_client:
        yield test_client


def image() -> str:
    sample = make_images(("red circle",), per_class=1, seed=4)[0]
    return base64.b64encode(png_bytes(sample.image)).decode()


def answers(client: TestClient, base_model: str, dataset_id: str) -> list[tuple[int, Any]]:
    """What /predict (zero-shot), /embed and POST /jobs answer for `base_model`."""
    responses = [
        client.post(
            "/predict", json={"base_model": base_model, "labels": LABELS, "images": [image()]}
        ),
        client.post("/embed", json={"base_model": base_model, "texts": ["a red circle"]}),
        client.post("/jobs", json={"dataset_id": dataset_id, "base_model": base_model}),
    ]
    return [(response.status_code, response.json()) for response in responses]


def test_another_tenants_model_folder_is_no_base_model(
    fresh_client: TestClient,
    settings: Settings,
    ready_dataset: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    others_model = register_model(settings=settings, tenant="tenant-a")
    name = f"models/{others_model}"
    # The working directory a systemd unit gives the api: the data directory, where
    # `models/<id>/` is A's real saved model.
    monkeypatch.chdir(settings.data_dir)
    with_folder = answers(fresh_client, name, ready_dataset)
    monkeypatch.chdir(tmp_path)  # where it is not
    without_folder = answers(fresh_client, name, ready_dataset)

    assert [status for status, _ in with_folder] == [422, 422, 422], with_folder
    for _, body in with_folder:
        assert f"unknown base model {name!r}: expected" in body["detail"], body
    assert with_folder == without_folder


def test_a_hub_id_is_never_a_folder_under_the_working_directory(
    fresh_client: TestClient,
    ready_dataset: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "shop-team/private-clip"
    write_model_folder(tmp_path / "with" / "shop-team" / "private-clip")
    (tmp_path / "without").mkdir()
    monkeypatch.chdir(tmp_path / "with")
    with_folder = answers(fresh_client, name, ready_dataset)
    monkeypatch.chdir(tmp_path / "without")
    without_folder = answers(fresh_client, name, ready_dataset)

    # Serving asks the hub, which cannot be reached here: the folder of that name is not read.
    (predict_status, predicted), (embed_status, embedded), (job_status, job) = with_folder
    assert (predict_status, embed_status) == (409, 409), with_folder
    assert predicted == {
        "detail": f"base model {name} cannot be served: it does not load (BaseModelUnavailable)"
    }
    assert embedded == predicted
    # A job may name any hub id when downloads are on; its worker asks the hub alike
    # (tests/ml/test_base_models.py), so the job is queued the same either way.
    assert job_status == 201 and job["base_model"] == name
    assert with_folder[:2] == without_folder[:2]
    assert without_folder[2][0] == 201
