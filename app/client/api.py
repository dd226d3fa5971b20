"""A small typed client for a clipft server, used by the `clipft` command line and the tests.

It speaks the public HTTP API only (the same as curl would), so it works against any server:
`url` and `api_key` come from `--url`/`CLIPFT_URL` and `--api-key`/`CLIPFT_API_KEY`.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
Progress = Callable[[int, int], None]  # bytes done, bytes in all


class ApiError(Exception):
    """The server answered with an error: its status and its `detail`."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class StreamMessage:
    """One server-sent event of `GET /jobs/{id}/events/stream`."""

    event: str
    data: dict[str, Any]
    id: int | None = None


class _ReadProgress(io.RawIOBase):
    """A file whose reads report how far the upload got."""

    def __init__(self, source: IO[bytes], total: int, progress: Progress | None) -> None:
        self._source, self._total, self._progress, self._done = source, total, progress, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        self._done += len(chunk)
        if self._progress is not None:
            self._progress(self._done, self._total)
        return chunk


def zip_folder(folder: Path, target: IO[bytes]) -> None:
    """The folder's files, relative to it, as a zip archive (what `POST /datasets` takes)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not any(part.startswith(".") for part in path.parts):
                archive.write(path, path.relative_to(folder).as_posix())


class ClipftClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        http: httpx.Client | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http or httpx.Client(base_url=url, timeout=timeout)
        self.http.headers.update(headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ClipftClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json() if response.content else None

    # Datasets
    def upload_dataset(
        self, path: Path, *, name: str | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Upload a zip, or a folder zipped on the fly (class folders, or metadata.csv/jsonl)."""
        with tempfile.TemporaryFile() as spooled:
            if path.is_dir():
                zip_folder(path, spooled)
                filename = f"{path.name or 'dataset'}.zip"
            else:
                spooled.write(path.read_bytes())
                filename = path.name
            total = spooled.tell()
            spooled.seek(0)
            body = cast(IO[bytes], _ReadProgress(spooled, total, progress))
            files = {"file": (filename, body, "application/zip")}
            data = {"name": name} if name else None
            return dict(self._answer(self.http.post("/datasets", files=files, data=data)))

    def list_datasets(self) -> list[dict[str, Any]]:
        return list(self._answer(self.http.get("/datasets", params={"limit": 200}))["items"])

    # Jobs
    def create_job(
        self,
        *,
        dataset_id: str,
        base_model: str,
        hyperparameters: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"dataset_id": dataset_id, "base_model": base_model}
        if hyperparameters:
            body["hyperparameters"] = hyperparameters
        if name:
            body["name"] = name
        return dict(self._answer(self.http.post("/jobs", json=body)))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._answer(self.http.get(f"/jobs/{job_id}")))

    def follow_job(self, job_id: str, *, after_id: int | None = None) -> Iterator[StreamMessage]:
        """The job's live events and progress until it ends (server-sent events)."""
        headers = {"Last-Event-ID": str(after_id)} if after_id is not None else {}
        url = f"/jobs/{job_id}/events/stream"
        with self.http.stream("GET", url, headers=headers, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                self._answer(response)
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if line:
                    key, _, value = line.partition(": ")
                    if key in ("id", "event", "data"):
                        fields[key] = value
                    continue
                if "event" in fields:
                    yield StreamMessage(
                        event=fields["event"],
                        data=json.loads(fields.get("data", "{}")),
                        id=int(fields["id"]) if "id" in fields else None,
                    )
                fields = {}

    # Models and predictions
    def predict(
        self,
        model_id: str,
        images: list[Path],
        *,
        texts: list[str] | None = None,
        top_k: int = 5,
        min_confidence: float | None = None,
    ) -> dict[str, Any]:
        # Multipart: the files' own bytes, a quarter smaller than base64 in JSON and with
        # nothing to decode (bench.predict_throughput --body: 64 photos answered 50-70 ms
        # sooner on a 2-core CPU).
        data: dict[str, Any] = {"model_id": model_id}
        if texts:
            data["texts"] = texts
        else:
            data["top_k"] = str(top_k)
            if min_confidence is not None:
                data["min_confidence"] = str(min_confidence)
        files = [("files", (path.name, path.read_bytes())) for path in images]
        return dict(self._answer(self.http.post("/predict", data=data, files=files)))

    def download_model(self, model_id: str, target: Path, export_format: str = "folder") -> Path:
        """The model's zip written to `target`: its folder (weights, clipft.json, model card),
        or with `export_format="onnx"` its ONNX export."""
        path = (
            f"/models/{model_id}/download"
            if export_format == "folder"
            else f"/models/{model_id}/export?format={export_format}"
        )
        with self.http.stream("GET", path) as response:
            if response.status_code >= 400:
                response.read()
                self._answer(response)
            partial = target.with_name(f".{target.name}.part")
            with partial.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
            partial.replace(target)
        return target
