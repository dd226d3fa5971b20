from fastapi.testclient import TestClient


def test_openapi_documents_every_endpoint_of_the_contract(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/health": {"get"},
        "/metrics": {"get"},
        "/datasets": {"get", "post"},
        "/datasets/{dataset_id}": {"get", "delete"},
        "/jobs": {"get", "post"},
        "/jobs/{job_id}": {"get", "delete"},
        "/uploads": {"post"},
        "/uploads/{upload_id}": {"get", "patch", "delete"},
        "/uploads/{upload_id}/complete": {"post"},
        "/jobs/{job_id}/cancel": {"post"},
        "/jobs/{job_id}/retry": {"post"},
        "/jobs/{job_id}/events": {"get"},
        "/jobs/{job_id}/events/stream": {"get"},
        "/jobs/{job_id}/report": {"get"},
        "/models": {"get"},
        "/models/{model_id}": {"get", "delete"},
        "/models/{model_id}/download": {"get"},
        "/models/{model_id}/export": {"get"},
        "/predict": {"post"},
        "/embed": {"post"},
        "/usage": {"get"},
        "/webhooks": {"get", "post"},
        "/webhooks/{webhook_id}": {"get", "delete"},
        "/webhooks/{webhook_id}/deliveries": {"get"},
    }
    assert {path: set(methods) for path, methods in paths.items()} == expected
    upload = paths["/datasets"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    predict = paths["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(predict)
    usage = response.json()["components"]["schemas"]["UsagePublic"]["properties"]
    assert {"datasets_bytes", "prepared_bytes", "models_bytes", "checkpoints_bytes"} <= set(usage)
