"""`/predict`'s multipart bodies: read part by part, each image decoding as soon as it arrives
when the model is already known, and every malformed or oversized body refused with a 4xx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from app.auth.requests import OPEN_ACCESS
from app.core.config import Settings
from app.core.principal import Principal
from app.inference.pixels import PixelPool, gather
from app.main import create_app
from app.predict.early_decode import EarlyDecode
from app.predict.form_reader import FormLimits, ReceivedForm, read_form
from app.predict.serving import image_limits
from tests.api.predict_requests import assert_same_answer, encoded, post_multipart, shape_png
from tests.model_factory import register_model

BOUNDARY = "clipft-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
LIMITS = FormLimits(
    max_images=8, max_image_bytes=1024**2, max_texts=8, max_other_fields=8, max_field_bytes=1024
)


def text_part(name: str, value: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
    return head.encode() + value + b"\r\n"


def file_part(filename: str, payload: bytes, name: str = "files") -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
        f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
    )
    return head.encode() + payload + b"\r\n"


CLOSING = f"--{BOUNDARY}--\r\n".encode()


def post_body(client: TestClient, body: bytes) -> httpx.Response:
    return client.post("/predict", content=body, headers={"content-type": CONTENT_TYPE})


@pytest.fixture(scope="module")
def classifier_id(settings: Settings) -> str:
    return register_model(settings=settings, name="multipart classifier")


@pytest.fixture(scope="module")
def early_client(settings: Settings) -> Iterator[TestClient]:
    """An api that decodes early whatever the machine's cores (`auto` is off on two)."""
    early = settings.model_copy(update={"predict_early_decode": "on"})
    with TestClient(create_app(early, run_reconciler=False)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def known_model(early_client: TestClient, classifier_id: str) -> str:
    """A model this api process has served once: its row remembered, its weights loaded."""
    response = post_multipart(early_client, [("warm.png", shape_png())], model_id=classifier_id)
    assert response.status_code == 200, response.text
    return classifier_id


def early_decode(
    client: TestClient,
    settings: Settings,
    *,
    principal: Principal = OPEN_ACCESS,
    enabled: bool = True,
) -> EarlyDecode:
    """An EarlyDecode over the api's own pixel pool, model cache and model lookup."""
    state = client.app.state  # type: ignore[attr-defined]
    return EarlyDecode(
        pixel_pool=state.pixel_pool,
        limits=image_limits(settings),
        model_cache=state.model_cache,
        model_lookup=state.model_lookup,
        principal=principal,
        enabled=enabled,
    )


def read(chunks: AsyncIterator[bytes], early: EarlyDecode) -> ReceivedForm:
    return asyncio.run(
        read_form(chunks, boundary=BOUNDARY.encode(), limits=LIMITS, on_image=early.image_arrived)
    )


# Decoding while the body arrives.


def test_a_known_models_first_image_decodes_before_the_body_ends(
    early_client: TestClient, settings: Settings, known_model: str
) -> None:
    client = early_client
    images = [shape_png(seed=seed) for seed in range(3)]
    head = text_part("model_id", known_model.encode()) + file_part("0.png", images[0])
    # The first part ends where the parser sees the next boundary: send that much, then hold
    # the rest back until the first image has been decoded.
    rest = b"".join(file_part(f"{index}.png", image) for index, image in enumerate(images))
    rest = rest[len(file_part("0.png", images[0])) :] + CLOSING
    early = early_decode(client, settings)
    held_back_until_decoded: list[bool] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield head + rest[:40]
        pending = early.pending()
        deadline = time.monotonic() + 10
        while pending is not None and not pending.futures[0].done():
            assert time.monotonic() < deadline, "the first image never finished decoding"
            await asyncio.sleep(0.01)
        held_back_until_decoded.append(pending is not None)
        yield rest[40:]

    form = read(chunks(), early)

    assert held_back_until_decoded == [True]
    assert [image.name for image in form.images] == ["file '0.png'", "file '1.png'", "file '2.png'"]
    pending = early.pending()
    assert pending is not None and len(pending.futures) == 3
    pool: PixelPool = client.app.state.pixel_pool  # type: ignore[attr-defined]
    decoded_after = pool.batch(
        images,
        limits=image_limits(settings),
        spec=pending.spec,
    )
    assert torch.equal(gather(pending.futures), decoded_after)


def test_a_model_not_yet_known_decodes_after_the_body(
    early_client: TestClient, settings: Settings
) -> None:
    client = early_client
    unknown = register_model(settings=settings, name="never served")
    early = early_decode(client, settings)

    async def chunks() -> AsyncIterator[bytes]:
        yield text_part("model_id", unknown.encode()) + file_part("a.png", shape_png()) + CLOSING

    form = read(chunks(), early)

    assert len(form.images) == 1
    assert early.pending() is None


def test_a_model_named_after_the_images_decodes_after_the_body(
    early_client: TestClient, settings: Settings, known_model: str
) -> None:
    early = early_decode(early_client, settings)

    async def chunks() -> AsyncIterator[bytes]:
        yield file_part("a.png", shape_png()) + text_part("model_id", known_model.encode())
        yield CLOSING

    form = read(chunks(), early)

    assert form.fields == {"model_id": [known_model]}
    assert early.pending() is None


def test_answers_are_the_same_with_and_without_early_decoding(
    early_client: TestClient, known_model: str
) -> None:
    client = early_client
    images = [shape_png("red circle"), shape_png("blue triangle", seed=1)]
    from_json = client.post(
        "/predict", json={"model_id": known_model, "images": [encoded(image) for image in images]}
    )
    body = text_part("model_id", known_model.encode())
    body += b"".join(file_part(f"{index}.png", image) for index, image in enumerate(images))

    early = post_body(client, body + CLOSING)

    assert from_json.status_code == early.status_code == 200
    assert_same_answer(early.json()["predictions"], from_json.json()["predictions"])


def test_a_bad_image_decoding_early_is_named(early_client: TestClient, known_model: str) -> None:
    client = early_client
    body = text_part("model_id", known_model.encode()) + file_part("ok.png", shape_png())
    body += file_part("notes.png", b"plain text, not a picture") + CLOSING

    response = post_body(client, body)

    assert response.status_code == 422
    assert response.json()["detail"].startswith("file 'notes.png': not an image")


def test_another_tenants_model_is_not_decoded_early(
    early_client: TestClient, settings: Settings, known_model: str
) -> None:
    outsider = Principal(tenant="someone-else", admin=False)
    early = early_decode(early_client, settings, principal=outsider)

    async def chunks() -> AsyncIterator[bytes]:
        yield text_part("model_id", known_model.encode()) + file_part("a.png", shape_png())
        yield CLOSING

    read(chunks(), early)

    assert early.pending() is None


def test_nothing_decodes_early_when_it_is_off(
    early_client: TestClient, settings: Settings, known_model: str
) -> None:
    early = early_decode(early_client, settings, enabled=False)

    async def chunks() -> AsyncIterator[bytes]:
        yield text_part("model_id", known_model.encode()) + file_part("a.png", shape_png())
        yield CLOSING

    form = read(chunks(), early)

    assert len(form.images) == 1
    assert early.pending() is None


@pytest.mark.parametrize(
    ("setting", "threads", "cores", "expected"),
    [
        ("auto", 2, 2, False),
        ("auto", 8, 16, True),
        ("auto", 2, 3, False),
        ("on", 2, 2, True),
        ("off", 2, 16, False),
    ],
)
def test_early_decoding_runs_where_cores_are_spare(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    threads: int,
    cores: int,
    expected: bool,
) -> None:
    monkeypatch.setattr("app.core.config.os.cpu_count", lambda: cores)
    chosen = settings.model_copy(
        update={"predict_early_decode": setting, "predict_threads": threads}
    )

    assert chosen.decodes_early is expected


# Malformed and oversized bodies.


def test_a_body_cut_short_is_400(client: TestClient, known_model: str) -> None:
    body = text_part("model_id", known_model.encode()) + file_part("a.png", shape_png())

    response = post_body(client, body[:-100])

    assert response.status_code == 400
    assert response.json() == {
        "detail": "malformed multipart body: it ends before its closing boundary"
    }


def test_multipart_without_a_boundary_is_400(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b"--x--\r\n", headers={"content-type": "multipart/form-data"}
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "multipart/form-data needs a boundary parameter in its content type"
    }


def test_a_text_field_that_is_not_utf8_is_422(client: TestClient, known_model: str) -> None:
    body = text_part("model_id", known_model.encode()) + text_part("texts", b"caf\xe9")
    body += file_part("a.png", shape_png()) + CLOSING

    response = post_body(client, body)

    assert response.status_code == 422
    assert response.json() == {"detail": "texts: not UTF-8 text"}


def test_a_text_field_over_a_mebibyte_is_413(client: TestClient, known_model: str) -> None:
    body = text_part("model_id", known_model.encode()) + text_part("texts", b"a" * (1024**2 + 1))
    body += file_part("a.png", shape_png()) + CLOSING

    response = post_body(client, body)

    assert response.status_code == 413
    assert response.json() == {"detail": "a form field is too large: texts is over 1048576 bytes"}


def test_too_many_form_fields_is_413(strict_client: TestClient) -> None:
    body = b"".join(text_part("texts", b"a cat") for _ in range(40)) + CLOSING

    response = post_body(strict_client, body)

    assert response.status_code == 413
    assert response.json() == {"detail": "too many form fields: at most 2 texts per request"}


def test_a_file_in_a_text_field_is_422(client: TestClient, known_model: str) -> None:
    body = text_part("model_id", known_model.encode()) + file_part("a.png", shape_png())
    body += file_part("labels.txt", b"cat", name="texts") + CLOSING

    response = post_body(client, body)

    assert response.status_code == 422
    assert response.json() == {"detail": "texts must be a text field, not a file"}


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(
    strict_client: TestClient,
) -> None:
    # Two images of 5000 bytes with their part headers, and 16 MiB for the text fields.
    limit = 2 * (5000 + 4096) + 16 * 1024**2

    response = strict_client.post(
        "/predict",
        content=b"-" * (limit + 1),
        headers={"content-type": CONTENT_TYPE},
    )

    assert response.status_code == 413
    assert response.json() == {"detail": f"request body is over the limit of {limit} bytes"}
