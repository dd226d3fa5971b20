"""The jobs API over HTTP, with no worker listening: jobs stay where the API puts them."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.api.jobs import create_job, queued_job_ids, set_status
from tests.conftest import make_ready_dataset


def test_create_job_commits_it_queued_with_defaults_and_sends_it(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job = create_job(client, ready_dataset, hyperparameters={"epochs": 3})
    assert job["status"] == "queued"
    assert job["dataset_id"] == ready_dataset
    assert job["hyperparameters"] == {
        "method": "flyp",
        "freeze": "none",
        "epochs": 3,
        "batch_size": 32,
        "devices": 1,
        "grad_accum_steps": 1,
        "learning_rate": 1e-5,
        "head_learning_rate": 1e-3,
        "lp_ft_probe_epochs": None,
        "weight_decay": 0.1,
        "lr_schedule": "cosine",
        "warmup_ratio": 0.1,
        "step_size_epochs": 1,
        "gamma": 0.1,
        "early_stopping_patience": None,
        "early_stopping_min_delta": 0.0,
        "label_smoothing": 0.0,
        "augment": "light",
        "seed": 0,
        "prompt_templates": ["a photo of a {}."],
        "lora_rank": 8,
        "lora_alpha": 16.0,
        "lora_dropout": 0.0,
        "wise_ft_alphas": [],
        "target_precision": None,
    }
    assert job["control_dataset_id"] is None
    assert job["progress"]["epochs"] == 3 and job["progress"]["fraction"] == 0
    assert job["model_id"] is None and job["error"] is None and job["attempt"] == 0
    assert job["created_at"].endswith(("Z", "+00:00"))
    assert job["id"] in queued_job_ids(str(settings.redis_url), settings.train_queue)
    assert client.get(f"/jobs/{job['id']}").json() == job


@pytest.mark.parametrize(
    ("hyperparameters", "field", "message"),
    [
        ({"epochs": 0}, "epochs", "greater than or equal to 1"),
        ({"epochs": 100000}, "epochs", "less than or equal to 1000"),
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"learning_rate": -1}, "learning_rate", "greater than 0"),
        ({"learning_rate": 5}, "learning_rate", "less than or equal to 1"),
        ({"weight_decay": 2}, "weight_decay", "less than or equal to 1"),
        ({"warmup_ratio": 0.9}, "warmup_ratio", "less than or equal to 0.5"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"epochs": "ten"}, "epochs", "valid integer"),
        # Strict: no coercion of strings, booleans or fractions.
        ({"epochs": "3"}, "epochs", "valid integer"),
        ({"epochs": True}, "epochs", "valid integer"),
        ({"epochs": 3.0}, "epochs", "valid integer"),
        ({"learning_rate": "0.001"}, "learning_rate", "valid number"),
        ({"weight_decay": False}, "weight_decay", "valid number"),
        ({"prompt_template": "no placeholder"}, "prompt_templates.0", "exactly one '{}'"),
        ({"prompt_templates": ["a {}", "{} and {}"]}, "prompt_templates.1", "exactly one '{}'"),
        ({"prompt_templates": ["a {name}"]}, "prompt_templates.0", "exactly one '{}'"),
        ({"prompt_templates": ["a {"]}, "prompt_templates.0", "not a valid template"),
        ({"prompt_templates": []}, "prompt_templates", "at least 1 item"),
        ({"prompt_template": "a {}", "prompt_templates": ["a {}"]}, None, "not both"),
        ({"dropout": 0.1}, "dropout", "Extra inputs are not permitted"),
        ({"method": "dora"}, "method", "'full', 'linear_probe', 'lp_ft', 'flyp' or 'lora'"),
        ({"freeze": "both"}, "freeze", "'none', 'text' or 'vision'"),
        ({"method": "linear_probe", "freeze": "text"}, None, "works with full, lora, flyp"),
        ({"lora_rank": 4}, None, "lora_rank only apply to method='lora'"),
        ({"method": "lora", "lora_rank": 0}, "lora_rank", "greater than or equal to 1"),
        ({"lp_ft_probe_epochs": 2}, None, "only applies to method='lp_ft'"),
        ({"method": "lp_ft", "epochs": 3, "lp_ft_probe_epochs": 3}, None, "less than epochs"),
        ({"method": "lp_ft", "epochs": 1}, None, "at least 2 epochs"),
        ({"head_learning_rate": 0}, "head_learning_rate", "greater than 0"),
        ({"lr_schedule": "exponential"}, "lr_schedule", "'cosine', 'linear', 'step'"),
        ({"step_size_epochs": 0}, "step_size_epochs", "greater than or equal to 1"),
        ({"gamma": 0}, "gamma", "greater than 0"),
        ({"early_stopping_patience": 0}, "early_stopping_patience", "greater than or equal"),
        ({"early_stopping_min_delta": -0.1}, "early_stopping_min_delta", "greater than or"),
        ({"augment": "heavy"}, "augment", "'none', 'light' or 'standard'"),
        ({"grad_accum_steps": 0}, "grad_accum_steps", "greater than or equal to 1"),
        ({"label_smoothing": 1.0}, "label_smoothing", "less than 1"),
        ({"wise_ft_alphas": [0.5, 1.5]}, "wise_ft_alphas", "must lie in [0, 1]"),
        ({"wise_ft_alphas": [0.5, 0.5]}, "wise_ft_alphas", "must be distinct"),
    ],
)
def test_bad_hyperparameters_are_422_naming_the_field_and_the_problem(
    client: TestClient,
    ready_dataset: str,
    hyperparameters: dict[str, Any],
    field: str | None,
    message: str,
) -> None:
    response = client.post(
        "/jobs",
        json={
            "dataset_id": ready_dataset,
            "base_model": "tiny-clip",
            "hyperparameters": hyperparameters,
        },
    )
    assert response.status_code == 422
    errors = {tuple(error["loc"]): error["msg"] for error in response.json()["detail"]}
    # Rules that tie several fields together are reported on the hyperparameters object; a
    # list's item by its index (`prompt_templates.1`).
    path = [int(part) if part.isdigit() else part for part in (field or "").split(".") if part]
    location = ("body", "hyperparameters", *path)
    assert message in errors[location], errors


def test_json_integers_fill_float_hyperparameters(client: TestClient, ready_dataset: str) -> None:
    job = create_job(
        client, ready_dataset, hyperparameters={"learning_rate": 1, "wise_ft_alphas": [0, 1]}
    )
    assert job["hyperparameters"]["learning_rate"] == 1.0
    assert job["hyperparameters"]["wise_ft_alphas"] == [0.0, 1.0]


def test_missing_fields_are_422_naming_them(client: TestClient) -> None:
    response = client.post("/jobs", json={"base_model": "tiny-clip"})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "dataset_id"]]
    assert client.post("/jobs", content=b"{not json").status_code == 422


def test_unknown_dataset_is_404(client: TestClient) -> None:
    response = client.post("/jobs", json={"dataset_id": "nope", "base_model": "tiny-clip"})
    assert response.status_code == 404
    assert response.json() == {"detail": "dataset nope not found"}


def test_dataset_that_is_not_ready_is_409(client: TestClient, settings: Settings) -> None:
    dataset_id = make_ready_dataset(settings, status="failed", per_class=2)
    response = client.post("/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-clip"})
    assert response.status_code == 409
    assert response.json() == {"detail": f"dataset {dataset_id} is failed, not ready"}


@pytest.mark.parametrize("base_model", ["no-such-model", "../etc", "a/b/c", "/abs/path"])
def test_unknown_base_model_is_422(client: TestClient, ready_dataset: str, base_model: str) -> None:
    response = client.post("/jobs", json={"dataset_id": ready_dataset, "base_model": base_model})
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"unknown base model {base_model!r}")


def test_hub_ids_and_local_base_models_are_accepted(
    settings: Settings, ready_dataset: str, tmp_path: Any
) -> None:
    (tmp_path / "my-clip").mkdir()
    (tmp_path / "my-clip" / "config.json").write_text("{}")
    local = settings.model_copy(update={"base_models_dir": tmp_path})
    with TestClient(create_app(local, run_reconciler=False)) as test_client:
        for base_model in ("openai/clip-vit-base-patch32", "my-clip"):
            response = test_client.post(
                "/jobs", json={"dataset_id": ready_dataset, "base_model": base_model}
            )
            assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("allow", "allowlist", "environment", "accepted"),
    [
        (False, [], "dev", False),
        (None, [], "production", False),
        (False, ["openai/clip-vit-base-patch32"], "dev", True),
        (True, [], "production", True),
    ],
)
def test_hub_downloads_can_be_turned_off_and_allow_listed(
    settings: Settings,
    ready_dataset: str,
    allow: bool | None,
    allowlist: list[str],
    environment: str,
    accepted: bool,
) -> None:
    configured = settings.model_copy(
        update={
            "allow_hub_downloads": allow,
            "hub_model_allowlist": allowlist,
            "environment": environment,
            # The hub policy alone is under test here (production would also ask for keys).
            "auth_disabled": True,
        }
    )
    with TestClient(create_app(configured, run_reconciler=False)) as test_client:
        response = test_client.post(
            "/jobs",
            json={"dataset_id": ready_dataset, "base_model": "openai/clip-vit-base-patch32"},
        )
        local = test_client.post(
            "/jobs", json={"dataset_id": ready_dataset, "base_model": "tiny-clip"}
        )
    assert local.status_code == 201  # built-in and local models never need the hub
    if accepted:
        assert response.status_code == 201, response.text
    else:
        assert response.status_code == 422
        assert "does not download from the hub" in response.json()["detail"]


def test_unknown_job_is_404_everywhere(client: TestClient) -> None:
    for method, path in [
        ("GET", "/jobs/missing"),
        ("POST", "/jobs/missing/cancel"),
        ("GET", "/jobs/missing/events"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404
        assert response.json() == {"detail": "job missing not found"}


def test_list_is_newest_first_paginated_and_filterable(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    created = [create_job(client, ready_dataset, name=f"list-{index}") for index in range(3)]
    set_status(settings, created[0]["id"], status="failed")
    page = client.get("/jobs", params={"limit": 2}).json()
    assert [job["id"] for job in page["items"]] == [created[2]["id"], created[1]["id"]]
    assert page["total"] >= 3
    second = client.get("/jobs", params={"limit": 2, "offset": 1}).json()
    assert second["items"][0]["id"] == created[1]["id"]
    failed = client.get("/jobs", params={"status": "failed"}).json()
    assert created[0]["id"] in [job["id"] for job in failed["items"]]
    assert all(job["status"] == "failed" for job in failed["items"])
    assert client.get("/jobs", params={"status": "bogus"}).status_code == 422
    assert client.get("/jobs", params={"limit": 0}).status_code == 422


def test_cancel_a_queued_job_ends_it_at_once_then_409(
    client: TestClient, ready_dataset: str
) -> None:
    job = create_job(client, ready_dataset)
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    again = client.post(f"/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.json() == {"detail": f"job {job['id']} is already cancelled"}
    events = client.get(f"/jobs/{job['id']}/events").json()
    assert [(event["type"], event["message"]) for event in events] == [
        ("status", "queued"),
        ("status", "cancelled"),
    ]


def test_the_retry_event_names_the_status_the_job_had(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    cancelled = create_job(client, ready_dataset)
    client.post(f"/jobs/{cancelled['id']}/cancel")
    failed = create_job(client, ready_dataset)
    set_status(settings, failed["id"], status="failed", error="boom")
    for job, previous in ((cancelled, "cancelled"), (failed, "failed")):
        response = client.post(f"/jobs/{job['id']}/retry")
        assert response.status_code == 200 and response.json()["status"] == "queued"
        events = client.get(f"/jobs/{job['id']}/events").json()
        assert (events[-1]["type"], events[-1]["message"]) == (
            "retry",
            f"retried after {previous}; queued",
        )
        assert client.post(f"/jobs/{job['id']}/retry").status_code == 409


def test_cancel_a_running_job_flags_it_for_the_worker(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job = create_job(client, ready_dataset)
    set_status(settings, job["id"], status="running")
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "running" and body["cancel_requested"] is True


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_cancel_a_finished_job_is_409(
    client: TestClient, settings: Settings, ready_dataset: str, status: str
) -> None:
    job = create_job(client, ready_dataset)
    set_status(settings, job["id"], status=status)
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert response.json() == {"detail": f"job {job['id']} is already {status}"}


@pytest.mark.faults
def test_a_job_is_recorded_even_when_the_broker_is_down(
    settings: Settings, ready_dataset: str
) -> None:
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken, run_reconciler=False)) as test_client:
        response = test_client.post(
            "/jobs", json={"dataset_id": ready_dataset, "base_model": "tiny-clip"}
        )
        assert response.status_code == 201
        assert test_client.get(f"/jobs/{response.json()['id']}").json()["status"] == "queued"


@pytest.fixture(scope="module")
def captions_dataset(settings: Settings) -> str:
    return make_ready_dataset(settings, kind="captions", per_class=5)


def test_a_control_dataset_is_recorded_with_the_job(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    control = make_ready_dataset(settings, per_class=5, classes=("purple square",), seed=2)
    job = create_job(client, ready_dataset, control_dataset_id=control)
    assert job["control_dataset_id"] == control
    assert client.get(f"/jobs/{job['id']}").json()["control_dataset_id"] == control


def test_bad_control_datasets_are_refused_saying_why(
    client: TestClient, settings: Settings, ready_dataset: str, captions_dataset: str
) -> None:
    def post(control: str) -> Any:
        return client.post(
            "/jobs",
            json={
                "dataset_id": ready_dataset,
                "base_model": "tiny-clip",
                "control_dataset_id": control,
            },
        )

    missing = post("nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "control dataset nope not found"}
    itself = post(ready_dataset)
    assert itself.status_code == 422
    assert "a dataset the job does not train on" in itself.json()["detail"]
    captions = post(captions_dataset)
    assert captions.status_code == 422
    assert "zero-shot accuracy needs classes" in captions.json()["detail"]
    failed = make_ready_dataset(settings, status="failed", per_class=2)
    not_ready = post(failed)
    assert not_ready.status_code == 409
    assert not_ready.json() == {"detail": f"control dataset {failed} is failed, not ready"}


@pytest.mark.parametrize("method", ["linear_probe", "lp_ft"])
def test_head_methods_need_a_classification_set(
    client: TestClient, captions_dataset: str, method: str
) -> None:
    response = client.post(
        "/jobs",
        json={
            "dataset_id": captions_dataset,
            "base_model": "tiny-clip",
            "hyperparameters": {"method": method},
        },
    )
    assert response.status_code == 422
    detail = f"method '{method}' trains a class head; dataset {captions_dataset} holds captions"
    assert response.json() == {"detail": detail}


def test_a_report_is_409_until_the_job_succeeds_and_404_for_unknown_jobs(
    client: TestClient, ready_dataset: str
) -> None:
    job = create_job(client, ready_dataset)
    response = client.get(f"/jobs/{job['id']}/report")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"job {job['id']} is queued; its report is written once it succeeds"
    }
    assert client.get("/jobs/nope/report").status_code == 404


def test_a_job_asking_for_more_devices_than_a_worker_owns_is_422_saying_how_many(
    client: TestClient, ready_dataset: str
) -> None:
    jobs_before = client.get("/jobs").json()["total"]
    response = client.post(
        "/jobs",
        json={
            "dataset_id": ready_dataset,
            "base_model": "tiny-clip",
            "hyperparameters": {"devices": 4, "batch_size": 8},
        },
    )
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "hyperparameters.devices: 4 asked, but the workers have 1 device(s) each"
    )
    assert client.get("/jobs").json()["total"] == jobs_before
