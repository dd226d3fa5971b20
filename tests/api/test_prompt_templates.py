"""One prompt-template rule (app/ml/prompts.py): a template that trains is one that /predict takes,
and one that either refuses, both refuse with the same words."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.ml.prompts import MAX_PROMPT_TEMPLATES
from tests.api.zero_shot_requests import encoded

CASES: list[tuple[list[str], str | None]] = [
    (["a photo of a {}."], None),
    # Doubled braces are literal braces to str.format, which fills the template.
    (["a {{photo}} of {}"], None),
    (["{}"] * MAX_PROMPT_TEMPLATES, None),
    (["{}"] * (MAX_PROMPT_TEMPLATES + 1), f"at most {MAX_PROMPT_TEMPLATES} items"),
    ([], "at least 1 item"),
    (["no slot"], "exactly one '{}' where the label goes"),
    (["{} and {}"], "exactly one '{}' where the label goes"),
    (["a {name}"], "exactly one '{}' where the label goes"),
    (["a {"], "not a valid template"),
    (["{"], "at least 2 characters"),
    (["a" * 199 + "{}"], "at most 200 characters"),
]


@pytest.mark.parametrize(("templates", "refusal"), CASES)
def test_jobs_and_predict_accept_and_refuse_the_same_templates(
    client: TestClient, ready_dataset: str, templates: list[str], refusal: str | None
) -> None:
    job = client.post(
        "/jobs",
        json={
            "dataset_id": ready_dataset,
            "base_model": "tiny-clip",
            "hyperparameters": {"epochs": 1, "prompt_templates": templates},
        },
    )
    _, images = encoded(1, seed=3)
    predict = client.post(
        "/predict",
        json={
            "base_model": "tiny-clip",
            "labels": ["red circle", "blue triangle"],
            "prompt_templates": templates,
            "images": images,
        },
    )
    if refusal is None:
        assert (job.status_code, predict.status_code) == (201, 200), (job.text, predict.text)
    else:
        assert (job.status_code, predict.status_code) == (422, 422)
        assert refusal in job.text and refusal in predict.text, (job.text, predict.text)
