"""`/predict` over real HTTP against the bare pipeline: throughput and latency under load.

The HTTP side is the real api (`clipft api`, uvicorn) in a subprocess on a loopback port, serving
a registered model; clients are threads posting pre-encoded JSON with httpx. The bare side runs
what the api runs, in this process and with as many client threads: decode and preprocess in a
pixel pool of the same size, then the same engine with its shared forward passes. So HTTP/bare
is the cost of the service itself: the request's parsing, base64, threads and the network stack.

Images are photo-like 512x384 pictures, alternately JPEG and PNG. Cells are bounded (see
`--max-images-per-cell`) so that a run on a CPU takes a few minutes; where the bound leaves fewer
requests than clients, the table says how many clients really ran. The weights are random: speed
does not depend on their values.

Rerun: .venv/bin/python -m bench.predict_throughput [--device cpu|cuda] [--model vit-b-32|tiny-clip]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import torch

from app.core import storage
from app.core.config import Settings
from app.core.migrate import upgrade_to_head
from app.inference.cache import CachedModel, load_cached_model
from app.inference.engine import classify
from app.inference.pixels import PixelPool
from app.ml.encode import pick_device
from app.ml.images import ImageLimits
from app.ml.synthetic import photo_like
from app.predict.serving import image_limits
from bench.api_server import running_api, running_server
from bench.clip_models import MODEL_CHOICES, VIT_B32_NAME
from bench.concurrent_load import LoadResult, run_load
from bench.predict_batching import LABELS, write_full_size_model
from tests.model_factory import register_model, write_model_folder

IMAGE_SIZE = (512, 384)
DISTINCT_IMAGES = 64
TOP_K = 5
ROUNDS = 4
# Targets from the serving issue.
MIN_THROUGHPUT_RATIO = 0.7  # HTTP / bare at the highest concurrency
MAX_EXTRA_P50_MS = 15.0  # HTTP p50 over bare p50 with one client


@dataclass(frozen=True)
class Cell:
    images_per_request: int
    clients: int  # asked for
    requests: int

    @property
    def running_clients(self) -> int:
        return min(self.clients, self.requests)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--model", choices=MODEL_CHOICES, default=VIT_B32_NAME)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels")
    parser.add_argument("--images-per-request", default="1,64")
    parser.add_argument(
        "--api-workers",
        type=int,
        default=Settings().api_workers,
        help="processes serving HTTP (CLIPFT_API_WORKERS); the bare side stays one process",
    )
    parser.add_argument(
        "--min-requests",
        type=int,
        default=24,
        help="requests per one-image cell, at least (more give steadier percentiles on a GPU)",
    )
    parser.add_argument(
        "--min-large-requests",
        type=int,
        default=3,
        help="requests per many-image cell, at least (its p50 at one client is noise-bound at 3)",
    )
    parser.add_argument(
        "--max-images-per-cell",
        type=int,
        default=None,
        help="bound on the images one cell sends (default: 256 on a CPU, 8192 on a GPU)",
    )
    parser.add_argument(
        "--body",
        choices=sorted(BODIES),
        default="json",
        help="how the HTTP side sends its images: base64 in JSON, or multipart/form-data",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=Settings().predict_threads,
        help="pixel-pool threads, for the api and the bare pipeline alike",
    )
    return parser.parse_args()


def photo_payloads() -> list[bytes]:
    """Photo-like pictures, encoded alternately as JPEG (quality 90) and PNG."""
    payloads = []
    for index in range(DISTINCT_IMAGES):
        buffer = io.BytesIO()
        image_format = "JPEG" if index % 2 == 0 else "PNG"
        photo_like(*IMAGE_SIZE, seed=index).save(buffer, format=image_format, quality=90)
        payloads.append(buffer.getvalue())
    return payloads


def register_bench_model(settings: Settings, model_name: str) -> str:
    """Migrate the database, add a model's rows and write its folder; the model id."""
    upgrade_to_head(settings.resolved_database_url)
    model_id = register_model(
        settings=settings, labels=tuple(LABELS), name=f"bench {model_name}", write_files=False
    )
    folder = storage.model_dir(settings.data_dir, model_id)
    if model_name == VIT_B32_NAME:
        write_full_size_model(folder)
    else:
        write_model_folder(folder, labels=tuple(LABELS))
    return model_id


