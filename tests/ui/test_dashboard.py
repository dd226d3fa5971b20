"""The dashboard in a real browser against a real clipft: upload, train, watch, try the model."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from app.ml.synthetic import make_images, png_bytes
from tests.datasets_helpers import make_zip
from tests.ui.conftest import Server

# The pages are the same on every backend: CI runs them once, on the defaults.
pytestmark = pytest.mark.backend_independent

CLASSES = ("red circle", "blue triangle")
TRAINING_TIMEOUT_MS = 240_000
# `make screenshots` trains longer, so the pictures in the README show a real loss curve.
EPOCHS = int(os.environ.get("CLIPFT_DASHBOARD_TEST_EPOCHS", "6"))


def shapes(per_class: int, seed: int) -> list[tuple[str, bytes]]:
    images = make_images(classes=CLASSES, per_class=per_class, seed=seed)
    return [
        (f"{image.label}/{index:03d}.png", png_bytes(image.image))
        for index, image in enumerate(images)
    ]


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    """A page with the API key already typed in (kept in local storage, as the dialog does)."""
    yield from open_page(browser, server, key=server.key)


def open_page(browser: Browser, server: Server, key: str | None) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    if key is not None:
        context.add_init_script(f"localStorage.setItem('clipft.apiKey', {json.dumps(key)})")
    page = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # A 401 or 422 the page asked for and handled shows as a failed resource; anything
        # else logged as an error (a script error, a refused style or script) is a bug.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(message.text)

    def same_origin_only(url: str) -> None:
        # The pages must work offline: nothing from a CDN or any other host.
        if not url.startswith((server.url, "blob:", "data:")):
            problems.append(f"a request left the server: {url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: same_origin_only(request.url))
    yield page
    context.close()
    assert problems == [], problems


def test_the_pages_ask_for_an_api_key_and_refuse_a_wrong_one(
    browser: Browser, server: Server
) -> None:
    for page in open_page(browser, server, key=None):
        page.goto("/ui/")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        page.fill("#key-dialog input[name=key]", "clipft_wrong_key")
        page.click("#key-dialog button[type=submit]")
        expect(page.locator("#key-error")).to_contain_text("Not accepted")
        expect(dialog).to_be_visible()
        page.fill("#key-dialog input[name=key]", server.key)
        page.click("#key-dialog button[type=submit]")
        expect(dialog).to_be_hidden()
        expect(page.locator("h1")).to_have_text(re.compile("^Jobs"))
        assert page.evaluate("localStorage.getItem('clipft.apiKey')") == server.key


def test_a_refused_upload_lists_every_bad_file(page: Page, tmp_path: Path) -> None:
    entries = shapes(per_class=4, seed=1)
    bad = {entries[1][0], entries[6][0]}
    archive = tmp_path / "broken.zip"
    archive.write_bytes(
        make_zip((name, b"not an image" if name in bad else payload) for name, payload in entries)
    )
    page.goto("/ui/#/datasets")
    page.set_input_files("#zip-input", str(archive))
    table = page.locator("#upload-status table.file-errors")
    expect(table).to_be_visible()
    assert sorted(table.locator("tbody td:first-child").all_inner_texts()) == sorted(bad)
    expect(page.locator("#upload-status")).to_contain_text("2 of 8 images could not be used")
    expect(page.locator("#dataset-table")).to_have_count(0)  # nothing was stored


def test_an_upload_whose_connection_drops_is_sent_again_and_succeeds(
    page: Page, tmp_path: Path
) -> None:
    archive = tmp_path / "flaky.zip"
    archive.write_bytes(make_zip(shapes(per_class=3, seed=4)))
    chunks: list[str] = []

    def drop_the_first_chunk(route: Any) -> None:
        if route.request.method != "PATCH":
            route.continue_()
            return
        chunks.append(route.request.headers.get("upload-offset", ""))
        if len(chunks) == 1:
            route.abort("connectionreset")  # the network fails mid-chunk
        else:
            route.continue_()

    page.route(re.compile(r".*/uploads/[0-9a-f]{32}$"), drop_the_first_chunk)
    page.goto("/ui/#/datasets")
    page.set_input_files("#zip-input", str(archive))
    expect(page.locator("#upload-status .notice")).to_contain_text("is ready: 6 images, 2 classes")
    # The lost chunk was sent again from the offset the server reported, nothing else twice.
    assert chunks == ["0", "0"]


def test_a_dropped_folder_is_zipped_in_the_browser(page: Page, tmp_path: Path) -> None:
    folder = tmp_path / "folder shapes"
    for name, payload in shapes(per_class=5, seed=2):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(payload)
    page.goto("/ui/#/datasets")
    page.set_input_files("#folder-input", str(folder))
    expect(page.locator("#upload-status .notice")).to_contain_text("is ready: 10 images, 2 classes")
    row = page.locator("#dataset-table tbody tr").filter(has_text="folder shapes")
    expect(row).to_contain_text("blue triangle, red circle")


def test_upload_train_watch_the_curves_and_try_the_model(
    page: Page, server: Server, tmp_path: Path, screenshots_dir: Path
) -> None:
    archive = tmp_path / "browser shapes.zip"
    archive.write_bytes(make_zip(shapes(per_class=16, seed=3)))
    page.goto("/ui/#/datasets")
    page.set_input_files("#zip-input", str(archive))
    expect(page.locator("#upload-status .notice")).to_contain_text("is ready: 32 images")
    row = page.locator("#dataset-table tbody tr").filter(has_text="browser shapes")
    expect(row.locator(".badge")).to_have_text("ready")
    page.screenshot(path=screenshots_dir / "datasets.png", full_page=True)

    # The form is built from the API's schema: defaults and ranges come with it.
    row.get_by_role("link", name="Train").click()
    form = page.locator("#job-form")
    expect(form.locator("input[name=epochs]")).to_have_value("10")
    expect(form.locator("[data-field=epochs] .help")).to_contain_text("Range [1, 1000]")
    form.locator("input[name=epochs]").fill("0")
    form.locator("button[type=submit]").click()
    expect(form.locator("[data-field=epochs] .error")).to_contain_text("greater than or equal to 1")
    form.locator("input[name=name]").fill("browser job")
    form.locator("input[name=epochs]").fill(str(EPOCHS))
    form.locator("input[name=batch_size]").fill("8")
    form.locator("input[name=learning_rate]").fill("0.0005")
    form.locator("button[type=submit]").click()

    # The job's page follows the run live: progress, the loss curve, the val curve.
    expect(page.locator("h1")).to_contain_text("browser job")
    job_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#loss-chart svg")).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("#metric-chart svg")).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("h1 .badge")).to_have_text("succeeded", timeout=TRAINING_TIMEOUT_MS)
    with server.api() as api:
        job = api.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["hyperparameters"]["epochs"] == EPOCHS
    # Every stored loss point and every evaluation (the base model's and each epoch's) is drawn.
    expect(page.locator("#loss-chart svg")).to_have_attribute(
        "data-points", str(len(job["loss_curve"]))
    )
    expect(page.locator("#metric-chart svg")).to_have_attribute("data-points", str(EPOCHS + 1))
    expect(page.locator("#confusion table.matrix tbody tr")).to_have_count(2)
    # The reliability diagram is drawn from the report's bins: one bar per non-empty bin.
    with server.api() as api:
        bins = api.get(f"/jobs/{job_id}/report").json()["calibration"]["bins_after"]
    filled = str(sum(1 for item in bins if item["count"]))
    expect(page.locator("#calibration svg.reliability")).to_have_attribute("data-bins", filled)
    expect(page.locator("#calibration .reliability-bar")).to_have_count(int(filled))
    expect(page.locator("#job-metric .value")).to_have_text(
        f"{job['metrics']['val_accuracy'] * 100:.1f}%"
    )
    expect(page.locator("#event-table")).to_contain_text("succeeded")
    page.screenshot(path=screenshots_dir / "job.png", full_page=True)

    page.goto("/ui/#/jobs")
    expect(page.locator("#job-table tbody tr").filter(has_text="browser job")).to_contain_text(
        "succeeded"
    )
    page.screenshot(path=screenshots_dir / "jobs.png", full_page=True)
    page.goto("/ui/#/models")
    expect(page.locator("#model-table tbody tr")).to_have_count(1)
    page.screenshot(path=screenshots_dir / "models.png", full_page=True)

    try_the_model(page, server, job["model_id"], tmp_path, screenshots_dir)


def try_the_model(
    page: Page, server: Server, model_id: str, tmp_path: Path, screenshots_dir: Path
) -> None:
    page.get_by_role("link", name="Try it").click()
    images = []
    for index, image in enumerate(make_images(classes=CLASSES, per_class=1, seed=99)):
        path = tmp_path / f"{image.label.replace(' ', '-')}-{index}.png"
        path.write_bytes(png_bytes(image.image))
        images.append(path)
    page.set_input_files("#try-files", [str(path) for path in images])
    cards = page.locator("#try-results .thumb")
    expect(cards).to_have_count(2)
    with server.api() as api:
        answer: dict[str, Any] = api.post(
            "/predict",
            data={"model_id": model_id, "top_k": "5"},
            files=[("files", (path.name, path.read_bytes(), "image/png")) for path in images],
        ).json()
    for card, predictions in zip(cards.all(), answer["predictions"], strict=True):
        shown = card.locator(".bar-label").all_inner_texts()
        assert shown == [item["label"] for item in predictions]
        expect(card.locator(".bar-value").first).to_have_text(
            f"{predictions[0]['score'] * 100:.1f}%"
        )
    page.screenshot(path=screenshots_dir / "try-it.png", full_page=True)

    page.fill("#try-texts", "a photo of a red circle\na photo of a blue triangle\na photo of a cat")
    page.click("#try-compare")
    matrix = page.locator("#similarity table.matrix")
    expect(matrix.locator("tbody tr")).to_have_count(2)
    expect(matrix.locator("thead th")).to_have_count(4)
    page.screenshot(path=screenshots_dir / "try-it-texts.png", full_page=True)


def test_a_zip_dropped_on_the_page_is_uploaded(page: Page) -> None:
    archive = make_zip(shapes(per_class=3, seed=4))
    page.goto("/ui/#/datasets")
    drop_zone = page.locator("#drop-zone")
    expect(drop_zone).to_be_visible()
    # A drop as the browser makes it: a DataTransfer holding the file.
    transfer = page.evaluate_handle(
        """bytes => {
            const transfer = new DataTransfer();
            const file = new File([new Uint8Array(bytes)], "dropped shapes.zip",
                                  { type: "application/zip" });
            transfer.items.add(file);
            return transfer;
        }""",
        list(archive),
    )
    drop_zone.dispatch_event("drop", {"dataTransfer": transfer})
    expect(page.locator("#upload-status .notice")).to_contain_text(
        "“dropped shapes” is ready: 6 images"
    )


def test_a_running_job_is_cancelled_from_its_page(page: Page, server: Server) -> None:
    with server.api() as api:
        upload = api.post(
            "/datasets",
            files={"file": ("cancel me.zip", make_zip(shapes(per_class=8, seed=6)))},
        )
        assert upload.status_code == 201, upload.text
        created = api.post(
            "/jobs",
            json={
                "dataset_id": upload.json()["id"],
                "base_model": "tiny-clip",
                "name": "long job",
                "hyperparameters": {"epochs": 1000, "batch_size": 4},
            },
        )
        assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    page.goto(f"/ui/#/jobs/{job_id}")
    expect(page.locator("h1 .badge")).to_have_text("running", timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("#loss-chart svg")).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("h1 .badge")).to_have_text("cancelled", timeout=60_000)
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    with server.api() as api:
        assert api.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_base_model_classifies_zero_shot_from_the_models_page(
    page: Page, server: Server, tmp_path: Path, screenshots_dir: Path
) -> None:
    image = make_images(classes=CLASSES, per_class=1, seed=5)[0]
    path = tmp_path / "zero-shot.png"
    path.write_bytes(png_bytes(image.image))
    page.goto("/ui/#/models")
    card = page.locator("#zero-shot")
    card.locator("input[type=file]").set_input_files(str(path))
    expect(card.locator(".notice.bad")).to_contain_text("type the labels")
    card.locator("#zero-shot-labels").fill("cat\ndog\nred circle")
    card.locator("#zero-shot-run").click()
    expect(card.locator(".thumb")).to_have_count(1)
    with server.api() as api:
        answer = api.post(
            "/predict",
            data={"base_model": "tiny-clip", "labels": ["cat", "dog", "red circle"], "top_k": "5"},
            files=[("files", (path.name, path.read_bytes(), "image/png"))],
        )
    assert answer.status_code == 200, answer.text
    expected = answer.json()["predictions"][0]
    assert card.locator(".bar-label").all_inner_texts() == [item["label"] for item in expected]
    page.screenshot(path=screenshots_dir / "zero-shot.png", full_page=True)
