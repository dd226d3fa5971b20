"""Fixtures shared by the api tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app


@pytest.fixture(scope="module")
def strict_client(settings: Settings) -> Iterator[TestClient]:
    """An app with small /predict limits (2 images, 2 texts, 5000 bytes an image), so that
    going over them is cheap to test."""
    limits = {"predict_max_images": 2, "predict_max_texts": 2, "predict_max_image_bytes": 5000}
    with TestClient(create_app(settings.model_copy(update=limits))) as test_client:
        yield test_client