def plan_cells(args: argparse.Namespace, max_images: int) -> list[Cell]:
    cells = []
    for images_per_request in (int(value) for value in args.images_per_request.split(",")):
        for clients in (int(value) for value in args.clients.split(",")):
            # Enough requests for percentiles when they are cheap; at least one per client
            # unless the cell's image bound says otherwise.
            wanted = (
                max(2 * clients, args.min_requests)
                if images_per_request == 1
                else max(clients, args.min_large_requests)
            )
            requests = max(1, min(wanted, max_images // images_per_request))
            cells.append(Cell(images_per_request, clients, requests))
    return cells


def request_images(payloads: list[bytes], cell: Cell, index: int) -> list[bytes]:
    start = index * cell.images_per_request
    return [payloads[(start + offset) % len(payloads)] for offset in range(cell.images_per_request)]


def json_body(model_id: str, images: list[bytes]) -> tuple[bytes, str]:
    body = {
        "model_id": model_id,
        "images": [base64.b64encode(payload).decode() for payload in images],
        "top_k": TOP_K,
    }
    return json.dumps(body).encode(), "application/json"


def multipart_body(model_id: str, images: list[bytes]) -> tuple[bytes, str]:
    """The same request as multipart/form-data: the images' own bytes, no base64."""
    boundary = "clipft-bench-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (("model_id", model_id), ("top_k", str(TOP_K)))
    ]
    for index, payload in enumerate(images):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{index}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        parts.append(head.encode() + payload + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


BODIES = {"json": json_body, "multipart": multipart_body}


def http_sender(
    client: httpx.Client,
    model_id: str,
    payloads: list[bytes],
    body: str,
    cell: Cell,
    path: str = "/predict",
) -> Callable[[int], None]:
    # Bodies are encoded before the clock starts: the client's own cost stays out of the numbers.
    encoded = [
        BODIES[body](model_id, request_images(payloads, cell, index))
        for index in range(min(cell.requests, DISTINCT_IMAGES))
    ]

    def send(index: int) -> None:
        content, content_type = encoded[index % len(encoded)]
        response = client.post(path, content=content, headers={"content-type": content_type})
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:200]}")

    return send


def bare_sender(
    cached: CachedModel,
    pixel_pool: PixelPool,
    limits: ImageLimits,
    payloads: list[bytes],
    cell: Cell,
) -> Callable[[int], None]:
    def send(index: int) -> None:
        pixels = pixel_pool.batch(
            request_images(payloads, cell, index), limits=limits, spec=cached.pixel_spec
        )
        classify(cached, pixels, top_k=TOP_K)

    return send


def measure(send: Callable[[int], None], cell: Cell) -> LoadResult:
    return run_load(
        send,
        requests=cell.requests,
        clients=cell.running_clients,
        images_per_request=cell.images_per_request,
    )


def print_table(results: list[tuple[Cell, LoadResult, LoadResult]]) -> None:
    print(
        f"{'images/req':>10} {'clients':>9} {'requests':>8} | "
        f"{'HTTP img/s':>10} {'p50':>7} {'p95':>7} {'p99':>7} | "
        f"{'bare img/s':>10} {'p50':>7} {'p95':>7} {'p99':>7} | "
        f"{'thr HTTP/bare':>13} {'p50 +ms':>8}"
    )
    for cell, http, bare in results:
        clients = (
            str(cell.clients)
            if cell.running_clients == cell.clients
            else f"{cell.running_clients} of {cell.clients}"
        )
        latencies = [
            f"{result.latency_ms(percentile):7.0f}"
            for result in (http, bare)
            for percentile in (50, 95, 99)
        ]
        print(
            f"{cell.images_per_request:>10} {clients:>9} {cell.requests:>8} | "
            f"{http.images_per_second:10.1f} {' '.join(latencies[:3])} | "
            f"{bare.images_per_second:10.1f} {' '.join(latencies[3:])} | "
            f"{http.images_per_second / bare.images_per_second:12.2f}x "
            f"{http.latency_ms(50) - bare.latency_ms(50):+8.1f}"
        )
    print("latencies in ms (nearest-rank percentiles over the cell's requests)")


def print_targets(results: list[tuple[Cell, LoadResult, LoadResult]]) -> None:
    most_clients = max(cell.clients for cell, _, _ in results)
    fewest_clients = min(cell.clients for cell, _, _ in results)
    for cell, http, bare in results:
        label = f"{cell.images_per_request} image(s)/request"
        if cell.clients == most_clients:
            ratio = http.images_per_second / bare.images_per_second
            verdict = "met" if ratio >= MIN_THROUGHPUT_RATIO else "MISSED"
            print(
                f"target HTTP throughput >= {MIN_THROUGHPUT_RATIO}x bare at "
                f"{most_clients} clients, {label}: {ratio:.2f}x {verdict}"
            )
        if cell.clients == fewest_clients:
            extra = http.latency_ms(50) - bare.latency_ms(50)
            verdict = "met" if extra <= MAX_EXTRA_P50_MS else "MISSED"
            print(
                f"target HTTP p50 <= bare + {MAX_EXTRA_P50_MS:.0f} ms at {fewest_clients} "
                f"client(s), {label}: {extra:+.1f} ms {verdict}"
            )


