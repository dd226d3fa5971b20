"""What a worker on another machine than the api finds in the store: the datasets it trains on
and the checkpoints an earlier attempt left (each test on a local folder and on SeaweedFS)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import session_scope
from app.core.objects.factory import open_store
from app.core.objects.folders import delete_folder, publish_folder, published_folders
from app.core.objects.store import ObjectStore
from app.core.storage import (
    checkpoints_dir,
    dataset_dir,
    dataset_object_folder,
    new_id,
    object_key_of,
)
from app.orm import Checkpoint
from tests.object_store import unreachable_bucket
from tests.training.synthetic_folder import write_synthetic_folder
from tests.worker.jobs import new_job
from worker.checkpoint_sync import CheckpointSync, fetch_resume_point
from worker.dataset_copies import DatasetMissing, local_dataset
from worker.training.checkpoints.names import TRAINER_STATE_NAME


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_worker_without_the_dataset_fetches_it_whole_and_then_reads_its_own_copy(
    store: ObjectStore, tmp_path: Path
) -> None:
    source = dataset_dir(tmp_path / "api", "d1")
    write_synthetic_folder(
        source, per_class=2, kind="classification", classes=("red circle", "blue square"), seed=0
    )
    publish_folder(store, source, dataset_object_folder("d1"))
    worker = Settings(data_dir=tmp_path / "worker", store_retry_seconds=0)

    folder = local_dataset(worker, store, "d1")

    assert folder == dataset_dir(worker.data_dir, "d1")
    assert files_of(folder) == files_of(source)
    # The copy is the worker's from now on: the store is not asked again.
    delete_folder(store, dataset_object_folder("d1"))
    assert local_dataset(worker, store, "d1") == folder
    assert files_of(folder) == files_of(source)


def test_a_dataset_in_neither_place_is_named_missing(store: ObjectStore, tmp_path: Path) -> None:
    worker = Settings(data_dir=tmp_path / "worker", store_retry_seconds=0)
    with pytest.raises(DatasetMissing, match="dataset d2 is neither"):
        local_dataset(worker, store, "d2")
    assert not dataset_dir(worker.data_dir, "d2").exists()  # no half folder left


def write_checkpoint(data_dir: Path, job_id: str, attempt: int, epoch: int, best: int) -> Path:
    folder = checkpoints_dir(data_dir, job_id) / f"attempt-{attempt}" / f"epoch-{epoch}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(256))
    (folder / TRAINER_STATE_NAME).write_text(json.dumps({"best_checkpoint": f"epoch-{best}"}))
    return folder


def test_checkpoints_are_published_under_their_local_path_and_pruned_ones_leave(
    store: ObjectStore, tmp_path: Path
) -> None:
    data_dir = tmp_path / "worker"
    sync = CheckpointSync(store, data_dir, retry_seconds=0)
    first = write_checkpoint(data_dir, "j1", attempt=1, epoch=1, best=1)
    second = write_checkpoint(data_dir, "j1", attempt=1, epoch=2, best=2)
    assert sync.publish(first) and sync.publish(second)
    attempt_key = object_key_of(data_dir, first.parent)
    assert attempt_key == "jobs/j1/checkpoints/attempt-1"
    assert published_folders(store, attempt_key) == [
        f"{attempt_key}/epoch-1",
        f"{attempt_key}/epoch-2",
    ]

    shutil.rmtree(first)  # the run keeps the newest and the best only
    sync.drop_pruned(first.parent)
    assert published_folders(store, attempt_key) == [f"{attempt_key}/epoch-2"]

    sync.withdraw(second)  # its row could not be written: the lease had gone
    assert published_folders(store, attempt_key) == []


def test_a_store_that_stays_down_leaves_the_checkpoint_local_and_the_run_going(
    tmp_path: Path,
) -> None:
    unreachable = open_store(unreachable_bucket(Settings(), tmp_path / "worker"))
    folder = write_checkpoint(tmp_path / "worker", "j1", attempt=1, epoch=1, best=1)
    sync = CheckpointSync(unreachable, tmp_path / "worker", retry_seconds=1)
    assert sync.publish(folder) is False
    assert (folder / TRAINER_STATE_NAME).is_file()


def test_a_resume_on_another_machine_fetches_the_newest_whole_checkpoint_and_its_best(
    store: ObjectStore, client: TestClient, settings: Settings, ready_dataset: str, tmp_path: Path
) -> None:
    job_id = new_job(client, ready_dataset)
    first_machine, second_machine = tmp_path / "a", tmp_path / "b"
    sync = CheckpointSync(store, first_machine, retry_seconds=0)
    best = write_checkpoint(first_machine, job_id, attempt=1, epoch=1, best=1)
    newest = write_checkpoint(first_machine, job_id, attempt=1, epoch=2, best=1)
    dying = write_checkpoint(first_machine, job_id, attempt=1, epoch=3, best=3)
    assert sync.publish(best) and sync.publish(newest)
    # Epoch 3's upload died before its manifest: its objects are there, its folder is not.
    store.put_file(
        f"{object_key_of(first_machine, dying)}/v1/model.safetensors", dying / "model.safetensors"
    )
    with session_scope(settings.resolved_database_url) as session:
        for epoch, folder in ((1, best), (2, newest), (3, dying)):
            session.add(
                Checkpoint(
                    id=new_id(),
                    job_id=job_id,
                    epoch=epoch,
                    step=epoch * 10,
                    path=object_key_of(first_machine, folder),
                )
            )

    with session_scope(settings.resolved_database_url) as session:
        found = fetch_resume_point(session, store, second_machine, job_id, retry_seconds=0)

    assert found == second_machine / object_key_of(first_machine, newest)
    assert files_of(found) == files_of(newest)
    assert files_of(found.parent / "epoch-1") == files_of(best)
    assert not (found.parent / "epoch-3").exists()


def test_a_job_with_nothing_published_resumes_from_scratch(
    store: ObjectStore, client: TestClient, settings: Settings, ready_dataset: str, tmp_path: Path
) -> None:
    job_id = new_job(client, ready_dataset)
    with session_scope(settings.resolved_database_url) as session:
        assert fetch_resume_point(session, store, tmp_path / "b", job_id, retry_seconds=0) is None


class SetOnRecord(logging.Handler):
    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()


def test_writes_outlast_a_short_outage_of_the_bucket(tmp_path: Path) -> None:
    """The S3 server stops and comes back: a checkpoint published meanwhile waits for it, and
    is then there whole."""
    import threading

    from tests.object_store import SeaweedS3

    server = SeaweedS3(tmp_path / "weed").start()
    try:
        bucket = server.new_bucket()
        store = open_store(server.settings(f"s3://{bucket}/p", data_dir=tmp_path / "worker"))
        folder = write_checkpoint(tmp_path / "worker", "j1", attempt=1, epoch=1, best=1)
        server.stop()
        sync = CheckpointSync(store, tmp_path / "worker", retry_seconds=60)
        published: list[bool] = []
        # The publish waits in a thread; the server comes back from this one (a server started
        # from a thread would die with it: its parent-death signal follows the thread).
        waiting = threading.Thread(target=lambda: published.append(sync.publish(folder)))
        met_the_outage = threading.Event()
        watcher = SetOnRecord(met_the_outage)
        logging.getLogger("app.core.objects.retry").addHandler(watcher)
        try:
            waiting.start()
            assert met_the_outage.wait(timeout=30)  # it found the port closed, and waits
        finally:
            logging.getLogger("app.core.objects.retry").removeHandler(watcher)
        server.start()
        waiting.join(timeout=60)
        assert published == [True]
        key = object_key_of(tmp_path / "worker", folder)
        assert published_folders(store, key.rsplit("/", 1)[0]) == [key]
        copy = tmp_path / "copy"
        from app.core.objects.folders import download_folder

        download_folder(store, key, copy)
        assert files_of(copy) == files_of(folder)
    finally:
        server.stop()
