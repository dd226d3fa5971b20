"""A resumable upload (`/uploads`, in chunks) against one `POST /datasets` of the same zip.

Both go to the real api (`clipft api`, uvicorn) on a loopback port, with the local store, and
both end in the same ingest (every image decoded, checked and stored), so resumable/single is
the cost of storing each chunk as an object and assembling them. The sides alternate, round by
round, so the machine's noise falls on both. The zip holds photo-like PNGs, which do not
compress: its size is what crosses the wire.

Rerun: .venv/bin/python -m bench.resumable_upload [--images 1000] [--rounds 3] [--chunk-mib 8]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

from app.client import api as client_api
from app.client.api import ClipftClient
from app.core.config import Settings
from app.core.migrate import upgrade_to_head
from app.ml.synthetic import photo_like
from bench.api_server import running_api

IMAGE_SIZE = (256, 192)


def write_zip(path: Path, images: int) -> int:
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(images):
            encoded = io.BytesIO()
            photo_like(*IMAGE_SIZE, seed=index).save(encoded, format="PNG")
            archive.writestr(
                f"{('red', 'green', 'blue')[index % 3]}/{index}.png", encoded.getvalue()
            )
    return path.stat().st_size


def single_post(url: str, path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb") as body, httpx.Client(base_url=url, timeout=600) as http:
        response = http.post("/datasets", files={"file": (path.name, body, "application/zip")})
    response.raise_for_status()
    return time.perf_counter() - started


def resumable(url: str, path: Path, chunk_phase: list[float]) -> float:
    """The whole upload's seconds; the seconds until the last chunk is stored go to
    `chunk_phase` (what is left is assembling and the ingest)."""
    size = path.stat().st_size
    marks: list[float] = []

    def progress(done: int, total: int) -> None:
        if done == total:
            marks.append(time.perf_counter())

    started = time.perf_counter()
    with ClipftClient(url, timeout=600) as client:
        client.upload_dataset(path, progress=progress)
    ended = time.perf_counter()
    chunk_phase.append(marks[-1] - started if marks else float("nan"))
    assert size > 0
    return ended - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-mib", type=int, default=8)
    args = parser.parse_args()
    client_api.UPLOAD_CHUNK_BYTES = args.chunk_mib * 1024**2
    with tempfile.TemporaryDirectory(prefix="clipft-bench-upload-") as folder:
        root = Path(folder)
        archive = root / "photos.zip"
        size = write_zip(archive, args.images)
        data_dir = root / "data"
        settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'clipft.db'}")
        data_dir.mkdir()
        upgrade_to_head(settings.resolved_database_url)
        env = {
            "CLIPFT_DATA_DIR": str(data_dir),
            "CLIPFT_DATABASE_URL": settings.resolved_database_url,
            "CLIPFT_RECONCILE_INTERVAL_SECONDS": "3600",
        }
        with running_api(env=env, ready_path="/openapi.json", log_file=root / "api.log") as url:
            single_post(url, archive)  # warm: imports and first-request paths
            singles: list[float] = []
            chunked: list[float] = []
            chunk_phase: list[float] = []
            for _ in range(args.rounds):
                singles.append(single_post(url, archive))
                chunked.append(resumable(url, archive, chunk_phase))
    mib = size / 1024**2
    single, whole, sending = (statistics.median(s) for s in (singles, chunked, chunk_phase))
    print(f"zip: {args.images} photo-like PNGs {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, {mib:.1f} MiB")
    print(f"chunks: {args.chunk_mib} MiB, {-(-size // client_api.UPLOAD_CHUNK_BYTES)} of them")
    print(f"{'side':<34}{'median s':>10}{'MiB/s':>9}")
    print(f"{'POST /datasets (one request)':<34}{single:>10.2f}{mib / single:>9.1f}")
    print(f"{'/uploads, chunks + complete':<34}{whole:>10.2f}{mib / whole:>9.1f}")
    print(f"{'/uploads, the chunks alone':<34}{sending:>10.2f}{mib / sending:>9.1f}")
    print(f"resumable / single, end to end: {whole / single:.2f}x the time ({args.rounds} rounds)")
    print(f"rerun: .venv/bin/python -m bench.resumable_upload --images {args.images}")


if __name__ == "__main__":
    main()
