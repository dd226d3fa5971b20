"""What the predict tests send and how they compare answers."""

from __future__ import annotations

import base64
import io
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.ml.synthetic import draw_shape, photo_like

TEXTS = ["a photo of a red circle.", "a photo of a blue triangle.", "a green square"]


def shape_png(label: str = "red circle", seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    draw_shape(label, random.Random(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64() -> str:
    buffer = io.BytesIO()
    photo_like(64, 48, seed=3).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def encoded(payload: bytes) -> str:
    return base64.b64encode(payload).decode()


def post_json(client: TestClient, **body: Any) -> httpx.Response:
    return client.post("/predict", json=body)


def post_multipart(
    client: TestClient, files: list[tuple[str, bytes]], **fields: Any
) -> httpx.Response:
    uploads = [("files", (name, payload, "application/octet-stream")) for name, payload in files]
    return client.post("/predict", data=fields, files=uploads)


def assert_same_answer(actual: Any, expected: Any) -> None:
    """Equal structure and labels, scores equal up to float rounding."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        for key, value in expected.items():
            assert_same_answer(actual[key], value)
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for actual_item, expected_item in zip(actual, expected, strict=True):
            assert_same_answer(actual_item, expected_item)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-6)
    else:
        assert actual == expected


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
