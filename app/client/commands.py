"""The client half of the `clipft` command: datasets, jobs, predict and models, over HTTP.

Every command talks to a server at `--url` (or `CLIPFT_URL`) with `--api-key` (or
`CLIPFT_API_KEY`), so it works the same against a laptop's `clipft serve` and a deployment.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from tqdm import tqdm

from app.client.api import DEFAULT_URL, ApiError, ClipftClient

UrlOption = Annotated[str, typer.Option("--url", envvar="CLIPFT_URL", help="The clipft server.")]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="CLIPFT_API_KEY", help="An API key.")
]

datasets_app = typer.Typer(help="Upload and list datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="Start and follow fine-tuning jobs.", no_args_is_help=True)
models_app = typer.Typer(help="Trained models: export them.", no_args_is_help=True)


def client(url: str, api_key: str | None) -> ClipftClient:
    return ClipftClient(url, api_key)


def fail(error: ApiError) -> typer.Exit:
    typer.echo(f"error {error.status_code}: {error.detail}", err=True)
    return typer.Exit(1)


def fail_to_connect(url: str, error: httpx.TransportError, *, resume: str | None) -> typer.Exit:
    again = f"; run again with --resume {resume} to go on from where it stopped" if resume else ""
    typer.echo(f"error: could not reach {url}: {error}{again}", err=True)
    return typer.Exit(1)


def show(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


@datasets_app.command("upload")
def upload(
    path: Annotated[Path, typer.Argument(exists=True, help="A zip, or a folder to zip.")],
    name: Annotated[str | None, typer.Option(help="The dataset's name.")] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="Continue the upload of this id (printed when it started)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Upload a dataset (a folder is zipped on the fly) in chunks that survive a dropped
    connection, and print it."""
    with client(url, api_key) as api, tqdm(unit="B", unit_scale=True, desc="upload") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        begun = resume

        def started(upload_id: str) -> None:
            nonlocal begun
            begun = upload_id
            bar.write(f"upload {upload_id} (if it stops, run again with --resume {upload_id})")

        try:
            dataset = api.upload_dataset(
                path, name=name, progress=progress, resume=resume, started=started
            )
        except ApiError as error:
            raise fail(error) from None
        except httpx.TransportError as error:
            raise fail_to_connect(url, error, resume=begun) from None
    show(dataset)


@datasets_app.command("list")
def list_datasets(url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Datasets, newest first: id, status, images, name."""
    with client(url, api_key) as api:
        try:
            datasets = api.list_datasets()
        except ApiError as error:
            raise fail(error) from None
        for dataset in datasets:
            typer.echo(
                f"{dataset['id']}  {dataset['status']:<10} {dataset['num_images']:>7} images  "
                f"{dataset['name']}"
            )


@jobs_app.command("create")
def create_job(
    dataset_id: Annotated[str, typer.Argument(help="The dataset to train on.")],
    base_model: Annotated[str, typer.Option(help="Base model name or hub id.")] = "tiny-clip",
    name: Annotated[str | None, typer.Option(help="The job's name.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="A hyperparameter as NAME=VALUE (JSON value); repeat."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Start fine-tuning and print the job (its id first)."""
    hyperparameters: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: use NAME=VALUE")
        try:
            hyperparameters[key] = json.loads(raw)
        except ValueError:
            hyperparameters[key] = raw
    with client(url, api_key) as api:
        try:
            job = api.create_job(
                dataset_id=dataset_id,
                base_model=base_model,
                hyperparameters=hyperparameters,
                name=name,
            )
        except ApiError as error:
            raise fail(error) from None
    typer.echo(job["id"])
    show(job)


@jobs_app.command("follow")
def follow(
    job_id: Annotated[str, typer.Argument(help="The job to follow.")],
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Live progress and metrics until the job ends; exits non-zero unless it succeeded."""
    with (
        client(url, api_key) as api,
        tqdm(total=1.0, bar_format="{percentage:3.0f}%|{bar:30}| {desc}") as bar,
    ):
        try:
            for message in api.follow_job(job_id):
                if message.event == "progress":
                    progress = message.data["progress"]
                    bar.update(float(progress.get("fraction") or 0.0) - bar.n)
                    metrics = {
                        key: value
                        for key, value in message.data["metrics"].items()
                        # `epoch` is already in the line, as "epoch 3/6".
                        if isinstance(value, int | float) and key != "epoch"
                    }
                    shown = " ".join(f"{key} {value:.3g}" for key, value in metrics.items())
                    bar.set_description_str(
                        f"{message.data['status']} epoch {progress.get('epoch', 0)}/"
                        f"{progress.get('epochs', 0)} {shown}"
                    )
                elif message.event == "job_event":
                    bar.write(f"[{message.data['type']}] {message.data['message']}")
                elif message.event == "end":
                    status = message.data["status"]
                    bar.write(f"job {job_id} {status}")
                    if status != "succeeded":
                        raise typer.Exit(1)
                    return
        except ApiError as error:
            raise fail(error) from None
    raise typer.Exit(1)  # the stream ended without the job ending (the job was deleted)


def predict(
    model_id: Annotated[str, typer.Argument(help="The trained model.")],
    images: Annotated[list[Path], typer.Argument(exists=True, help="Image files.")],
    text: Annotated[
        list[str] | None, typer.Option("--text", help="Compare with this text; repeat.")
    ] = None,
    top_k: Annotated[int, typer.Option(help="Labels per image.")] = 5,
    min_confidence: Annotated[
        float | None,
        typer.Option(help="No label below this top probability (default: the model's own)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Classify images (a table of top labels), or compare them with texts."""
    with client(url, api_key) as api:
        try:
            answer = api.predict(
                model_id, images, texts=text, top_k=top_k, min_confidence=min_confidence
            )
        except ApiError as error:
            raise fail(error) from None
    if "predictions" in answer:
        decisions = answer.get("decisions") or [{}] * len(images)
        for path, labels, decision in zip(images, answer["predictions"], decisions, strict=True):
            abstained = decision.get("label") is None and decision.get("reason")
            threshold = answer.get("min_confidence")
            typer.echo(
                f"{path.name}  (no label: {decision['reason']} {threshold:g})"
                if abstained
                else path.name
            )
            for entry in labels:
                bar = "#" * round(entry["score"] * 30)
                typer.echo(f"  {entry['score']:6.1%}  {bar:<30}  {entry['label']}")
        return
    texts = text or []
    typer.echo(" " * 24 + "".join(f"{label[:14]:>16}" for label in texts))
    for path, row in zip(images, answer["similarity"], strict=True):
        typer.echo(f"{path.name[:24]:<24}" + "".join(f"{value:16.3f}" for value in row))


class ExportFormat(enum.StrEnum):
    folder = "folder"
    onnx = "onnx"


@models_app.command("export")
def export(
    model_id: Annotated[str, typer.Argument(help="The trained model.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The zip to write.")] = Path(
        "model.zip"
    ),
    export_format: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="folder: the safetensors folder with its model card; onnx: both towers as "
            "ONNX graphs, the classifier and the preprocessing, to run without clipft.",
        ),
    ] = ExportFormat.folder,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Download a model as a zip: its folder (weights, clipft.json, model card) or ONNX."""
    with client(url, api_key) as api:
        try:
            api.download_model(model_id, output, export_format.value)
        except ApiError as error:
            raise fail(error) from None
    typer.echo(f"wrote {output}")