def main() -> None:
    args = parse_args()
    device = pick_device(args.device)
    max_images = args.max_images_per_cell or (256 if device.type == "cpu" else 8192)
    payloads = photo_payloads()
    with tempfile.TemporaryDirectory(prefix="clipft-bench-") as folder:
        data_dir = Path(folder)
        settings = Settings(
            data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'clipft.db'}", redis_url=None
        )
        model_id = register_bench_model(settings, args.model)
        env = {
            "CLIPFT_DATA_DIR": str(data_dir),
            "CLIPFT_DATABASE_URL": settings.resolved_database_url,
            "CLIPFT_DEVICE": str(device),
            "CLIPFT_PREDICT_PRECISION": args.precision,
            # As many pixel threads in all as the bare side has, split over the api's workers.
            "CLIPFT_PREDICT_THREADS": str(max(1, args.threads // args.api_workers)),
            "CLIPFT_RECONCILE_INTERVAL_SECONDS": "3600",
            "CLIPFT_API_WORKERS": str(args.api_workers),
        }
        cached = load_cached_model(
            model_id, storage.model_dir(data_dir, model_id), device, args.precision
        )
        pixel_pool = PixelPool(args.threads)
        limits = image_limits(settings)
        cells = plan_cells(args, max_images)
        with (
            running_api(
                env=env, ready_path=f"/models/{model_id}", log_file=data_dir / "api.log"
            ) as base_url,
            _client(base_url, clients=max(cell.clients for cell in cells)) as client,
        ):
            results = run_cells(
                cells,
                api_workers=args.api_workers,
                http=partial(http_sender, client, model_id, payloads, args.body),
                bare=partial(bare_sender, cached, pixel_pool, limits, payloads),
            )
            floor = http_floor(client, clients=max(cell.clients for cell in cells))
        body_floors = measure_body_floors(cells, payloads, args.body, data_dir)
        pixel_pool.shutdown()
    autocast_dtype = cached.autocast.dtype
    print(
        f"/predict, HTTP vs bare pipeline: {args.model}, {device}, "
        f"{'bf16' if autocast_dtype == torch.bfloat16 else 'fp32'} ({args.precision}), "
        f"{os.cpu_count()} CPUs, {args.threads} pixel threads, "
        f"{args.api_workers} api worker(s) sharing them, {args.body} bodies, "
        f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} photo-like JPEG+PNG, top-{TOP_K} of {len(LABELS)} labels"
    )
    print_table(results)
    print_floor(floor, results)
    print_body_floors(body_floors, results)
    print_targets(results)
    print(
        "rerun: .venv/bin/python -m bench.predict_throughput "
        f"--device {args.device} --model {args.model} --precision {args.precision} "
        f"--api-workers {args.api_workers} --body {args.body} --clients {args.clients} "
        f"--images-per-request {args.images_per_request} --min-requests {args.min_requests} "
        f"--min-large-requests {args.min_large_requests}"
        + (f" --max-images-per-cell {args.max_images_per_cell}" if args.max_images_per_cell else "")
    )


def _client(base_url: str, *, clients: int) -> httpx.Client:
    transport = httpx.HTTPTransport(
        # One kept-alive connection per client: httpx keeps 20 by default, so with 32 clients
        # a dozen connections were closed and opened again per round, and the api paid a TCP
        # accept and a new protocol object per request.
        limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
        # As curl and urllib3 do: without it, Nagle holds a body's last segment until the
        # server's delayed ACK of the headers, ~40-200 ms per request.
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    return httpx.Client(base_url=base_url, timeout=httpx.Timeout(600.0), transport=transport)


def http_floor(client: httpx.Client, *, clients: int) -> LoadResult:
    """The HTTP stack alone at the highest concurrency: a GET that no route answers (uvicorn,
    the middleware and the router, then a 404), with the same clients on the same cores."""

    def send(_index: int) -> None:
        if client.get("/no-such-route").status_code != 404:
            raise RuntimeError("expected a 404 from an unknown route")

    run_load(send, requests=4 * clients, clients=clients, images_per_request=1)  # warm up
    return run_load(send, requests=32 * clients, clients=clients, images_per_request=1)


def print_floor(floor: LoadResult, results: list[tuple[Cell, LoadResult, LoadResult]]) -> None:
    """What the HTTP stack's own cost leaves possible: with nothing on top of it, a one-image
    request would take the bare pipeline's time per image plus the floor's time per request."""
    most_clients = max(cell.clients for cell, _, _ in results)
    print(
        f"HTTP floor: an unknown route's 404 at {most_clients} clients, "
        f"{floor.images_per_second:.0f} requests/s"
    )
    for cell, _http, bare in results:
        if cell.clients == most_clients and cell.images_per_request == 1:
            best = floor.images_per_second / (floor.images_per_second + bare.images_per_second)
            print(
                f"  so at most {best:.2f}x bare for one image per request at {most_clients} "
                "clients, were /predict to cost nothing over that floor"
            )


def measure_body_floors(
    cells: list[Cell], payloads: list[bytes], body: str, data_dir: Path
) -> dict[Cell, LoadResult]:
    """For each many-image cell with one client: the same bodies sent, as many times, to a bare
    ASGI app that only reads them (`bench.body_floor`), on the same stack and cores."""
    floor_cells = [cell for cell in cells if cell.clients == 1 and cell.images_per_request > 1]
    if not floor_cells:
        return {}
    floors = {}
    with (
        running_server(
            ["-m", "bench.body_floor"], env={}, ready_path="/", log_file=data_dir / "floor.log"
        ) as base_url,
        _client(base_url, clients=1) as client,
    ):
        for cell in floor_cells:
            send = http_sender(client, "no-model", payloads, body, cell, path="/")
            send(0)  # warm up
            floors[cell] = measure(send, cell)
    return floors


def print_body_floors(
    floors: dict[Cell, LoadResult], results: list[tuple[Cell, LoadResult, LoadResult]]
) -> None:
    """What taking in the body costs by itself, and the p50 it leaves possible for a /predict
    that starts decoding only once its body is in."""
    for cell, _http, bare in results:
        if cell not in floors:
            continue
        floor_p50 = floors[cell].latency_ms(50)
        print(
            f"HTTP body floor: uvicorn alone taking in a {cell.images_per_request}-image "
            f"body at 1 client, p50 {floor_p50:.1f} ms over {cell.requests} requests"
        )
        print(
            f"  so at best bare + {floor_p50:.1f} ms (p50 {bare.latency_ms(50) + floor_p50:.0f} "
            "ms) for that cell, were /predict to decode only once the body is in"
        )


def run_cells(
    cells: list[Cell],
    *,
    http: Callable[[Cell], Callable[[int], None]],
    bare: Callable[[Cell], Callable[[int], None]],
    api_workers: int,
) -> list[tuple[Cell, LoadResult, LoadResult]]:
    """Warm both sides up, then each cell in rounds that alternate HTTP and bare.

    Alternating (HTTP then bare, then bare then HTTP) spreads a noisy neighbour's load over
    both sides instead of whichever happened to run during it.
    """
    for images_per_request in sorted({cell.images_per_request for cell in cells}):
        # Each api worker loads the model on its first request: enough concurrent requests
        # that every worker has had some before the clock starts.
        warm_up = Cell(images_per_request, clients=4 * api_workers, requests=16 * api_workers)
        measure(http(warm_up), warm_up)
        bare(Cell(images_per_request, clients=1, requests=1))(0)
    results = []
    for cell in cells:
        rounds: dict[str, list[LoadResult]] = {"http": [], "bare": []}
        for round_index, requests in enumerate(split_requests(cell.requests, ROUNDS)):
            part = Cell(cell.images_per_request, cell.clients, requests)
            sides = [("http", http), ("bare", bare)]
            for name, sender in sides if round_index % 2 == 0 else reversed(sides):
                rounds[name].append(measure(sender(part), part))
        results.append((cell, combine(rounds["http"]), combine(rounds["bare"])))
        print(f"  measured {cell}", flush=True)
    return results


def split_requests(requests: int, rounds: int) -> list[int]:
    rounds = min(rounds, requests)
    return [requests // rounds + (index < requests % rounds) for index in range(rounds)]


def combine(results: list[LoadResult]) -> LoadResult:
    return LoadResult(
        images=sum(result.images for result in results),
        seconds=sum(result.seconds for result in results),
        latencies=[latency for result in results for latency in result.latencies],
    )


if __name__ == "__main__":
    main()
