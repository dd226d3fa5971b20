"""A small typed client for a clipft server, used by the `clipft` command line and the tests.

It speaks the public HTTP API only (the same as curl would), so it works against any server:
`url` and `api_key` come from `--url`/`CLIPFT_URL` and `--api-key`/`CLIPFT_API_KEY`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
# Chunks of a resumable upload: small enough that a dropped connection loses little and the
# progress bar moves, large enough that the requests' overhead is lost in the transfer.
UPLOAD_CHUNK_BYTES = 8 * 1024**2
UPLOAD_RETRIES = 8
UPLOAD_BACKOFF_SECONDS = 0.5
CHUNK_CONTENT_TYPE = "application/octet-stream"
Progress = Callable[[int, int], None]  # bytes done, bytes in all


class _Retry(Exception):
    """An answer that asks for the upload's state to be read again and sending to go on."""

    def __init__(self, cause: ApiError) -> None:
        super().__init__(str(cause))
        self.cause = cause


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
        self,
        path: Path,
        *,
        name: str | None = None,
        progress: Progress | None = None,
        resume: str | None = None,
        started: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Upload a zip, or a folder zipped on the fly (class folders, or metadata.csv/jsonl),
        as a resumable upload: a dropped connection costs the chunk in flight, not the upload.

        `resume` continues the upload of that id (the same zip: a folder zips the same way
        again); `started` is told a new upload's id before its first chunk is sent.
        """
        with tempfile.TemporaryFile() as spooled:
            if path.is_dir():
                zip_folder(path, spooled)
                filename = f"{path.name or 'dataset'}.zip"
            else:
                with path.open("rb") as source:
                    shutil.copyfileobj(source, spooled, 1024**2)
                filename = path.name
            size = spooled.tell()
            if resume is None:
                body = {"size": size, "filename": filename, "name": name}
                upload_id = str(self._answer(self.http.post("/uploads", json=body))["id"])
                if started is not None:
                    started(upload_id)
            else:
                upload_id = resume
            return self.send_upload(upload_id, spooled, size=size, progress=progress)

    def send_upload(
        self, upload_id: str, source: IO[bytes], *, size: int, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Send what the server does not have yet of `source`, complete the upload and return
        the dataset. A connection that drops, or a server that answers 503, is retried (from
        the offset the server reports) up to `UPLOAD_RETRIES` times in a row."""
        failures = 0

        def advanced(done: int, total: int) -> None:
            nonlocal failures
            failures = 0  # the retries count failures in a row, not in all
            if progress is not None:
                progress(done, total)

        while True:
            try:
                return self._send_rest(upload_id, source, size=size, progress=advanced)
            except (httpx.TransportError, _Retry) as error:
                failures += 1
                if failures > UPLOAD_RETRIES:
                    raise error.cause if isinstance(error, _Retry) else error from None
                time.sleep(min(UPLOAD_BACKOFF_SECONDS * 2 ** (failures - 1), 30.0))

    def _send_rest(
        self, upload_id: str, source: IO[bytes], *, size: int, progress: Progress
    ) -> dict[str, Any]:
        state = self._upload_call("GET", f"/uploads/{upload_id}")
        if state["size"] != size:
            raise ApiError(
                409, f"upload {upload_id} is of {state['size']} bytes; this zip has {size}"
            )
        if state["status"] == "completed":  # an earlier try completed it; its answer was lost
            return self.get_dataset(upload_id)
        if state["status"] == "completing":
            raise _Retry(ApiError(409, f"upload {upload_id} is being completed"))
        chunk_bytes = min(int(state["chunk_max_bytes"]), UPLOAD_CHUNK_BYTES)
        offset = int(state["received"])
        while offset < size:
            source.seek(offset)
            headers = {"Upload-Offset": str(offset), "Content-Type": CHUNK_CONTENT_TYPE}
            state = self._upload_call(
                "PATCH", f"/uploads/{upload_id}", content=source.read(chunk_bytes), headers=headers
            )
            offset = int(state["received"])
            progress(offset, size)
        return self._upload_call("POST", f"/uploads/{upload_id}/complete")

    def _upload_call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, url, **kwargs)
        try:
            return dict(self._answer(response))
        except ApiError as error:
            # A 503 (the store or database away) and a 409 (a chunk the server already had,
            # sent again after a lost answer) are retried after asking where the upload is.
            if error.status_code == 503 or (error.status_code == 409 and method == "PATCH"):
                raise _Retry(error) from None
            raise

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return dict(self._answer(self.http.get(f"/datasets/{dataset_id}")))

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
